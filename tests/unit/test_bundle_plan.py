"""Pure planning: globs, ordering, skips with reasons, commands."""

from __future__ import annotations

from waagent_guard.bundle.catalogue import DEFAULT_CATALOGUE, SECRET_REASON
from waagent_guard.bundle.globs import glob_regex, split_glob
from waagent_guard.bundle.plan import (
    CommandEntry,
    FileEntry,
    ListingEntry,
    PlanOptions,
    make_plan,
)
from waagent_guard.bundle.walk import ListedFile


def f(path: str, size: int = 10, mtime: float = 1000.0) -> ListedFile:
    return ListedFile(path, "file", size, mtime, real=path)


def plan_for(
    listing: list[ListedFile], **options: object
) -> tuple[dict[str, FileEntry], dict[str, str]]:
    plan = make_plan(DEFAULT_CATALOGUE, listing, PlanOptions(**options))  # type: ignore[arg-type]
    files = {entry.source: entry for entry in plan.entries if isinstance(entry, FileEntry)}
    skipped = {item.source: item.reason for item in plan.skipped}
    return files, skipped


def test_split_glob_finds_the_fixed_base_and_the_depth() -> None:
    assert split_glob("/var/lib/waagent/*/status/*.status") == ("/var/lib/waagent", 3)
    assert split_glob("/var/log/azure/**") == ("/var/log/azure", None)
    assert split_glob("/var/log/waagent.log") == ("/var/log/waagent.log", 0)


def test_glob_star_stays_in_one_component_and_double_star_crosses() -> None:
    assert glob_regex("/a/*.xml").match("/a/b.xml")
    assert not glob_regex("/a/*.xml").match("/a/b/c.xml")
    assert glob_regex("/a/**").match("/a/b/c/d.log")
    assert glob_regex("/a/?.[!x]").match("/a/b.c")
    assert not glob_regex("/a/?.[!x]").match("/a/b.x")
    assert glob_regex("/a/[").match("/a/[")


def test_must_haves_come_first_whatever_the_listing_order() -> None:
    plan = make_plan(
        DEFAULT_CATALOGUE,
        [f("/etc/waagent.conf"), f("/var/log/waagent.log"), f("/var/lib/waagent/GoalState.1.xml")],
        PlanOptions(),
    )
    files = [entry.source for entry in plan.entries if isinstance(entry, FileEntry)]
    assert files == [
        "/var/lib/waagent/GoalState.1.xml",
        "/var/log/waagent.log",
        "/etc/waagent.conf",
    ]
    assert isinstance(plan.entries[0], FileEntry) and plan.entries[0].priority == 0


def test_secret_files_are_listed_as_skipped_never_planned() -> None:
    names = [
        "Certificates.pem",
        "TransportPrivate.pem",
        "A.prv",
        "A.crt",
        "Certificates.p7m",
        "CustomData",
        "Certificates.json",
    ]
    files, skipped = plan_for(
        [f(f"/var/lib/waagent/{name}") for name in names] + [f("/var/log/azure/Ext/leaked.pem")]
    )
    assert files == {}
    for name in names:
        assert skipped[f"/var/lib/waagent/{name}"] == SECRET_REASON
    assert skipped["/var/log/azure/Ext/leaked.pem"] == SECRET_REASON


def test_history_keeps_only_the_newest_entries() -> None:
    listing = [
        f(f"/var/lib/waagent/history/2024-01-0{day}T00-00-00__{day}/GoalState.xml")
        for day in range(1, 5)
    ] + [f("/var/lib/waagent/history/2024-01-05T00-00-00__5.zip")]
    files, skipped = plan_for(listing, history_entries=2)
    assert sorted(files) == [
        "/var/lib/waagent/history/2024-01-04T00-00-00__4/GoalState.xml",
        "/var/lib/waagent/history/2024-01-05T00-00-00__5.zip",
    ]
    assert files["/var/lib/waagent/history/2024-01-05T00-00-00__5.zip"].decode == "zip"
    assert (
        "older history entry"
        in skipped["/var/lib/waagent/history/2024-01-01T00-00-00__1/GoalState.xml"]
    )


def test_since_skips_old_rotated_logs_but_never_the_current_log() -> None:
    files, skipped = plan_for(
        [
            f("/var/log/waagent.log", mtime=10),
            f("/var/log/waagent.log.1", mtime=10),
            f("/var/log/waagent.log.2.gz", mtime=5000),
        ],
        since_cutoff=1000.0,
    )
    assert sorted(files) == ["/var/log/waagent.log", "/var/log/waagent.log.2.gz"]
    assert skipped["/var/log/waagent.log.1"] == "not modified within --since"
    assert files["/var/log/waagent.log.2.gz"].member == "var/log/waagent.log.2"
    assert files["/var/log/waagent.log.2.gz"].decode == "gzip"


def test_a_decompressed_name_that_collides_gets_a_suffix() -> None:
    files, _ = plan_for([f("/var/log/waagent.log.1"), f("/var/log/waagent.log.1.gz")])
    assert files["/var/log/waagent.log.1.gz"].member == "var/log/waagent.log.1.decompressed"


def test_symlinks_are_followed_only_to_regular_files_the_catalogue_collects() -> None:
    listing = [
        ListedFile(
            "/etc/os-release", "symlink", 5, 1.0, real="/usr/lib/os-release", target_kind="file"
        ),
        ListedFile(
            "/var/log/azure/shadow.log", "symlink", 5, 1.0, real="/etc/shadow", target_kind="file"
        ),
        ListedFile(
            "/var/log/azure/dir.log", "symlink", 0, 1.0, real="/var/log/azure/d", target_kind="dir"
        ),
        ListedFile("/var/log/azure/gone.log", "symlink", error="dangling or looping symlink"),
        ListedFile(
            "/var/log/azure/key.log",
            "symlink",
            5,
            1.0,
            real="/var/lib/waagent/A.prv",
            target_kind="file",
        ),
        ListedFile("/var/log/azure/pipe", "fifo"),
        ListedFile("/var/log/azure/dev", "device"),
        ListedFile("/var/log/azure/locked", "unreadable-dir", error="Permission denied"),
    ]
    files, skipped = plan_for(listing)
    assert files["/etc/os-release"].real == "/usr/lib/os-release"
    assert skipped["/var/log/azure/shadow.log"] == "secret material, never collected"
    assert "symlink to a dir" in skipped["/var/log/azure/dir.log"]
    assert "dangling" in skipped["/var/log/azure/gone.log"]
    assert skipped["/var/log/azure/key.log"] == SECRET_REASON
    assert skipped["/var/log/azure/pipe"] == "not a regular file (fifo), never read"
    assert skipped["/var/log/azure/dev"] == "not a regular file (device), never read"
    assert skipped["/var/log/azure/locked"] == "directory unreadable: Permission denied"


def test_full_adds_the_larger_set() -> None:
    listing = [f("/var/log/syslog"), f("/etc/netplan/50-cloud-init.yaml")]
    assert plan_for(listing)[0] == {}
    assert sorted(plan_for(listing, full=True)[0]) == [
        "/etc/netplan/50-cloud-init.yaml",
        "/var/log/syslog",
    ]


def test_agent_directories_come_from_the_options() -> None:
    files, _ = plan_for(
        [f("/data/waagent/GoalState.1.xml"), f("/data/azlogs/x/y.log")],
        lib_dir="/data/waagent",
        extension_log_dir="/data/azlogs",
    )
    assert files["/data/waagent/GoalState.1.xml"].priority == 0
    assert files["/data/azlogs/x/y.log"].keep == "tail"


def test_host_commands_are_skipped_under_another_root_but_the_guard_runs() -> None:
    plan = make_plan(
        DEFAULT_CATALOGUE,
        [],
        PlanOptions(host=False, root="/mnt/disk", config="/x/guard.toml", python="py"),
    )
    commands = [entry for entry in plan.entries if isinstance(entry, CommandEntry)]
    assert [entry.argv for entry in commands] == [
        (
            "py",
            "-m",
            "waagent_guard",
            "status",
            "--json",
            "--root",
            "/mnt/disk",
            "--config",
            "/x/guard.toml",
        ),
        (
            "py",
            "-m",
            "waagent_guard",
            "doctor",
            "--json",
            "--root",
            "/mnt/disk",
            "--config",
            "/x/guard.toml",
        ),
    ]
    reasons = {item.reason for item in plan.skipped}
    assert reasons == {
        "not run: --root is not /; host commands describe this machine, not the tree"
    }
    listings = [entry for entry in plan.entries if isinstance(entry, ListingEntry)]
    assert [entry.directory for entry in listings] == ["/var/log", "/var/lib/waagent"]


def test_host_commands_run_per_agent_unit_with_the_since_bound() -> None:
    plan = make_plan(
        DEFAULT_CATALOGUE,
        [],
        PlanOptions(
            agent_units=("walinuxagent.service", "waagent.service"), since_cutoff=1700000000.5
        ),
    )
    commands = {entry.member: entry for entry in plan.entries if isinstance(entry, CommandEntry)}
    assert commands["commands/journal-waagent.txt"].argv == (
        "journalctl",
        "--no-pager",
        "-o",
        "short-iso",
        "-u",
        "waagent.service",
        "--since=@1700000000",
    )
    assert "commands/systemctl-status-walinuxagent.txt" in commands
    assert "commands/systemctl-show-waagent-guard.service.txt" in commands
    assert commands["commands/iptables-security.txt"].line_filter == r"168\.63\.129\.16"
    no_since = make_plan(DEFAULT_CATALOGUE, [], PlanOptions())
    journal = [e for e in no_since.entries if isinstance(e, CommandEntry) and "journal" in e.member]
    assert journal[0].argv[-1] == "--lines=20000"
