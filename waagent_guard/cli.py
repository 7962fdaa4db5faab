"""The command line and the one error boundary: `main(argv) -> int`.

Every subcommand is declared here (so `--help` is complete and cheap), and its
implementation module is imported only when it runs: `status` must start fast.
Implementations take `(args, context)` and return an exit code; they raise
`GuardError` for anything a person must fix, which `main` prints without a
traceback (unless `--debug`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TextIO

from waagent_guard import __version__
from waagent_guard.context import Context
from waagent_guard.errors import EX_SOFTWARE, EX_USAGE, GuardError, UsageError
from waagent_guard.sysroot import GUARD_CONFIG, Sysroot

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# name -> "module:function"; the module is imported only when the command runs.
Handler = Callable[[argparse.Namespace, Context], int]
# The commands that are groups of actions (config, verbose, agent), filled by build_parser.
_GROUPS: dict[str, argparse.ArgumentParser] = {}


def _duration(text: str) -> float:
    from waagent_guard.timeutil import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _size(text: str) -> int:
    from waagent_guard.timeutil import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535; 0: any free port)")
    return port


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 64 (EX_USAGE): 2 means "failures" for doctor/status."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    def common_options(defaults: bool) -> _Parser:
        # The same options are accepted before and after the subcommand; the
        # subcommand's copies must not overwrite values given before it.
        options = _Parser(add_help=False)
        value_default: Any = None if defaults else argparse.SUPPRESS
        flag_default: Any = False if defaults else argparse.SUPPRESS
        options.add_argument(
            "--root",
            metavar="DIR",
            default=value_default,
            help="resolve every host path under DIR (a mounted disk or copied tree; default /)",
        )
        options.add_argument(
            "--config",
            metavar="FILE",
            default=value_default,
            help=f"the guard's config (default {GUARD_CONFIG} under --root)",
        )
        options.add_argument(
            "--debug",
            action="store_true",
            default=flag_default,
            help="log debug output and tracebacks",
        )
        return options

    top_options = common_options(True)
    common = common_options(False)

    parser = _Parser(
        prog="waagent-guard",
        description="Health daemon for the Azure Linux guest agent (WALinuxAgent).",
        parents=[top_options],
    )
    parser.add_argument("--version", action="version", version=f"waagent-guard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, target: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=target)
        if not target:
            _GROUPS[name] = sub  # a group of actions: bare `waagent-guard NAME` prints its help
        return sub

    status = add(
        "status",
        "waagent_guard.commands.status:run",
        "show the agent's health (exit 0 healthy, 1 degraded, 2 down, 4 unknown)",
    )
    status.add_argument("--json", action="store_true", help="print the stable JSON document")

    config = add("config", "", "check or show the guard's configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION")
    check = config_commands.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("file", nargs="?", default=None, help="file to check (default: --config)")
    check.set_defaults(handler="waagent_guard.commands.config:check")
    show = config_commands.add_parser("show", parents=[common], help="print the effective config")
    show.set_defaults(handler="waagent_guard.commands.config:show")

    run = add("run", "waagent_guard.daemon.guard:run", "run the guard daemon (the systemd service)")
    run.add_argument("--once", action="store_true", help="observe and reconcile once, then exit")

    demo = add(
        "demo", "waagent_guard.commands.demo:run", "run the guard against a built-in demo guest"
    )
    demo.add_argument("--dir", metavar="DIR", default=None, help="where to lay the demo guest")
    demo.add_argument(
        "--port", type=_port, default=None, help="metrics port (default: a free one)"
    )
    demo.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="stop after DURATION (default: until Ctrl-C)",
    )

    verbose = add("verbose", "", "lease verbose agent logging (Logs.Verbose) that reverts itself")
    verbose_commands = verbose.add_subparsers(dest="verbose_command", metavar="ACTION")
    on = verbose_commands.add_parser("on", parents=[common], help="turn Logs.Verbose on")
    on.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="lease length, e.g. 30m, 2h (default verbose.default_duration_seconds)",
    )
    on.add_argument("--reason", default="", help="why (stored with the lease)")
    on.add_argument("--no-restart", action="store_true", help="edit the file, restart nothing")
    on.set_defaults(handler="waagent_guard.commands.verbose:on")
    off = verbose_commands.add_parser("off", parents=[common], help="restore the previous value")
    off.add_argument("--no-restart", action="store_true", help="edit the file, restart nothing")
    off.set_defaults(handler="waagent_guard.commands.verbose:off")
    vstatus = verbose_commands.add_parser("status", parents=[common], help="show the lease")
    vstatus.add_argument("--json", action="store_true")
    vstatus.set_defaults(handler="waagent_guard.commands.verbose:status")

    agent = add("agent", "", "act on the agent's service unit")
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="ACTION")
    ensure = agent_commands.add_parser(
        "ensure-autorestart",
        parents=[common],
        help="install a drop-in so systemd restarts the agent itself",
    )
    ensure.add_argument("--dry-run", action="store_true", help="print the drop-in, change nothing")
    ensure.set_defaults(handler="waagent_guard.commands.agent:ensure_autorestart")

    metrics = add(
        "metrics", "waagent_guard.commands.metrics:run", "print or write the metrics once"
    )
    metrics.add_argument(
        "--textfile",
        metavar="DIR",
        default=None,
        help="write waagent_guard.prom atomically into DIR (node_exporter)",
    )
    metrics.add_argument(
        "--probe",
        action="store_true",
        help="let the doctor's checks probe the WireServer/IMDS (default: no network probes)",
    )

    doctor = add(
        "doctor",
        "waagent_guard.commands.doctor:run",
        "run the backup troubleshooting guide as checks (exit 0/1/2)",
    )
    doctor.add_argument("--json", action="store_true", help="print the stable JSON document")
    doctor.add_argument(
        "--probe", action="store_true", help="run network probes even off Azure or under --root"
    )
    doctor.add_argument("--no-probe", action="store_true", help="never run network probes")
    doctor.add_argument(
        "--bundle",
        metavar="FILE",
        default=None,
        help="diagnose an archive made by `waagent-guard bundle`",
    )

    bundle = add(
        "bundle",
        "waagent_guard.commands.bundle:run",
        "collect the support log set, secrets redacted",
    )
    bundle.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="archive path, or - for stdout (default under bundle.output_dir)",
    )
    bundle.add_argument(
        "--since",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="only log records newer than DURATION ago (journal, logs)",
    )
    bundle.add_argument("--full", action="store_true", help="add syslog, cloud-init and network")
    bundle.add_argument("--xz", action="store_true", help="tar.xz instead of tar.gz")
    bundle.add_argument(
        "--max-file-size",
        type=_size,
        default=None,
        metavar="SIZE",
        help="per-file cap, e.g. 30M (default bundle.max_file_bytes)",
    )
    bundle.add_argument(
        "--max-total-size",
        type=_size,
        default=None,
        metavar="SIZE",
        help="total cap, e.g. 150M (default bundle.max_total_bytes)",
    )
    return parser


def _resolve(target: str) -> Handler:
    module_name, _, function_name = target.partition(":")
    module = importlib.import_module(module_name)
    handler: Handler = getattr(module, function_name)
    return handler


def _configure_logging(debug: bool) -> None:
    from waagent_guard.logsetup import configure_cli_logging

    configure_cli_logging(debug=debug)


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    target = getattr(args, "handler", None)
    if not target:
        # `waagent-guard verbose`: the group's actions, not the top-level help.
        group = _GROUPS.get(getattr(args, "command", None) or "")
        (group or parser).print_help(err)
        return EX_USAGE
    debug = bool(args.debug)
    if args.command != "run":
        _configure_logging(debug)
        from waagent_guard.fsutil import isolate_reads

        isolate_reads(True)  # a read stuck in a hung filesystem fails the read, not the command
    context = Context(
        sysroot=Sysroot.of(args.root),
        config_path=Path(args.config) if args.config else None,
        debug=debug,
        stdout=out,
        stderr=err,
    )
    try:
        if args.root is not None and not Path(args.root).is_dir():
            raise UsageError(f"--root {args.root}: not a directory; pass the mounted tree's top")
        return _resolve(target)(args, context)
    except GuardError as error:
        if debug:
            log.exception("failed")
        print(f"waagent-guard: {error.message}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `waagent-guard status | head`: the reader left; not an error worth a trace.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:
        # A bug, not a situation a person can fix: say so, show the trace with --debug.
        if debug:
            raise
        print(
            "waagent-guard: internal error (a bug); rerun with --debug and report the trace",
            file=err,
        )
        return EX_SOFTWARE
