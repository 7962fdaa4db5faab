"""Runs INSIDE the oracle subprocess (see conftest.py): asks the agent's own code.

Usage: python -I agent_driver.py SITE (--version | --request | --script CODE)

SITE is the unpacked package's dist-packages directory. Before anything of the agent is
imported, this pins what the agent would otherwise detect from the machine (a stub
`distro` module saying Debian 12) and refuses every socket that is not loopback or
AF_UNIX: the agent's readers and writers are called, the agent itself never runs.

`--request` reads {"op": name, "cases": [...]} from stdin and prints a JSON list with one
answer per case. Each op calls the agent's own code only; the test compares the guard.
"""

import json
import os
import socket
import sys
import tempfile
import types
import warnings


def _pin_environment(site):
    warnings.simplefilter("ignore")
    stub = types.ModuleType("distro")
    stub.linux_distribution = lambda full_distribution_name=True: ("debian", "12", "bookworm")
    stub.id = lambda: "debian"
    stub.version = lambda *args, **kwargs: "12"
    stub.codename = lambda: "bookworm"
    sys.modules["distro"] = stub
    real_connect = socket.socket.connect

    def loopback_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
        ):
            raise OSError(f"oracle driver: no network (refused {address!r})")
        return real_connect(self, address)

    socket.socket.connect = loopback_only
    sys.path.insert(0, site)


# --- operations --------------------------------------------------------------------------


def op_conf(case):
    """{"content": text} -> what ConfigurationProvider.load and the conf getters give."""
    from azurelinuxagent.common import conf
    from azurelinuxagent.common.exception import AgentConfigError

    provider = conf.ConfigurationProvider()
    try:
        provider.load(case["content"])
    except AgentConfigError as error:
        return {"error": str(error)}
    typed = {}
    getters = {
        "lib_dir": "get_lib_dir",
        "pid_file": "get_agent_pid_file_path",
        "ext_log_dir": "get_ext_log_dir",
        "logs_verbose": "get_logs_verbose",
        "logs_collect": "get_collect_logs",
        "extensions_enabled": "get_extensions_enabled",
        "autoupdate_enabled": "get_autoupdate_enabled",
        "os_enable_firewall": "enable_firewall",
        "http_proxy_host": "get_httpproxy_host",
        "http_proxy_port": "get_httpproxy_port",
        "provisioning_agent": "get_provisioning_agent",
        "goal_state_period": "get_goal_state_period",
        "enable_firewall_period": "get_enable_firewall_period",
        "enable_fast_track": "get_enable_fast_track",
    }
    for name, getter in getters.items():
        function = getattr(conf, getter, None)
        if function is not None:
            typed[name] = function(provider)
    update_to_latest = getattr(conf, "get_auto_update_to_latest_version", None)
    typed["update_to_latest_known"] = update_to_latest is not None
    if update_to_latest is not None:
        typed["auto_update"] = update_to_latest(provider)
    else:
        typed["auto_update"] = typed["autoupdate_enabled"]
    return {"error": None, "values": provider.values, "typed": typed}


def op_switch_defaults(case):
    """{} -> the agent's table of switch defaults and integer defaults."""
    from azurelinuxagent.common import conf

    return {
        "switches": dict(getattr(conf, "__SWITCH_OPTIONS__", {})),
        "integers": dict(getattr(conf, "__INTEGER_OPTIONS__", {})),
        "strings": {k: v for k, v in getattr(conf, "__STRING_OPTIONS__", {}).items()},
    }


def op_versions(case):
    """[a, b] -> -1/0/1 as FlexibleVersion orders them, or {"error": ...}."""
    from azurelinuxagent.common.utils.flexible_version import FlexibleVersion

    try:
        left, right = FlexibleVersion(case[0]), FlexibleVersion(case[1])
        if left == right:
            return 0
        return -1 if left < right else 1
    except (ValueError, TypeError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


def op_log(case):
    """{"entries": [{time, level, thread, prefix, message}]} -> the agent's file appender output.

    Each entry is written by the agent's own Logger (`logger.Logger(prefix=...)` with a
    FILE appender); the logger's clock is pinned to the entry's `time` (ISO, UTC).
    """
    import datetime as real_datetime
    import threading

    from azurelinuxagent.common import logger

    levels = {
        "VERBOSE": logger.LogLevel.VERBOSE,
        "INFO": logger.LogLevel.INFO,
        "WARNING": logger.LogLevel.WARNING,
        "ERROR": logger.LogLevel.ERROR,
    }
    pinned = {"now": None}

    class PinnedDatetime(real_datetime.datetime):
        @classmethod
        def utcnow(cls):
            return pinned["now"]

    logger.datetime = PinnedDatetime
    directory = tempfile.mkdtemp(prefix="oracle-log-")
    path = os.path.join(directory, "waagent.log")
    writer = logger.Logger(prefix=None)
    writer.add_appender(logger.AppenderType.FILE, logger.LogLevel.VERBOSE, path)
    thread = threading.current_thread()
    for entry in case["entries"]:
        pinned["now"] = real_datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%f")
        writer.set_prefix(entry.get("prefix"))
        thread.name = entry.get("thread") or "MainThread"
        writer.log(levels[entry["level"]], entry["message"])
    with open(path, "rb") as handle:
        data = handle.read()
    os.unlink(path)
    os.rmdir(directory)
    return data.decode("utf-8")


def _handler_classes():
    from azurelinuxagent.common.protocol import restapi

    handler_class = getattr(restapi, "Extension", None)
    settings_class = getattr(restapi, "ExtensionSettings", None)
    return handler_class, settings_class


def _instance(lib_dir, name, version, multi_config=False, settings=()):
    from azurelinuxagent.common import conf
    from azurelinuxagent.ga import exthandlers

    conf.__conf__.values["Lib.Dir"] = lib_dir
    conf.__conf__.values["Extension.LogDir"] = os.path.join(lib_dir, ".oracle-extlog")
    handler_class, settings_class = _handler_classes()
    handler = handler_class(name=name)
    handler.version = version
    handler.supports_multi_config = multi_config
    for item in settings:
        handler.settings.append(
            settings_class(name=item.get("name"), sequenceNumber=item.get("sequenceNumber"))
        )
    exthandlers._STATUS_FILE_RETRY_DELAY = 0
    return exthandlers.ExtHandlerInstance(handler, None)


def op_write_handler(case):
    """Lay out a handler directory with the agent's own writers (state, status, settings)."""
    instance = _instance(case["lib_dir"], case["name"], case["version"])
    os.makedirs(instance.get_conf_dir(), exist_ok=True)
    if case.get("handler_state") is not None:
        instance.set_handler_state(case["handler_state"])
    if case.get("handler_status") is not None:
        instance.set_handler_status(status=case["handler_status"], message="oracle", code=0)
    return None


def op_installed_version(case):
    """{"lib_dir", "name"} -> ExtHandlerInstance.get_installed_version() (None: none installed)."""
    instance = _instance(case["lib_dir"], case["name"], "0.0.0.0")
    return instance.get_installed_version()


def op_ext_status(case):
    """The status the agent reports for one handler directory (collect_ext_status).

    The extension's sequence number comes from the case (the goal state) or, when None,
    from the handler's settings files, as the agent falls back to them.
    """
    settings = case.get("settings") or [{"name": case["name"], "sequenceNumber": None}]
    instance = _instance(
        case["lib_dir"], case["name"], case["version"], case.get("multi_config", False), settings
    )
    answers = []
    for extension in instance.extensions:
        try:
            status = instance.collect_ext_status(extension)
        except Exception as error:  # the agent's caller turns this into an error status
            answers.append({"exception": f"{type(error).__name__}: {error}"})
            continue
        if status is None:
            answers.append(None)
        else:
            answers.append(
                {
                    "sequence": status.sequenceNumber,
                    "status": status.status,
                    "code": status.code,
                    "operation": status.operation,
                }
            )
    return answers


def op_agent_error(case):
    """{"path": error.json} -> GuestAgentError(path).load(); is_blacklisted."""
    from azurelinuxagent.ga import update

    error = update.GuestAgentError(case["path"])
    try:
        error.load()
    except Exception as failure:  # see test_blacklist_matches_the_agent
        return {"exception": f"{type(failure).__name__}: {failure}"}
    return bool(error.is_blacklisted)


def op_agent_error_write(case):
    """{"path", "failures": [is_fatal, ...]} -> write error.json with the agent's own code."""
    from azurelinuxagent.ga import update

    error = update.GuestAgentError(case["path"])
    for fatal in case["failures"]:
        error.mark_failure(is_fatal=fatal)
    error.save()
    return bool(error.is_blacklisted)


OPS = {
    "agent_error": op_agent_error,
    "agent_error_write": op_agent_error_write,
    "conf": op_conf,
    "switch_defaults": op_switch_defaults,
    "versions": op_versions,
    "log": op_log,
    "write_handler": op_write_handler,
    "installed_version": op_installed_version,
    "ext_status": op_ext_status,
}


def main(argv):
    site, mode = argv[1], argv[2]
    _pin_environment(site)
    if mode == "--version":
        from azurelinuxagent.common.version import AGENT_VERSION

        print(AGENT_VERSION)
        return 0
    if mode == "--script":
        namespace = {"__name__": "__oracle_script__"}
        exec(compile(argv[3], "<oracle script>", "exec"), namespace)
        return 0
    request = json.loads(sys.stdin.read())
    operation = OPS[request["op"]]
    answers = [operation(case) for case in request["cases"]]
    sys.stdout.write(json.dumps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
