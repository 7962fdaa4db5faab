"""The one place the package runs external commands (systemctl, service, rc-service, ...).

The only module of waagent_guard that imports `subprocess` (tests/unit/test_layout.py
checks it), so environment, sessions and timeouts of every child are read here.

`CommandRunner` is the injectable interface: an argv list and a timeout in,
`(returncode, stdout, stderr)` out. `SubprocessRunner` is the production
implementation: no shell, `LC_ALL=C` so output parses the same everywhere, stdin
closed, its own process group so a timeout kills every process the command
started (not just the first), and a `ServiceError` naming the command when it
times out or cannot be executed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, NamedTuple, Optional, Protocol, Union

from waagent_guard.errors import ServiceError

log = logging.getLogger(__name__)

# A started child and its wait timeout, for the demo's simulated agent (spawn()).
Child = subprocess.Popen
TimeoutExpired = subprocess.TimeoutExpired
DEVNULL = subprocess.DEVNULL


class CommandResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float) -> CommandResult: ...


def describe_command(argv: Sequence[str]) -> str:
    """argv as a person would type it, for messages."""
    return shlex.join(list(argv))


# sd_notify(3) / sd_watchdog_enabled(3) variables systemd gave the guard: a child that
# inherited them could send READY=1 or WATCHDOG=1 in the guard's name (systemctl does
# not, but a configured command or an init script might).
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def command_environment(
    base_env: Optional[Mapping[str, str]] = None, extra_env: Optional[Mapping[str, str]] = None
) -> dict[str, str]:
    """The environment of every command the guard runs."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(extra_env or {})
    for name in NOTIFY_VARIABLES:
        env.pop(name, None)
    # Parsers expect English, untranslated output (systemctl, service, ip).
    env["LC_ALL"] = "C"
    # No pager and no colour even if a caller's environment asks for them.
    env["SYSTEMD_PAGER"] = ""
    env["SYSTEMD_COLORS"] = "0"
    return env


class SubprocessRunner:
    """Run argv lists with a timeout and `LC_ALL=C`; the only caller of `subprocess`."""

    def __init__(
        self,
        *,
        extra_env: Optional[Mapping[str, str]] = None,
        base_env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._extra_env = dict(extra_env or {})
        self._base_env = base_env

    def _environment(self) -> dict[str, str]:
        return command_environment(self._base_env, self._extra_env)

    def __call__(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        command = describe_command(argv)
        log.debug("running %s (timeout %g s)", command, timeout)
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._environment(),
                start_new_session=True,
            )
        except FileNotFoundError as error:
            raise ServiceError(
                f"`{command}`: {argv[0]} not found; install it or set agent.manager "
                "in guard.toml to the service manager this system uses"
            ) from error
        except OSError as error:
            raise ServiceError(f"`{command}`: cannot run: {error.strerror or error}") from error
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise ServiceError(
                f"`{command}` did not finish within {timeout:g} s and was killed; check the "
                "service manager (a hung systemd or D-Bus?) or raise "
                "agent.command_timeout_seconds in guard.toml"
            ) from None
        return CommandResult(
            process.returncode,
            stdout.decode("utf-8", errors="replace"),
            stderr.decode("utf-8", errors="replace"),
        )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process group this runner created for `process` and reap it."""
    # The group may already be gone if the command exited right at the deadline.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


@dataclass(frozen=True)
class CommandOutcome:
    returncode: Optional[int]
    error: Optional[str] = None  # not found, timed out, ...: nothing was collected


def run_command(
    argv: Sequence[str], timeout: float, stdout: BinaryIO, stderr: BinaryIO
) -> CommandOutcome:
    """Run argv with its output going straight into files (memory stays bounded).

    For the support bundle (journal, ps, ip route): same environment and process
    group handling as `SubprocessRunner`, but the output may be large.
    """
    command = describe_command(argv)
    log.debug("running %s into files (timeout %g s)", command, timeout)
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=command_environment(),
            start_new_session=True,
        )
    except FileNotFoundError:
        return CommandOutcome(None, f"{argv[0]}: command not found")
    except OSError as error:
        return CommandOutcome(None, f"{argv[0]}: {error.strerror or error}")
    try:
        return CommandOutcome(process.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return CommandOutcome(None, f"timed out after {timeout:g} s")


def spawn(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    stdout: Union[int, IO[Any], None] = None,
    stderr: Union[int, IO[Any], None] = None,
    new_session: bool = False,
) -> Child[bytes]:
    """Start argv (no shell, stdin closed) and return it without waiting.

    Only for the demo: the simulated agent starting its ExtHandler child and the
    demo's `start` verb detaching it like a service manager would
    (`new_session=True`). The environment is the caller's, unchanged: a simulated
    agent is not a command the guard parses.
    """
    log.debug("starting %s", describe_command(argv))
    child: Child[bytes] = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=new_session,
    )
    return child
