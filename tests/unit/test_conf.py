"""waagent.conf: parsed as the agent parses it, typed with its code defaults, loaded safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from waagent_guard.agent.conf import (
    MAX_CONF_BYTES,
    AgentConfig,
    ConfDocument,
    agent_config,
    load_conf,
    parse_conf,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "conf"
SHIPPED = sorted(DATA.glob("*.waagent.conf"))


def config_of(text: str) -> AgentConfig:
    return agent_config(parse_conf(text.encode()))


# --- the shipped files --------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_every_shipped_file_parses_without_problems_and_renders_identically(path: Path) -> None:
    document = load_conf(path)
    assert document.problems == ()
    assert document.render() == path.read_bytes()
    assert document.get("Provisioning.Agent") is not None
    assert agent_config(document).lib_dir == "/var/lib/waagent"


def test_debian_package_disables_auto_update_and_uses_cloud_init() -> None:
    config = agent_config(load_conf(DATA / "debian-packaged.waagent.conf"))
    assert config.autoupdate_enabled is False
    assert config.update_to_latest is None
    assert config.auto_update is False
    assert config.provisioning_agent == "cloud-init"
    assert config.os_enable_firewall is False
    assert config.extensions_enabled is True


def test_upstream_debian_file_keeps_code_default_of_auto_update() -> None:
    config = agent_config(load_conf(DATA / "debian.waagent.conf"))
    assert config.auto_update is True
    assert config.provisioning_agent == "auto"
    assert config.os_enable_firewall is False


def test_chainguard_update_to_latest_no_wins_over_auto_update_enabled() -> None:
    config = agent_config(load_conf(DATA / "chainguard.waagent.conf"))
    assert config.autoupdate_enabled is True
    assert config.update_to_latest is False
    assert config.auto_update is False
    assert config.extensions_enabled is False


@pytest.mark.parametrize("name", ["ubuntu", "suse", "mariner", "coreos", "upstream"])
def test_most_shipped_files_turn_the_firewall_on(name: str) -> None:
    config = agent_config(load_conf(DATA / f"{name}.waagent.conf"))
    assert config.os_enable_firewall is True
    assert config.logs_verbose is False


def test_upstream_file_sets_goal_state_period_explicitly() -> None:
    document = load_conf(DATA / "upstream.waagent.conf")
    assert document.get("Extensions.GoalStatePeriod") == "6"
    assert agent_config(document).goal_state_period == 6


def test_agent_test_file_gives_the_values_the_agents_own_tests_expect() -> None:
    # Expectations from the agent's tests/common/test_conf.py for this file.
    document = load_conf(DATA / "test_waagent.conf")
    assert document.get("FauxKey1") == "Value1"
    assert document.get("FauxKey2") == "Value2 Value2"
    assert document.get("FauxKey3") == "delalloc,rw,noatime,nobarrier,users,mode=777"
    assert document.get("") == "Value0"
    assert document.get("Provisioning.SshHostKeyPairType") == "rsa"
    assert document.get("Provisioning.DecodeCustomData") == "n"
    assert document.get("OS.EnableFIPS") == "y"
    assert document.get("OS.SshClientAliveInterval") == "42"
    assert document.get("OS.SshDir") == "/notareal/path"
    assert document.get("ResourceDisk.MountOptions") is None
    assert document.get("OS.OpensslPath") is None
    assert document.get("HttpProxy.Host") is None
    assert "Lib.Dir" not in document.as_dict()
    assert "ResourceDisk.MountOptions" not in document.as_dict()
    assert document.as_dict()["OS.RootDeviceScsiTimeout"] == "300"


def test_defaults_apply_to_an_empty_configuration() -> None:
    config = agent_config(ConfDocument(lines=()))
    assert config == AgentConfig(
        logs_verbose=False,
        logs_collect=True,
        extensions_enabled=True,
        autoupdate_enabled=True,
        update_to_latest=None,
        auto_update=True,
        http_proxy_host=None,
        http_proxy_port=None,
        os_enable_firewall=False,
        lib_dir="/var/lib/waagent",
        extension_log_dir="/var/log/azure",
        pid_file="/var/run/waagent.pid",
        provisioning_agent="auto",
        goal_state_period=6,
    )


# --- the agent's line syntax --------------------------------------------------------------


def test_end_of_line_comment_spaces_and_quotes_are_stripped() -> None:
    document = parse_conf(b'A = "x y" # note\nB="q"#c\nC=  v  \n')
    assert (document.get("A"), document.get("B"), document.get("C")) == ("x y", "q", "v")


def test_value_may_contain_equals_signs() -> None:
    assert parse_conf(b"Opts=a=1,b=2\n").get("Opts") == "a=1,b=2"


def test_last_duplicate_wins_and_none_means_default() -> None:
    document = parse_conf(b"Logs.Verbose=y\nLogs.Verbose=n\nLib.Dir=/x\nLib.Dir=None\n")
    assert document.get("Logs.Verbose") == "n"
    assert document.get("Lib.Dir") is None
    assert agent_config(document).lib_dir == "/var/lib/waagent"


def test_only_a_hash_in_column_one_comments_a_line_out() -> None:
    # The agent tests line.startswith("#") without stripping first.
    document = parse_conf(b"  # Logs.Verbose=y\n#Lib.Dir=/x\nno equals sign\n")
    assert document.get("Logs.Verbose") is None
    assert document.as_dict() == {"# Logs.Verbose": "y"}
    assert [line.key for line in document.lines] == ["# Logs.Verbose", None, None]


def test_crlf_lines_parse_like_lf_lines() -> None:
    document = parse_conf(b"Logs.Verbose=y\r\nLib.Dir=/srv/agent\r\n")
    assert document.get("Logs.Verbose") == "y"
    assert document.get("Lib.Dir") == "/srv/agent"


def test_carriage_return_keeps_a_closing_quote_as_the_agent_does() -> None:
    # Agent: '"v"\r'.strip('" ') -> 'v"\r', then .strip() -> 'v"'.
    assert parse_conf(b'K="v"\r\n').get("K") == 'v"'


def test_last_line_without_newline_is_used() -> None:
    document = parse_conf(b"A=1\nLogs.Verbose=y")
    assert document.get("Logs.Verbose") == "y"
    assert document.lines[-1].raw == b"Logs.Verbose=y"


def test_switches_accept_y_and_n_in_any_case() -> None:
    config = config_of("Logs.Verbose=Y\nExtensions.Enabled=N\n")
    assert config.logs_verbose is True
    assert config.extensions_enabled is False


def test_invalid_switch_means_default_and_is_reported_with_its_line() -> None:
    document = parse_conf(b"# c\nLogs.Verbose=yes\nExtensions.Enabled=false\n")
    config = agent_config(document)
    assert config.logs_verbose is False
    assert config.extensions_enabled is True
    assert document.problems == (
        "line 2: Logs.Verbose=yes is not y or n; the agent ignores it and uses its default (n)",
        "line 3: Extensions.Enabled=false is not y or n; "
        "the agent ignores it and uses its default (y)",
    )


def test_invalid_update_to_latest_falls_back_to_auto_update_enabled() -> None:
    document = parse_conf(b"AutoUpdate.Enabled=n\nAutoUpdate.UpdateToLatestVersion=maybe\n")
    config = agent_config(document)
    assert config.update_to_latest is None
    assert config.auto_update is False
    assert "its default (AutoUpdate.Enabled)" in document.problems[0]


def test_update_to_latest_yes_wins_over_auto_update_no() -> None:
    config = config_of("AutoUpdate.Enabled=n\nAutoUpdate.UpdateToLatestVersion=y\n")
    assert (config.autoupdate_enabled, config.update_to_latest, config.auto_update) == (
        False,
        True,
        True,
    )


def test_an_overridden_invalid_switch_is_not_reported() -> None:
    assert parse_conf(b"Logs.Verbose=yes\nLogs.Verbose=y\n").problems == ()


def test_proxy_and_integer_values_are_typed() -> None:
    document = parse_conf(
        b"HttpProxy.Host=proxy.example\nHttpProxy.Port=3128\nExtensions.GoalStatePeriod=30\n"
    )
    config = agent_config(document)
    assert (config.http_proxy_host, config.http_proxy_port) == ("proxy.example", 3128)
    assert config.goal_state_period == 30


def test_invalid_integer_means_default_and_is_reported() -> None:
    document = parse_conf(b"HttpProxy.Port=abc\nExtensions.GoalStatePeriod=6s\n")
    config = agent_config(document)
    assert config.http_proxy_port is None
    assert config.goal_state_period == 6
    assert document.problems == (
        "line 1: HttpProxy.Port=abc is not an integer; "
        "the agent ignores it and uses its default (None)",
        "line 2: Extensions.GoalStatePeriod=6s is not an integer; "
        "the agent ignores it and uses its default (6)",
    )


def test_string_settings_come_from_the_file() -> None:
    config = config_of(
        "Lib.Dir=/data/waagent\nExtension.LogDir=/data/azure\nPid.File=/run/w.pid\n"
        "Provisioning.Agent=disabled\n"
    )
    assert (config.lib_dir, config.extension_log_dir, config.pid_file) == (
        "/data/waagent",
        "/data/azure",
        "/run/w.pid",
    )
    assert config.provisioning_agent == "disabled"


# --- hostile content ----------------------------------------------------------------------


def test_empty_file_is_reported_because_the_agent_refuses_it() -> None:
    document = parse_conf(b"")
    assert document.lines == ()
    assert document.render() == b""
    assert "empty" in document.problems[0]


def test_non_utf8_line_is_reported_by_number_and_still_renders_identically() -> None:
    data = b"Logs.Verbose=y\nLib.Dir=/caf\xe9\n\xff\xfe\n"
    document = parse_conf(data)
    assert document.render() == data
    assert document.get("Logs.Verbose") == "y"
    assert document.get("Lib.Dir") == "/caf\ufffd"
    assert [problem.split(":")[0] for problem in document.problems] == ["line 2", "line 3"]
    assert "not UTF-8 (byte 0xe9 at column 13)" in document.problems[0]


def test_binary_garbage_never_raises_and_round_trips() -> None:
    data = bytes(range(256)) * 40 + b"\r\r\n\x00=\x00#\n=\n"
    document = parse_conf(data)
    assert document.render() == data
    assert document.problems


def test_ten_megabyte_line_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    data = b"Logs.Verbose=y\nHuge=" + b"x" * (10 * 1024 * 1024) + b"\nLib.Dir=/d\n"
    path.write_bytes(data)
    document = load_conf(path)
    assert document.render() == data
    assert document.get("Lib.Dir") == "/d"
    assert len(document.get("Huge") or "") == 10 * 1024 * 1024


def test_ten_megabyte_integer_value_is_not_an_integer() -> None:
    document = parse_conf(b"Extensions.GoalStatePeriod=" + b"9" * 10_000_000 + b"\n")
    assert agent_config(document).goal_state_period == 6
    assert document.problems == (
        "line 1: Extensions.GoalStatePeriod=" + "9" * 40 + "... is not an integer; "
        "the agent ignores it and uses its default (6)",
    )


# --- loading ------------------------------------------------------------------------------


def test_missing_file_loads_as_empty_document_with_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    document = load_conf(path)
    assert document.lines == ()
    assert document.problems == (f"{path}: not found",)


def test_directory_where_the_file_belongs_loads_as_empty_with_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.mkdir()
    document = load_conf(path)
    assert document.lines == ()
    assert document.problems == (f"{path}: is a directory, not the agent's config file",)


def test_path_below_a_regular_file_loads_as_empty_with_a_problem(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("")
    document = load_conf(tmp_path / "etc" / "waagent.conf")
    assert "cannot read it" in document.problems[0]


def test_oversized_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    with open(path, "wb") as handle:
        handle.truncate(MAX_CONF_BYTES + 1)  # sparse: cheap
    document = load_conf(path)
    assert document.lines == ()
    assert "larger than 16 MiB" in document.problems[0]


def test_symlinked_file_is_read_through_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.conf"
    target.write_bytes(b"Logs.Verbose=y\n")
    link = tmp_path / "waagent.conf"
    link.symlink_to(target)
    assert load_conf(link).get("Logs.Verbose") == "y"
