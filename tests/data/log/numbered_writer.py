"""Append numbered agent-style lines to a log, the way the agent does: open, append, close.

usage: numbered_writer.py PATH COUNT [--split] [PAUSE_AT ...]

Before writing each PAUSE_AT line it prints "paused N" and waits for a line on stdin,
so a test can rotate the file at a known point. --split writes every line in two
flushed halves (same descriptor), so readers see partial lines. Prints "done" at the end.
"""

import sys


def main(argv):
    path, count = argv[1], int(argv[2])
    split = "--split" in argv[3:]
    pauses = {int(arg) for arg in argv[3:] if arg != "--split"}
    for number in range(1, count + 1):
        if number in pauses:
            print(f"paused {number}", flush=True)
            sys.stdin.readline()
        line = f"2024-01-01T00:00:00.000000Z INFO ExtHandler ExtHandler line {number}\n"
        with open(path, "a", encoding="utf-8") as handle:
            if split:
                half = len(line) // 2
                handle.write(line[:half])
                handle.flush()
                handle.write(line[half:])
            else:
                handle.write(line)
            handle.flush()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
