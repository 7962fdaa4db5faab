"""waagent.conf: parsed as the agent parses it, typed with its code defaults, edited minimally."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from waagent_guard.agent.conf import (
    MAX_CONF_BYTES,
    AgentConfig,
    ConfDocument,
    agent_config,
    conf_path,
    load_conf,
    parse_conf,
    set_conf_value,
)
from waagent_guard.errors import ConfigError, InputError, WriteError
from waagent_guard.sysroot import Sysroot

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
    assert "larger than 64 MiB" in document.problems[0]


def test_symlinked_file_is_read_through_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.conf"
    target.write_bytes(b"Logs.Verbose=y\n")
    link = tmp_path / "waagent.conf"
    link.symlink_to(target)
    assert load_conf(link).get("Logs.Verbose") == "y"


# --- editing in memory --------------------------------------------------------------------


def test_set_key_updates_last_duplicate_only() -> None:
    data = b"# head\nLogs.Verbose=y # first\nA=1\nLogs.Verbose = y\nB=2\n"
    edited = parse_conf(data).with_value("Logs.Verbose", "n")
    assert edited.render() == b"# head\nLogs.Verbose=y # first\nA=1\nLogs.Verbose=n\nB=2\n"
    assert edited.get("Logs.Verbose") == "n"


def test_set_key_keeps_crlf_of_the_rewritten_line() -> None:
    edited = parse_conf(b"A=1\r\nLogs.Verbose=y\r\nB=2\r\n").with_value("Logs.Verbose", "n")
    assert edited.render() == b"A=1\r\nLogs.Verbose=n\r\nB=2\r\n"


def test_set_key_on_unterminated_last_line_keeps_it_unterminated() -> None:
    edited = parse_conf(b"A=1\nLogs.Verbose=y").with_value("Logs.Verbose", "n")
    assert edited.render() == b"A=1\nLogs.Verbose=n"


def test_commented_key_is_not_edited_but_a_new_line_is_appended() -> None:
    data = b"# Lib.Dir=/var/lib/waagent\nA=1\n"
    edited = parse_conf(data).with_value("Lib.Dir", "/data")
    assert edited.render() == data + b"Lib.Dir=/data\n"


def test_append_adds_missing_final_newline_first() -> None:
    edited = parse_conf(b"A=1").with_value("Logs.Verbose", "y")
    assert edited.render() == b"A=1\nLogs.Verbose=y\n"


def test_append_uses_crlf_in_a_crlf_file() -> None:
    edited = parse_conf(b"A=1\r\nB=2").with_value("Logs.Verbose", "y")
    assert edited.render() == b"A=1\r\nB=2\r\nLogs.Verbose=y\r\n"


def test_append_after_unterminated_quoted_value_uses_lf_to_keep_its_value() -> None:
    document = parse_conf(b'A=1\r\nB="2"')
    edited = document.with_value("C", "3")
    assert edited.render() == b'A=1\r\nB="2"\nC=3\r\n'
    assert edited.get("B") == document.get("B") == "2"


def test_append_to_empty_document_writes_one_line() -> None:
    assert ConfDocument(lines=()).with_value("Logs.Verbose", "y").render() == b"Logs.Verbose=y\n"


def test_unset_removes_last_active_line_and_falls_back_to_earlier_duplicate() -> None:
    document = parse_conf(b"Lib.Dir=/a\n# x\nLib.Dir=/b\r\nC=1")
    edited = document.with_value("Lib.Dir", None)
    assert edited.render() == b"Lib.Dir=/a\n# x\nC=1"
    assert edited.get("Lib.Dir") == "/a"
    assert edited.with_value("Lib.Dir", None).get("Lib.Dir") is None


def test_unset_of_absent_key_changes_nothing() -> None:
    document = parse_conf(b"A=1\n")
    assert document.with_value("Logs.Verbose", None) is document


def test_value_none_text_sets_the_agent_default() -> None:
    edited = parse_conf(b"HttpProxy.Host=proxy\n").with_value("HttpProxy.Host", "None")
    assert edited.render() == b"HttpProxy.Host=None\n"
    assert edited.get("HttpProxy.Host") is None


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "the key is empty"),
        ("Logs.Verbose=y", "contains '='"),
        ("#Logs.Verbose", "contains '#'"),
        ("Logs Verbose", "contains ' '"),
        ("Logs.Verbose\n", "contains '\\n'"),
        ("Logs\x00", "contains '\\x00'"),
        ("Lib.\udcff", "cannot be written as UTF-8"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="waagent.conf") as caught:
        parse_conf(b"A=1\n").with_value(key, "y")
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("y # on", "'#'"),
        ("y\nLib.Dir=/x", "a newline"),
        ("y\r", "a carriage return"),
        ("y\x00", "a NUL byte"),
        (" y", "starts or ends with whitespace or a double quote"),
        ('"y"', "starts or ends with whitespace or a double quote"),
        ("y\x1c", "starts or ends with whitespace"),
        ("\udcff", "cannot be written as UTF-8"),
    ],
)
def test_bad_values_are_refused_naming_the_key(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_conf(b"A=1\n").with_value("Logs.Verbose", value)
    assert "Logs.Verbose" in caught.value.message
    assert reason in caught.value.message


# --- editing the file ---------------------------------------------------------------------


def test_set_conf_value_edits_a_shipped_file_minimally(tmp_path: Path) -> None:
    original = (DATA / "ubuntu.waagent.conf").read_bytes()
    path = tmp_path / "waagent.conf"
    path.write_bytes(original)
    assert set_conf_value(path, "Logs.Verbose", "y") == ("n", "y")
    after = path.read_bytes()
    assert after == original.replace(b"\nLogs.Verbose=n\n", b"\nLogs.Verbose=y\n")
    assert agent_config(load_conf(path)).logs_verbose is True
    assert sorted(os.listdir(tmp_path)) == ["waagent.conf"]


def test_set_conf_value_appends_and_unsets(tmp_path: Path) -> None:
    original = (DATA / "debian-packaged.waagent.conf").read_bytes()
    path = tmp_path / "waagent.conf"
    path.write_bytes(original)
    assert set_conf_value(path, "HttpProxy.Host", "10.0.0.5") == (None, "10.0.0.5")
    assert path.read_bytes() == original + b"HttpProxy.Host=10.0.0.5\n"
    assert set_conf_value(path, "HttpProxy.Host", None) == ("10.0.0.5", None)
    assert path.read_bytes() == original


def test_set_conf_value_keeps_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=n\n")
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 1234, 2345)
    before = os.stat(path)
    set_conf_value(path, "Logs.Verbose", "y")
    after = os.stat(path)
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # replaced by rename, not rewritten in place


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=y\n")
    inode = os.stat(path).st_ino
    assert set_conf_value(path, "Logs.Verbose", "y") == ("y", "y")
    assert set_conf_value(path, "Lib.Dir", None) == (None, None)
    assert os.stat(path).st_ino == inode


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    with pytest.raises(InputError, match="agent's config is missing") as caught:
        set_conf_value(path, "Logs.Verbose", "y")
    assert str(path) in caught.value.message
    assert not path.exists()


def test_directory_where_the_file_belongs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        set_conf_value(path, "Logs.Verbose", "y")


def test_refused_value_leaves_file_and_directory_untouched(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=n\n")
    with pytest.raises(ConfigError):
        set_conf_value(path, "Logs.Verbose", "y # yes")
    assert path.read_bytes() == b"Logs.Verbose=n\n"
    assert os.listdir(tmp_path) == ["waagent.conf"]


def test_failed_write_leaves_the_file_and_no_temporary_file(tmp_path: Path) -> None:
    # A real child process whose file-size limit is below the file's size: the temporary
    # copy cannot be written (EFBIG), as when a disk fills up mid-write.
    path = tmp_path / "waagent.conf"
    original = b"# " + b"x" * 8000 + b"\nLogs.Verbose=n\n"
    path.write_bytes(original)
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from waagent_guard.agent.conf import set_conf_value\n"
        "from waagent_guard.errors import WriteError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))\n"
        "try:\n"
        "    set_conf_value(Path(sys.argv[1]), 'Logs.Verbose', 'y')\n"
        "except WriteError as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
        "finally:\n"
        "    # lift the limit again so coverage (if any) can save its data at exit\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "the original is unchanged" in result.stdout
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["waagent.conf"]


def test_symlinked_file_is_edited_through_the_link(tmp_path: Path) -> None:
    target = tmp_path / "oem" / "waagent.conf"
    target.parent.mkdir()
    target.write_bytes(b"Logs.Verbose=n\n")
    link = tmp_path / "waagent.conf"
    link.symlink_to(target)
    set_conf_value(link, "Logs.Verbose", "y")
    assert link.is_symlink()
    assert target.read_bytes() == b"Logs.Verbose=y\n"
    assert sorted(os.listdir(target.parent)) == ["waagent.conf"]


def test_non_utf8_bytes_elsewhere_survive_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"# caf\xe9\r\nLogs.Verbose=n\r\n\xff")
    set_conf_value(path, "Logs.Verbose", "y")
    assert path.read_bytes() == b"# caf\xe9\r\nLogs.Verbose=y\r\n\xff"


# --- finding the file ---------------------------------------------------------------------


def test_conf_path_honours_the_override_under_the_sysroot(tmp_path: Path) -> None:
    sysroot = Sysroot(tmp_path)
    assert conf_path(sysroot, "/opt/agent/waagent.conf") == tmp_path / "opt/agent/waagent.conf"


def test_conf_path_without_override_searches_per_distro(tmp_path: Path) -> None:
    sysroot = Sysroot(tmp_path)
    assert conf_path(sysroot, None) == tmp_path / "etc/waagent.conf"
    oem = tmp_path / "usr/share/oem/waagent.conf"
    oem.parent.mkdir(parents=True)
    oem.write_bytes(b"")
    assert conf_path(sysroot, None) == oem


def test_conf_path_refuses_a_relative_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent.conf_path: must be an absolute path"):
        conf_path(Sysroot(tmp_path), "etc/waagent.conf")
