"""Process roles and pidfile liveness, with the agent's own code as the oracle (issue 10
item 2, issue 12 item 9's pidfile part).

The oracle is Debian's `waagent` package (2.7.3.0): `apt-get download waagent`,
`dpkg -x` into a cache (never installed, never run), its modules imported in a
SUBPROCESS (`python3 -I`) with a stub `distro` module and every non-loopback
connect refused. Asked there:

- `agent.parse_args(argv)`: which command a command line runs (the daemon is
  `daemon`, the ExtHandler `run-exthandlers`; anything else is not the agent);
- `agent.start()`: the command line it spawns the daemon with (then exec'd by the
  kernel through the packaged script's shebang);
- `UpdateHandler.run_latest()`: the ExtHandler's command line, for every
  interpreter the daemon may run under (`sys.executable`) and for agent eggs
  named as makepkg names them (pre-releases included);
- `DefaultOSUtil.check_pid_alive(read_file(pidfile))`: whether a pidfile's content
  keeps a new daemon from starting.

The guard's `classify_cmdline` and `check_pidfile` must agree, case by case. The
one deliberate difference is named: a zombie is *dead* to the guard (no agent
runs) while the agent's check takes it as alive; the guard reports that as
`agent_treats_as_alive` / `blocks_start` and removes the pidfile before a start.

Upstream (github.com/Azure/WALinuxAgent @ a976115, 2.15.0.1) builds the same
forms: agent.py start() `[sys.argv[0], '-daemon']`, ga/update.py run_latest
`"python -u {0} -run-exthandlers"` with `cmds[0] = sys.executable`, makepkg.py's
manifest `"python -u {1} -run-exthandlers"`, and the identical check_pid_alive.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from waagent_guard.agent.process import check_pidfile, classify_cmdline

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("WG_ORACLE_CACHE") or REPO / ".cache" / "oracle")
SITE = Path("usr/lib/python3/dist-packages")
UNITS = REPO / "tests" / "data" / "units"

# Interpreters the daemon may run under: run_latest puts its sys.executable first.
INTERPRETERS = (
    "/usr/bin/python3", "/usr/bin/python", "/usr/libexec/platform-python",
    "/usr/bin/python2.7", "/usr/bin/python3.6", "/usr/bin/python3.12", "/usr/local/bin/python3",
)
# Egg versions as makepkg names them (AGENT_LONG_VERSION), pre-releases included.
EGG_VERSIONS = ("2.2.45", "2.15.0.1", "2.1.5.rc3", "9.9.9.9")
# Arguments after the script; the agent's parse_args decides the command.
FLAG_CASES = (
    ["-daemon"], ["--daemon"], ["/daemon"], ["daemon"], ["-daemon", "-debug"],
    ["-verbose", "-daemon"], ["-daemon", "-configuration-path:/etc/hostname"],
    ["-configuration-path:/etc/hostname", "-daemon"], ["-run-exthandlers"],
    ["--run-exthandlers"], ["-run-exthandlers", "-debug"],
    ["-run-exthandlers", "-configuration-path:/etc/hostname"], ["-collect-logs"],
    ["-collect-logs", "-full"], ["-daemon", "-collect-logs"], ["-collect-logs", "-daemon"],
    ["-daemon", "-bogus"], ["-bogus", "-daemon"], ["-version"], ["-help"], ["-start"],
    ["-deprovision+user"], ["-show-configuration"], ["-daemonize"], ["-run-exthandlersX"],
    ["-register-service"], ["-setup-firewall"], [], ["", "-daemon"], ["-daemon", ""],
)

DRIVER = r'''
import json, os, socket, sys, types
stub = types.ModuleType("distro")
stub.linux_distribution = lambda full_distribution_name=True: ("debian", "12", "bookworm")
stub.id = lambda: "debian"
stub.version = lambda *a, **k: "12"
stub.codename = lambda: "bookworm"
sys.modules["distro"] = stub
real_connect = socket.socket.connect
def loopback_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        raise OSError("oracle: no network")
    return real_connect(self, address)
socket.socket.connect = loopback_only
sys.path.insert(0, sys.argv[1])
import subprocess
request = json.load(sys.stdin)
answers = {}

from azurelinuxagent import agent
answers["commands"] = [agent.parse_args(flags)[0] for flags in request["flags"]]

captured = []
class Captured(Exception):
    pass
def fake_popen(args, *a, **k):
    captured.append(list(args))
    raise Captured()
subprocess.Popen = fake_popen
sys.argv = ["/usr/sbin/waagent"]
for conf in (None, "/etc/waagent.conf"):
    try:
        agent.start(conf)
    except Captured:
        pass
answers["start"] = captured[:]

from azurelinuxagent.ga import update
update.subprocess.Popen = fake_popen
class FakeAgent:
    def __init__(self, version):
        self.name = "WALinuxAgent-" + version
        self.version = version
        self.command = "python -u bin/WALinuxAgent-%s-py2.7.egg -run-exthandlers" % version
    def get_agent_cmd(self):
        return self.command
    def get_agent_dir(self):
        return "/var/lib/waagent/" + self.name
    def mark_failure(self, is_fatal=False):
        pass
runs = []
for executable in request["interpreters"]:
    for version in [None] + request["eggs"]:
        for child_args in (None, "-configuration-path:/etc/waagent.conf"):
            captured.clear()
            handler = update.get_update_handler()
            handler.get_latest_agent = (lambda v=version: None if v is None else FakeAgent(v))
            handler._evaluate_agent_health = lambda agent: None
            handler.signal_handler = object()
            sys.executable = executable
            try:
                handler.run_latest(child_args=child_args)
            except Exception:
                pass
            runs.append({"version": version, "argv": captured[0] if captured else None})
answers["run_latest"] = runs

from azurelinuxagent.common.osutil.default import DefaultOSUtil
from azurelinuxagent.common.utils import fileutil
alive = []
for path in request["pidfiles"]:
    try:
        pid = fileutil.read_file(path) if os.path.isfile(path) else None
        alive.append(bool(DefaultOSUtil().check_pid_alive(pid)))
    except Exception as error:
        alive.append("raises " + type(error).__name__)
answers["pidfiles"] = alive
json.dump(answers, sys.stdout)
'''


def _unavailable(reason: str) -> None:
    if os.environ.get("WG_REQUIRE_ALL") == "1":
        pytest.fail(f"agent oracle required (WG_REQUIRE_ALL=1) but unavailable: {reason}")
    pytest.skip(f"agent oracle unavailable: {reason}")


@pytest.fixture(scope="session")
def debian_agent() -> Path:
    """The unpacked Debian waagent package (cached; shared with other oracle tests)."""
    if shutil.which("dpkg") is None or shutil.which("apt-get") is None:
        _unavailable("needs apt-get and dpkg (the oracle is Debian's waagent package)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        debs = sorted(CACHE.glob("waagent_*.deb"))
        if not debs:
            fetched = subprocess.run(
                ["apt-get", "download", "-q", "waagent"], cwd=CACHE, capture_output=True,
                text=True, timeout=600, check=False,
            )
            debs = sorted(CACHE.glob("waagent_*.deb"))
            if not debs:
                _unavailable(f"apt-get download waagent failed: {fetched.stderr.strip()[-300:]}")
        deb = debs[-1]
        root = CACHE / deb.name.removesuffix(".deb")
        if not (root / SITE / "azurelinuxagent").is_dir():
            partial = CACHE / (root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True, timeout=300)
            shutil.rmtree(root, ignore_errors=True)
            partial.rename(root)
    return root


def ask_agent(root: Path, request: dict[str, Any]) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", DRIVER, str(root / SITE)], input=json.dumps(request),
        capture_output=True, text=True, timeout=300, env=env, cwd="/", check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def expected_role(command: str) -> Optional[str]:
    return {"daemon": "daemon", "run-exthandlers": "exthandler"}.get(command)


def shebang(root: Path) -> list[str]:
    """The packaged /usr/sbin/waagent's `#!` line: what the kernel execs it with."""
    first = (root / "usr/sbin/waagent").read_text().splitlines()[0]
    assert first.startswith("#!")
    return first[2:].split()


def exec_through_shebang(root: Path, argv: list[str]) -> tuple[str, ...]:
    if argv and argv[0] == "/usr/sbin/waagent":
        return (*shebang(root), *argv)
    return tuple(argv)


@pytest.fixture(scope="module")
def oracle(debian_agent: Path) -> dict[str, Any]:
    return ask_agent(debian_agent, {
        "flags": [list(flags) for flags in FLAG_CASES],
        "interpreters": list(INTERPRETERS),
        "eggs": list(EGG_VERSIONS),
        "pidfiles": [],
    })


def test_roles_follow_the_agents_own_parse_args(oracle: dict[str, Any]) -> None:
    mismatches = []
    for flags, command in zip(FLAG_CASES, oracle["commands"]):
        for interpreter in INTERPRETERS:
            argv = (interpreter, "-u", "/usr/sbin/waagent", *flags)
            found = classify_cmdline(argv)
            role = found[0] if found else None
            if role != expected_role(command):
                mismatches.append((argv, command, role))
    assert not mismatches
    print(f"parse_args cases: {len(FLAG_CASES) * len(INTERPRETERS)}")


def test_the_daemon_as_agent_start_spawns_it(debian_agent: Path, oracle: dict[str, Any]) -> None:
    assert oracle["start"] and all(args[0] == "/usr/sbin/waagent" for args in oracle["start"])
    for args in oracle["start"]:
        argv = exec_through_shebang(debian_agent, args)
        assert classify_cmdline(argv) == ("daemon", None), argv


def test_the_exthandler_as_run_latest_spawns_it(oracle: dict[str, Any]) -> None:
    runs = oracle["run_latest"]
    assert len(runs) == len(INTERPRETERS) * (1 + len(EGG_VERSIONS)) * 2
    for run in runs:
        argv = tuple(run["argv"])
        assert argv[0] in INTERPRETERS  # run_latest put sys.executable first
        assert classify_cmdline(argv) == ("exthandler", run["version"]), argv
    print(f"run_latest cases: {len(runs)}")


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_the_daemon_as_each_known_unit_starts_it(debian_agent: Path, unit: Path) -> None:
    exec_start = next(
        line.split("=", 1)[1] for line in unit.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    argv = exec_through_shebang(debian_agent, shlex.split(exec_start))
    assert classify_cmdline(argv) == ("daemon", None), argv


def test_look_alikes_are_not_the_agent(oracle: dict[str, Any]) -> None:
    for argv in (
        ("vim", "/usr/sbin/waagent"), ("tail", "-f", "/var/log/waagent.log"),
        ("grep", "-r", "waagent", "-daemon"),
        ("/usr/libexec/platform-python", "-u", "/usr/sbin/waagent", "-collect-logs"),
        ("/usr/lib/waagent-guard/venv/bin/python3", "/usr/bin/waagent-guard", "run"),
        ("python3", "-m", "waagent_guard", "run"),
    ):
        assert classify_cmdline(argv) is None, argv


# -- pidfile contents (issue 12 item 9) ---------------------------------------------------

def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_pidfile_contents_are_judged_as_the_agent_judges_them(
    debian_agent: Path, tmp_path: Path
) -> None:
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        dead = _dead_pid()
        me = os.getpid()
        group = os.getpgrp()
        contents = {
            "empty": b"", "text": b"abc", "zero": b"0", "minus-one": b"-1",
            "plus": f"+{me}".encode(), "spaced": f"  {me}\n".encode(),
            "underscored": f"{str(me)[:1]}_{str(me)[1:]}".encode() if me > 9 else str(me).encode(),
            "live-other": str(me).encode(), "dead": str(dead).encode(),
            "zombie": str(zombie).encode(), "group": f"-{group}".encode(),
            "huge": b"9" * 30, "not-utf8": b"\xff\xfe1", "float": b"1.0", "hex": b"0x10",
            "two": f"{me} {me}".encode(),
        }
        paths = {}
        for name, data in contents.items():
            path = tmp_path / f"{name}.pid"
            path.write_bytes(data)
            paths[name] = path
        directory = tmp_path / "dir.pid"
        directory.mkdir()
        paths["directory"] = directory
        answer = ask_agent(debian_agent, {
            "flags": [], "interpreters": [], "eggs": [],
            "pidfiles": [str(path) for path in paths.values()],
        })["pidfiles"]
        # (read /proc before the zombie is reaped below)
        states = {name: check_pidfile(path, Path("/proc")) for name, path in paths.items()}
    finally:
        os.waitpid(zombie, 0)
    differences = []
    for (name, state), agent in zip(states.items(), answer):
        agent_alive = agent is True or str(agent).startswith("raises")  # a crash blocks too
        if state.agent_sees_alive != agent_alive:
            differences.append((name, agent, state))
    assert not differences
    # The deliberate difference, named: a zombie is dead, though the agent sees it alive.
    assert states["zombie"].state == "dead" and states["zombie"].blocks_start
    assert states["live-other"].state == "other" and states["dead"].state == "dead"
    assert answer[list(paths).index("huge")] == "raises OverflowError"
    print(f"pidfile cases: {len(paths)}")
