"""A deterministic fuzzer of guest trees: mutate a tree, run the commands in-process, classify.

Issue 14 item 5. A case is (seed, index): the same pair always builds the same
tree. The base trees are the demo guest (waagent_guard/demo/guest), the
doctor's healthy guest (tests/data/doctor) and the bundle's planted tree
(tests/data/bundle/tree), each given a fake /proc, a pidfile, etc/localtime,
etc/hostname and a guard.toml whose probe targets are loopback.

Each case runs `status`, `doctor --no-probe`, `metrics` and `bundle` under
`--root` by calling `cli.main` in this process (with `--debug`, so a bug raises
and its kind is the exception type and the innermost frame). A per-command
SIGALRM watchdog turns a hang into a counted failure. Exit codes 0/1/2/4 and the
sysexits usage/config/input codes are OK; exit 70, an exception or a hang is a
failure.

The cases run in a forked child (memory limited with RLIMIT_AS, so a reader
that swallows /dev/zero fails with MemoryError instead of eating the machine);
if the child stops answering (a hang in C code the alarm cannot interrupt),
the parent ends it by PID, counts a hang and forks a fresh child for the next
case. Nothing here sends a packet: doctor runs with `--no-probe` and the probe
targets are 127.0.0.1 anyway.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
DEMO_GUEST = REPO / "waagent_guard" / "demo" / "guest"
BUNDLE_TREE = REPO / "tests" / "data" / "bundle" / "tree"
DOCTOR_SUPPORT = REPO / "tests" / "data" / "doctor"
TZIF = REPO / "tests" / "data" / "log" / "Europe-Berlin.tzif"

COMMANDS = ("status", "doctor", "metrics", "bundle")
# Documented exits: health 0/1/2/4, sysexits for usage, input, service, write, permission, config.
OK_EXITS = frozenset({0, 1, 2, 4, 64, 65, 66, 69, 73, 74, 75, 77, 78})
AGENT_PID = 100
EXTHANDLER_PID = 101
MEMORY_LIMIT = 3 * 1024**3

GUARD_TOML = """\
[doctor]
probe = "never"
wireserver = "127.0.0.1"
wireserver_port = 9
hostgaplugin_port = 9
imds_url = "http://127.0.0.1:9/metadata"
storage_host = "127.0.0.1"
timeout_seconds = 1.0

[daemon]
state_file = "/var/lib/waagent-guard/state.json"
"""

# Files that may be absent from a base tree but that the guard reads when present.
EXTRA_TARGETS = (
    "etc/localtime", "etc/hostname", "etc/os-release", "etc/waagent.conf",
    "etc/waagent-guard/guard.toml", "var/run/waagent.pid", "var/log/waagent.log",
    "proc/stat", "proc/meminfo", f"proc/{AGENT_PID}/cmdline", f"proc/{AGENT_PID}/stat",
    f"proc/{AGENT_PID}/status", f"proc/{EXTHANDLER_PID}/cmdline",
    "var/lib/waagent-guard/state.json", "var/lib/dhcp/dhclient.eth0.leases",
    "sys/class/dmi/id/chassis_asset_tag", "var/lib/waagent/WireServerEndpoint",
)
CONF_KEYS = ("Lib.Dir", "Extension.LogDir", "Logs.Verbose", "HttpProxy.Host", "HttpProxy.Port",
             "Extensions.Enabled", "AutoUpdate.Enabled", "Logs.File")
ABSURD_VALUES = (
    "/\x00etc", "relative/dir", "/../../../../etc", "/" + "a" * 5000, "/var/lib/\udcff\udcfe",
    "//", "/proc/self/fd/0", "/dev/zero", "-1", "99999999999999999999999", "1e999", "nan",
    "\x1b[31m", "/var/log/azure/../../../../etc", "",
)
ABSURD_NUMBERS = ("-1", "0", "99999999999999999999999999999", "1e308", "1e999", "-1e999",
                  "NaN", "Infinity", "18446744073709551616", "-9223372036854775809", "0x10",
                  "\u0661\u0662", "1_000")
ABSURD_TIMES = (2**40, -(2**40), 253402300800, -62135596801, 1e18, 0, -1, 2**31)
DEVICE_LINKS = ("/dev/zero", "/dev/urandom", "/dev/null", "/dev/full")


def _load_doctor_support() -> Any:
    if str(DOCTOR_SUPPORT) not in sys.path:
        sys.path.insert(0, str(DOCTOR_SUPPORT))
    import doctor_support  # type: ignore[import-not-found]

    return doctor_support


def _write(root: Path, relative: str, data: bytes) -> None:
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _process(root: Path, pid: int, argv: Sequence[str]) -> None:
    _write(root, f"proc/{pid}/cmdline", b"".join(a.encode() + b"\0" for a in argv))
    fields = ["S", "1", str(pid), str(pid)] + ["0"] * 9 + ["10", "5"] + ["0"] * 6 + ["1000"]
    _write(root, f"proc/{pid}/stat", f"{pid} (python3) {' '.join(fields)}\n".encode())
    status = f"Name:\tpython3\nPid:\t{pid}\nUid:\t0\t0\t0\t0\nVmRSS:\t28000 kB\n"
    _write(root, f"proc/{pid}/status", status.encode())


def _common(root: Path) -> None:
    """What every base tree gets: a fake /proc with the agent, a pidfile, tz, host, guard.toml."""
    _write(root, "proc/stat", b"cpu  100 0 100 800 0 0 0 0 0 0\nbtime 1727670000\n")
    _write(root, "proc/meminfo",
           b"MemTotal:       8000000 kB\nMemFree:   1000000 kB\nMemAvailable:   6000000 kB\n")
    waagent = root / "usr/sbin/waagent"
    if not waagent.exists():
        _write(root, "usr/sbin/waagent", b"#!/usr/bin/python3\n")
    _process(root, AGENT_PID, ["python3", "-u", str(waagent), "-daemon"])
    egg = root / "var/lib/waagent/WALinuxAgent-2.11.1.12/bin/WALinuxAgent-2.11.1.12-py3.9.egg"
    _process(root, EXTHANDLER_PID, ["python3", "-u", str(egg), "-run-exthandlers"])
    _write(root, "var/run/waagent.pid", f"{AGENT_PID}\n".encode())
    if not (root / "etc/localtime").exists():
        _write(root, "etc/localtime", TZIF.read_bytes())
    _write(root, "etc/hostname", b"fuzzvm\n")
    if not (root / "etc/os-release").exists():
        _write(root, "etc/os-release", b'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n')
    _write(root, "etc/waagent-guard/guard.toml", GUARD_TOML.encode())
    _write(root, "var/lib/waagent-guard/state.json",
           json.dumps({"version": 1, "lease": None}).encode())


def build_base(kind: str, root: Path) -> None:
    """Lay base tree `kind` (demo | healthy | bundle) at `root`."""
    if kind == "demo":
        shutil.copytree(DEMO_GUEST, root, symlinks=True)
    elif kind == "bundle":
        shutil.copytree(BUNDLE_TREE, root, symlinks=True)
    elif kind == "healthy":
        _load_doctor_support().healthy_guest(root)
    else:
        raise ValueError(kind)
    _common(root)


BASE_KINDS = ("demo", "healthy", "bundle")


# -- mutations ---------------------------------------------------------------------------------


def _files(root: Path) -> list[str]:
    found = set(EXTRA_TARGETS)
    for directory, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def _replace(path: Path) -> None:
    """Remove whatever is at `path` (file, link, node, directory) so something else can go there."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)


def _content(path: Path) -> bytes:
    try:
        if path.is_symlink() or not path.is_file():
            return b""
        return path.read_bytes()[: 1 << 20]
    except OSError:
        return b""


def _set(path: Path, data: bytes) -> None:
    _replace(path)
    path.write_bytes(data)


Mutation = Callable[[Path, random.Random], str]


def m_fifo(path: Path, rng: random.Random) -> str:
    _replace(path)
    os.mkfifo(path)
    return "fifo"


def m_device_link(path: Path, rng: random.Random) -> str:
    target = rng.choice(DEVICE_LINKS)
    _replace(path)
    path.symlink_to(target)
    return f"link->{target}"


def m_char_device(path: Path, rng: random.Random) -> str:
    minor = rng.choice((3, 5, 9))  # null, zero, urandom
    _replace(path)
    try:
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, minor))
    except OSError:  # not root: a link does the same from the reader's side
        path.symlink_to({3: "/dev/null", 5: "/dev/zero", 9: "/dev/urandom"}[minor])
        return f"link->dev(1,{minor})"
    return f"chardev(1,{minor})"


def m_symlink_loop(path: Path, rng: random.Random) -> str:
    _replace(path)
    if rng.random() < 0.5:
        path.symlink_to(path.name)
        return "self-loop"
    other = path.with_name(path.name + ".loop")
    _replace(other)
    other.symlink_to(path.name)
    path.symlink_to(other.name)
    return "loop-pair"


def m_directory(path: Path, rng: random.Random) -> str:
    _replace(path)
    path.mkdir()
    (path / "x").write_bytes(b"1\n")
    if rng.random() < 0.3:
        (path / "loop").symlink_to(".")
    return "directory"


def m_truncate(path: Path, rng: random.Random) -> str:
    data = _content(path)
    cut = rng.randrange(len(data) + 1) if data else 0
    _set(path, data[:cut])
    return f"truncate@{cut}"


def m_empty(path: Path, rng: random.Random) -> str:
    _set(path, b"")
    return "empty"


def m_nul(path: Path, rng: random.Random) -> str:
    data = bytearray(_content(path))
    if not data or rng.random() < 0.3:
        _set(path, b"\0" * rng.choice((1, 44, 4096)))
        return "all-nul"
    for _ in range(rng.randint(1, 8)):
        data.insert(rng.randrange(len(data) + 1), 0)
    _set(path, bytes(data))
    return "nul-bytes"


def m_huge(path: Path, rng: random.Random) -> str:
    _replace(path)
    size = rng.choice((64 << 20, 1 << 30))
    with open(path, "wb") as handle:
        if rng.random() < 0.5:
            handle.write(b"x" * 4096)
        handle.truncate(size)  # sparse: costs no disk
    return f"huge({size >> 20}MiB)"


def m_repeat(path: Path, rng: random.Random) -> str:
    data = _content(path) or b"100"
    times = rng.choice((2, 3, 100, 5000))
    _set(path, (data * times)[: 8 << 20])
    return f"repeat x{times}"


def m_garbage(path: Path, rng: random.Random) -> str:
    _set(path, rng.randbytes(rng.choice((1, 17, 512, 70000))))
    return "garbage"


def m_bitflip(path: Path, rng: random.Random) -> str:
    data = bytearray(_content(path))
    if not data:
        return m_garbage(path, rng)
    for _ in range(rng.randint(1, 16)):
        index = rng.randrange(len(data))
        data[index] ^= 1 << rng.randrange(8)
    _set(path, bytes(data))
    return "bitflip"


def m_bad_utf8(path: Path, rng: random.Random) -> str:
    data = bytearray(_content(path))
    bad = rng.choice((b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\xf4\x90\x80\x80", b"\x80" * 9))
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data) + 1):0] = bad
    _set(path, bytes(data))
    return "bad-utf8"


def m_deep_json(path: Path, rng: random.Random) -> str:
    depth = rng.choice((1000, 100000))
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    _set(path, opener * depth + b"1" + closer * depth)
    return f"deep-json({depth})"


def m_absurd_numbers(path: Path, rng: random.Random) -> str:
    import re

    data = _content(path)
    if not re.search(rb"\d", data):
        data = data + b" 1"
    choice = rng.choice(ABSURD_NUMBERS).encode()
    count = [0]

    def replace(match: Any) -> bytes:
        count[0] += 1
        return choice if rng.random() < 0.5 else match.group(0)

    _set(path, re.sub(rb"\d+", replace, data))
    return f"numbers->{choice.decode()}"


def m_absurd_timestamps(path: Path, rng: random.Random) -> str:
    import re

    data = _content(path)
    stamp = rng.choice((b"9999-99-99T99:99:99.999999Z", b"0000-00-00T00:00:00Z",
                        b"99999-12-31T23:59:59Z", b"2026-02-30T25:61:61Z", b"1-1-1T1:1:1Z"))
    data = re.sub(rb"\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?Z?", stamp, data)
    _set(path, data)
    moment = rng.choice(ABSURD_TIMES)
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(path, (moment, moment))
    return f"timestamps->{stamp.decode()}, mtime {moment}"


def m_absurd_mtime(path: Path, rng: random.Random) -> str:
    moment = rng.choice(ABSURD_TIMES)
    if not path.exists() and not path.is_symlink():
        _set(path, b"1\n")
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(path, (moment, moment), follow_symlinks=False)
    return f"mtime {moment}"


def m_flip_name(path: Path, rng: random.Random, root: Optional[Path] = None) -> str:
    """Rename the file or one of its parent directories (inside the tree) with a mangled name."""
    if not path.exists() and not path.is_symlink():
        return m_garbage(path, rng)
    inside = [p for p in path.parents if root is not None and root in p.parents]
    parts = [path, *inside[:2]]
    victim = rng.choice([p for p in parts if p.name and p.name != "proc"] or [path])
    name = victim.name
    styles = (
        lambda n: n[::-1],
        lambda n: n.replace("-", "", 1) if "-" in n else n + "-",
        lambda n: n + "-99999999999999999999999.0",
        lambda n: n.rsplit("-", 1)[0] + "-1.0.\udcff" if "-" in n else n + "\udcfe",
        lambda n: n + "\n",
        lambda n: n.upper(),
        lambda n: "-" + n,
        lambda n: n.split("-")[0] + "-" if "-" in n else n + "..",
        lambda n: n + "-1." * 200,
    )
    new = rng.choice(styles)(name)[:250]
    if not new or new in (".", ".."):
        new = name + "_"
    target = victim.with_name(new)
    try:
        if target.exists() or target.is_symlink():
            _replace(target)
        os.rename(victim, target)
    except OSError:
        return "flip-name failed"
    return f"flip-name {name!r}->{new!r}"


def m_conf_value(path: Path, rng: random.Random) -> str:
    """A waagent.conf key set to an absurd value (paths with NUL, '..', huge, bad bytes)."""
    value = rng.choice(ABSURD_VALUES)
    key = rng.choice(CONF_KEYS)
    data = _content(path) + f"\n{key}={value}\n".encode("utf-8", "surrogateescape")
    _set(path, data)
    return f"conf {key}={value[:20]!r}"


def m_pid_repeat(path: Path, rng: random.Random) -> str:
    text = rng.choice((b"100100100100100100100100100", b"100\n100\n", b"100" * 2000, b" 100 ",
                       b"-100", b"0", b"-1", b"99999999999999999999", b"100\x00", b"\xff100"))
    _set(path, text)
    return f"pidfile {text[:12]!r}"


CONTENT_MUTATIONS: tuple[Mutation, ...] = (
    m_truncate, m_empty, m_nul, m_repeat, m_garbage, m_bitflip, m_bad_utf8, m_deep_json,
    m_absurd_numbers, m_absurd_timestamps,
)
NODE_MUTATIONS: tuple[Mutation, ...] = (
    m_fifo, m_device_link, m_char_device, m_symlink_loop, m_directory, m_huge, m_absurd_mtime,
    m_flip_name,
)


def mutate(root: Path, rng: random.Random) -> list[str]:
    """Apply 1-3 mutations to files of the tree at `root`; returns what was done."""
    done: list[str] = []
    for _ in range(rng.randint(1, 3)):
        files = _files(root)
        relative = rng.choice(files)
        path = root / relative
        roll = rng.random()
        if relative.endswith("waagent.conf") and roll < 0.4:
            mutation: Mutation = m_conf_value
        elif relative.endswith(".pid") and roll < 0.4:
            mutation = m_pid_repeat
        elif roll < 0.5:
            mutation = rng.choice(NODE_MUTATIONS)
        else:
            mutation = rng.choice(CONTENT_MUTATIONS)
        try:
            what = (m_flip_name(path, rng, root) if mutation is m_flip_name
                    else mutation(path, rng))
        except OSError as error:
            what = f"{mutation.__name__} failed: {error}"
        done.append(f"{relative}: {what}")
    return done


def case_tree(seed: int, index: int, top: Path) -> tuple[Path, list[str]]:
    """Build case (`seed`, `index`) under `top`; the same pair always gives the same tree."""
    rng = random.Random(f"{seed}:{index}")
    kind = BASE_KINDS[index % len(BASE_KINDS)]
    root = top / f"case{index}"
    build_base(kind, root)
    return root, [f"base {kind}", *mutate(root, rng)]


# -- running and classifying -------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the watchdog alarm in the command's frame (not an Exception: never caught)."""


@dataclass
class Outcome:
    command: str
    verdict: str  # ok | crash | hang
    code: Optional[int]
    kind: str = ""


def _innermost(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "waagent_guard" in f.filename] or frames
    if not ours:
        return type(error).__name__
    frame = ours[-1]
    where = frame.filename.split("waagent_guard/")[-1]
    return f"{type(error).__name__} at {where}:{frame.lineno} {frame.name}"


def _argv(command: str, root: Path, out: Path) -> list[str]:
    argv = [command, "--root", str(root), "--debug"]
    if command == "doctor":
        argv += ["--no-probe", "--json"]
    elif command == "status":
        argv += ["--json"]
    elif command == "bundle":
        # 2 MiB per file: redaction runs at about 1 MB/s on secret-dense lines, and a
        # 30 MiB log of secrets is slow, not hung; the cap keeps the watchdog about hangs.
        argv += ["-o", str(out / "bundle.tar.gz"), "--max-file-size", "2M"]
    return argv


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no answer in {seconds}s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_command(command: str, root: Path, out: Path, timeout: float) -> Outcome:
    """One command in-process under a SIGALRM watchdog; never raises."""
    from waagent_guard.cli import main

    sink = io.StringIO()
    try:
        with _alarm(timeout), contextlib.redirect_stderr(sink):
            code = main(_argv(command, root, out), stdout=sink, stderr=sink)
    except Hang as error:
        return Outcome(command, "hang", None, f"hang in {_innermost(error)}")
    except RecursionError as error:
        return Outcome(command, "crash", None, _innermost(error))
    except BaseException as error:
        return Outcome(command, "crash", None, _innermost(error))
    finally:
        logging_reset()
    if code in OK_EXITS:
        return Outcome(command, "ok", code)
    text = sink.getvalue()
    last = [line for line in text.splitlines() if line.startswith("waagent-guard:")]
    return Outcome(command, "crash", code, f"exit {code}: {(last or [text[-200:]])[-1][:200]}")


def logging_reset() -> None:
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def run_case(seed: int, index: int, top: Path, commands: Sequence[str],
             timeout: float) -> dict[str, Any]:
    case_top = top / f"c{index}"
    case_top.mkdir()
    try:
        out = case_top / "out"
        out.mkdir()
        root, mutations = case_tree(seed, index, case_top)
        outcomes = [run_command(command, root, out, timeout) for command in commands]
    finally:
        with contextlib.suppress(OSError):
            _rmtree(case_top)
    return {"index": index, "mutations": mutations,
            "outcomes": [o.__dict__ for o in outcomes]}


def _rmtree(path: Path) -> None:
    def onerror(function: Any, name: str, info: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o755)
            os.unlink(name)

    shutil.rmtree(path, onerror=onerror)


# -- the campaign: a forked worker, restarted when it stops answering ----------------------


@dataclass
class Stats:
    cases: int = 0
    runs: int = 0
    crashes: int = 0
    hangs: int = 0
    wall_seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.crashes + self.hangs

    def add(self, record: dict[str, Any]) -> None:
        self.cases += 1
        for outcome in record["outcomes"]:
            self.runs += 1
            if outcome["verdict"] == "ok":
                continue
            if outcome["verdict"] == "hang":
                self.hangs += 1
            else:
                self.crashes += 1
            kind = f"{outcome['command']}: {outcome['kind']}"
            self.kinds[kind] += 1
            self.examples.setdefault(kind, f"case {record['index']}: {record['mutations']}")

    def summary(self) -> str:
        return (f"{self.cases} cases x {len(COMMANDS)} commands = {self.runs} runs: "
                f"{self.crashes} crashes, {self.hangs} hangs, {len(self.kinds)} kinds, "
                f"{self.wall_seconds:.0f} s")


def in_process_runner(argv: Sequence[str], timeout: float, stdout: Any, stderr: Any) -> Any:
    """The bundle's command runner for fuzz runs: `waagent-guard status|doctor` in-process.

    The bundle runs `python -m waagent_guard status/doctor --root ...` as
    commands; here they run in this process (under the same watchdog), so a
    hang or crash in them is seen, and no process is left behind.
    """
    from waagent_guard.cli import main
    from waagent_guard.execute import CommandOutcome

    if list(argv[1:3]) != ["-m", "waagent_guard"]:
        return CommandOutcome(None, "fuzz: only the guard's own commands run")
    out = io.StringIO()
    err = io.StringIO()
    code = main([*argv[3:], "--debug"], stdout=out, stderr=err)
    stdout.write(out.getvalue().encode("utf-8", "surrogateescape"))
    stderr.write(err.getvalue().encode("utf-8", "surrogateescape"))
    return CommandOutcome(code)


def prepare_worker() -> None:
    """In the fuzz worker: bundle commands in-process, no CPU sampling pause, memory capped."""
    from waagent_guard.commands import bundle
    from waagent_guard.doctor import facts

    assert bundle.create_bundle.__kwdefaults__ is not None
    bundle.create_bundle.__kwdefaults__["runner"] = in_process_runner
    facts.CPU_SAMPLE_SECONDS = 0.0  # a tree's /proc/stat does not move; the pause finds nothing
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _worker(seed: int, indexes: Sequence[int], top: Path, commands: Sequence[str],
            timeout: float, write_fd: int) -> None:
    prepare_worker()
    with os.fdopen(write_fd, "w") as channel:
        for index in indexes:
            channel.write(json.dumps({"start": index}) + "\n")
            channel.flush()
            record = run_case(seed, index, top, commands, timeout)
            channel.write(json.dumps(record) + "\n")
            channel.flush()


def campaign(seed: int, cases: int, *, commands: Sequence[str] = COMMANDS,
             timeout: float = 8.0, first: int = 0,
             on_record: Optional[Callable[[dict[str, Any]], None]] = None) -> Stats:
    """Run cases first..first+cases-1 of `seed`; every failure is counted, none is waited on."""
    stats = Stats()
    started = time.monotonic()
    pending = list(range(first, first + cases))
    stuck_after = timeout * len(commands) + 30
    with tempfile.TemporaryDirectory(prefix="wg-fuzz-") as top_name:
        top = Path(top_name)
        while pending:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(read_fd)
                code = 0
                try:
                    _worker(seed, pending, top, commands, timeout, write_fd)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            os.close(write_fd)
            current: Optional[int] = None
            buffer = b""
            last_seen = time.monotonic()
            with os.fdopen(read_fd, "rb", buffering=0) as channel:
                while True:
                    ready, _, _ = select.select([channel], [], [], 5.0)
                    if not ready:
                        if time.monotonic() - last_seen > stuck_after:
                            os.kill(pid, signal.SIGKILL)
                            break
                        continue
                    chunk = channel.read(65536)
                    if not chunk:
                        break
                    last_seen = time.monotonic()
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        message = json.loads(line)
                        if "start" in message:
                            current = message["start"]
                            continue
                        stats.add(message)
                        if on_record is not None:
                            on_record(message)
                        pending.remove(message["index"])
                        current = None
            _, status = os.waitpid(pid, 0)
            if current is not None and current in pending:
                # The worker died or stopped answering inside this case.
                reason = ("killed: no answer" if os.WIFSIGNALED(status)
                          and os.WTERMSIG(status) == signal.SIGKILL else f"worker died ({status})")
                stats.add({"index": current, "mutations": ["(worker lost)"],
                           "outcomes": [{"command": "case", "verdict": "hang", "code": None,
                                         "kind": reason}]})
                pending.remove(current)
            elif pending and current is None and os.WIFEXITED(status) and buffer == b"":
                if os.WEXITSTATUS(status) != 0:
                    raise RuntimeError(f"fuzz worker failed outside a case (status {status})")
    stats.wall_seconds = time.monotonic() - started
    return stats


if __name__ == "__main__":  # python -m tests.fuzzing SEED CASES [FIRST]
    arguments = sys.argv[1:]
    result = campaign(int(arguments[0]), int(arguments[1]),
                      first=int(arguments[2]) if len(arguments) > 2 else 0,
                      timeout=float(os.environ.get("WG_FUZZ_TIMEOUT", "8")))
    print(result.summary())
    for kind, count in result.kinds.most_common():
        print(f"{count:5d}  {kind}\n       e.g. {result.examples[kind]}")
