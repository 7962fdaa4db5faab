"""The guard's own configuration: `/etc/waagent-guard/guard.toml`.

Pydantic v2 models with documented defaults; unknown keys are rejected; every
error names the file, the dotted key and the fix. An absent file means "all
defaults". `Settings.model_dump()` is what `config show` prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from waagent_guard.errors import ConfigError, PermissionDeniedError
from waagent_guard.fsutil import NotRegularFile, UndecodableFile, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AgentCommandSettings(Section):
    """argv lists for `manager = "command"` (the demo, containers without systemd)."""

    status: List[str] = Field(default_factory=list, description="exit 0 when the agent runs")
    start: List[str] = Field(default_factory=list, description="start the agent")
    restart: List[str] = Field(default_factory=list, description="restart the agent")
    stop: List[str] = Field(default_factory=list, description="stop the agent")


class AgentSettings(Section):
    unit: str = Field("auto", description="agent unit: auto, walinuxagent.service, waagent.service")
    manager: Literal["auto", "systemd", "sysv", "openrc", "command"] = Field(
        "auto", description="how to talk to the agent's service manager"
    )
    conf_path: Optional[str] = Field(
        None,
        description="waagent.conf (default: per-distro search)",
        examples=["/etc/waagent.conf"],
    )
    log_path: str = Field("/var/log/waagent.log", description="the agent's log file")
    command: AgentCommandSettings = AgentCommandSettings()
    command_timeout_seconds: float = Field(30.0, gt=0, description="timeout of manager commands")

    @field_validator("unit")
    @classmethod
    def _unit_name(cls, value: str) -> str:
        if value != "auto" and not value.endswith(".service"):
            raise ValueError(f"must be 'auto' or a unit name ending in .service (got {value!r})")
        return value


class VmsnapshotSettings(Section):
    min_version: str = Field("1.0.91.0", description="oldest acceptable VMSnapshot version")

    @field_validator("min_version")
    @classmethod
    def _dotted(cls, value: str) -> str:
        parts = value.split(".")
        if not all(part.isdigit() for part in parts):
            raise ValueError(f"must be a dotted version like 1.0.91.0 (got {value!r})")
        return value


class RestartSettings(Section):
    enabled: bool = Field(True, description="restart the agent when it is down")
    max_restarts: int = Field(3, gt=0, description="guard restarts allowed per window")
    window_seconds: int = Field(1800, gt=0, description="budget window")
    backoff_initial_seconds: float = Field(5.0, ge=0, description="first backoff delay")
    backoff_max_seconds: float = Field(300.0, gt=0, description="backoff ceiling")
    grace_seconds: float = Field(5.0, ge=0, description="slack after the unit's own RestartSec")
    healthy_reset_seconds: int = Field(
        1800, gt=0, description="agent healthy this long clears a give-up"
    )
    snapshot_overdue_seconds: int = Field(
        3600, gt=0, description="a snapshot older than this no longer blocks restarts"
    )
    stuck_restart: bool = Field(False, description="restart an agent that is alive but stuck")
    stuck_after_seconds: int = Field(
        3600, gt=0, description="no log/status progress this long counts as stuck"
    )


class VerboseSettings(Section):
    default_duration_seconds: int = Field(3600, gt=0, description="lease length without --for")
    max_duration_seconds: int = Field(7 * 86400, gt=0, description="longest lease allowed")


class MetricsSettings(Section):
    enabled: bool = Field(True, description="serve /metrics")
    address: str = Field("127.0.0.1", description="listen address (loopback by default)")
    port: int = Field(8419, ge=0, le=65535, description="listen port (0: any free port)")
    tls_cert: Optional[str] = Field(
        None,
        description="PEM certificate: enables HTTPS",
        examples=["/etc/waagent-guard/tls/cert.pem"],
    )
    tls_key: Optional[str] = Field(
        None,
        description="PEM private key for tls_cert",
        examples=["/etc/waagent-guard/tls/key.pem"],
    )
    tls_client_ca: Optional[str] = Field(
        None,
        description="CA bundle: require client certs",
        examples=["/etc/waagent-guard/tls/clients-ca.pem"],
    )


class ControlSettings(Section):
    socket: str = Field("/run/waagent-guard/control.sock", description="control socket path")
    group: Optional[str] = Field(
        None, description="group allowed besides root", examples=["adm"]
    )


class DaemonSettings(Section):
    tick_seconds: float = Field(15.0, gt=0, description="reconciliation period")
    debounce_seconds: float = Field(0.25, ge=0, description="file event debounce")
    log_batch_seconds: float = Field(
        5.0, ge=0, le=60,
        description="new agent log lines are read within this long (0: each as it comes)",
    )
    proc_poll_seconds: float = Field(0.5, gt=0, description="agent exit poll without pidfd")
    state_file: str = Field("/var/lib/waagent-guard/state.json", description="durable state")


class DoctorSettings(Section):
    interval_seconds: int = Field(300, gt=0, description="check period in the daemon")
    probe: Literal["auto", "always", "never"] = Field(
        "auto", description="network probes: auto = only on Azure and never under --root"
    )
    timeout_seconds: float = Field(3.0, gt=0, le=4.5, description="per-probe timeout")
    wireserver: str = Field("168.63.129.16", description="WireServer address")
    wireserver_port: int = Field(80, ge=1, le=65535, description="WireServer HTTP port")
    hostgaplugin_port: int = Field(32526, ge=1, le=65535, description="HostGAPlugin port")
    imds_url: str = Field(
        "http://169.254.169.254/metadata/instance?api-version=2021-02-01",
        description="IMDS probe URL",
    )
    storage_host: Optional[str] = Field(
        None,
        description="storage host to probe (default: from VMSnapshot settings)",
        examples=["examplestorage.blob.core.windows.net"],
    )
    storage_port: int = Field(443, ge=1, le=65535, description="storage host port")
    cpu_threshold_percent: float = Field(90.0, gt=0, le=100, description="CPU pressure limit")
    memory_threshold_percent: float = Field(90.0, gt=0, le=100, description="memory pressure limit")
    sustained_seconds: int = Field(600, gt=0, description="window for sustained pressure")
    min_free_bytes: int = Field(256 * 1024 * 1024, ge=0, description="free space floor")


class BundleSettings(Section):
    output_dir: str = Field("/var/lib/waagent-guard/bundles", description="where bundles go")
    max_file_bytes: int = Field(30 * 1024 * 1024, gt=0, description="per-file cap (tail kept)")
    max_total_bytes: int = Field(150 * 1024 * 1024, gt=0, description="total uncompressed cap")
    history_entries: int = Field(5, ge=0, description="newest history/ entries to include")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="daemon log level"
    )


class Settings(Section):
    agent: AgentSettings = AgentSettings()
    vmsnapshot: VmsnapshotSettings = VmsnapshotSettings()
    restart: RestartSettings = RestartSettings()
    verbose: VerboseSettings = VerboseSettings()
    metrics: MetricsSettings = MetricsSettings()
    control: ControlSettings = ControlSettings()
    daemon: DaemonSettings = DaemonSettings()
    doctor: DoctorSettings = DoctorSettings()
    bundle: BundleSettings = BundleSettings()
    logging: LoggingSettings = LoggingSettings()


def _known_keys(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    current: type[BaseModel] = model
    for part in location:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            break
    return sorted(current.model_fields)


def _describe(error: dict[str, Any], source: str) -> str:
    location = tuple(error["loc"])
    key = ".".join(str(part) for part in location)
    if error["type"] == "extra_forbidden":
        known = ", ".join(_known_keys(Settings, location[:-1]))
        return f"{source}: {key}: unknown key; remove it (known keys here: {known})"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] in ("missing",):
        return f"{source}: {key}: required"
    suffix = "" if isinstance(got, dict) else f" (got {got!r})"
    if "got " in message:
        suffix = ""
    return f"{source}: {key}: {message}{suffix}"


def parse_settings(text: str, source: str = "guard.toml") -> Settings:
    """Parse and validate TOML text; ConfigError names `source`, the key and the fix."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}; fix the syntax") from error
    except RecursionError as error:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply; fix the syntax") from error
    try:
        return Settings.model_validate(document)
    except ValidationError as error:
        lines = [_describe(dict(item), source) for item in error.errors()]
        raise ConfigError("\n".join(lines)) from error


# guard.toml is a few KiB; anything this large is not a config file.
MAX_SETTINGS_BYTES = 1024 * 1024


def load_settings(path: Path, *, required: bool = False) -> Settings:
    """Load `path`; a missing file gives the defaults unless `required`."""
    try:
        text = read_text(path, MAX_SETTINGS_BYTES, errors="strict")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file; create it or pass another path") from None
        return Settings()
    except NotRegularFile as error:
        raise ConfigError(f"{path}: is {error.kind}, expected a TOML file") from None
    except PermissionError:  # not a config error: exit 77 like every permission problem
        raise PermissionDeniedError(
            f"{path}: permission denied; run as root or make it readable (chmod 0644)"
        ) from None
    except UndecodableFile as error:
        raise ConfigError(f"{path}: {error.strerror}; save the file as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it: {error.strerror or error}") from None
    return parse_settings(text, str(path))


def unset_keys(settings: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the keys with no value (TOML has no null: they are left out)."""
    names: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            names.extend(unset_keys(value, f"{dotted}."))
        elif value is None:
            names.append(dotted)
    return names


def render_settings(settings: Settings) -> str:
    """The effective configuration as TOML (defaults included), for `config show`.

    Written by tomli-w, so any value (a newline, quotes, backslashes, non-ASCII)
    comes out as valid TOML that parses back to the same settings. Keys without a
    value are named in a comment (TOML has no null).
    """
    import tomli_w

    text = tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True))
    unset = unset_keys(settings)
    if unset:
        text = f"# unset (the built-in behaviour applies): {', '.join(unset)}\n\n" + text
    return text


def toml_line(name: str, value: object) -> str:
    """`name = value` as one valid TOML line (tomli-w escapes the value)."""
    import tomli_w

    return tomli_w.dumps({name: value}).rstrip("\n")


def toml_value(value: object) -> str:
    """A single-line value as TOML (the defaults in docs/configuration.md and guard.toml(5))."""
    return toml_line("v", value).split(" = ", 1)[1]
