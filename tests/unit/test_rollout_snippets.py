"""The fleet rollout snippets of docs/packaging.md are valid: the cloud-configs parse as YAML
with the keys cloud-init documents, the Custom Script settings are built as
documented and carry a script `bash -n` accepts, the client lines agree, and the
README's two install blocks are the ones in docs/packaging.md."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.readme_snippets import (
    README,
    apt_source_line,
    blocks,
    cloud_configs,
    install_section,
    repo_file,
    rollout_script,
    settings_command,
)

# The cloud-init keys used here, as its modules document them (cc_apt_configure,
# cc_package_update_upgrade_install, cc_yum_add_repo), and the keys each apt
# source / yum repository entry may have.
CLOUD_CONFIG_KEYS = {"apt", "package_update", "package_upgrade", "packages", "yum_repos", "runcmd"}
APT_SOURCE_KEYS = {"source", "key", "keyid", "keyserver", "filename", "append"}
YUM_REPO_KEYS = {"name", "baseurl", "enabled", "gpgcheck", "repo_gpgcheck", "gpgkey"}
SUITE = "REPO-HOST/apt bookworm main"


def _configs() -> list[dict[str, Any]]:
    configs = [yaml.safe_load(text) for text in cloud_configs()]
    assert len(configs) == 2, "docs/packaging.md: a Debian and an rpm cloud-config"
    return configs


def test_cloud_configs_use_only_documented_keys() -> None:
    for config in _configs():
        assert isinstance(config, dict)
        assert set(config) <= CLOUD_CONFIG_KEYS, set(config) - CLOUD_CONFIG_KEYS
        assert config["packages"] == ["waagent-guard"]


def test_debian_cloud_config_pins_the_repository_to_its_key() -> None:
    apt = next(c for c in _configs() if "apt" in c)
    assert apt["package_update"] is True
    sources = apt["apt"]["sources"]
    assert len(sources) == 1
    (entry,) = sources.values()
    assert set(entry) <= APT_SOURCE_KEYS
    assert entry["source"].startswith("deb [signed-by=$KEY_FILE] https://")
    assert entry["source"].endswith(SUITE) and apt_source_line().endswith(SUITE)
    key = entry["key"]
    assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert key.rstrip().endswith("-----END PGP PUBLIC KEY BLOCK-----")


def test_rpm_cloud_config_checks_package_and_metadata_signatures() -> None:
    rpm = next(c for c in _configs() if "yum_repos" in c)
    (repo,) = rpm["yum_repos"].values()
    assert set(repo) <= YUM_REPO_KEYS
    assert repo["gpgcheck"] is True and repo["repo_gpgcheck"] is True and repo["enabled"] is True
    assert repo["baseurl"] == "https://REPO-HOST/rpm"
    assert repo["gpgkey"] == "https://REPO-HOST/RPM-GPG-KEY-waagent-guard"
    documented = dict(line.split("=", 1) for line in repo_file().splitlines()[1:])
    assert documented["baseurl"] == repo["baseurl"] and documented["gpgkey"] == repo["gpgkey"]
    assert documented["gpgcheck"] == documented["repo_gpgcheck"] == "1"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_custom_script_settings_carry_the_script_and_it_parses(tmp_path: Path) -> None:
    script = rollout_script()
    (tmp_path / "waagent-guard-rollout.sh").write_text(script)
    subprocess.run(["bash", "-n", "waagent-guard-rollout.sh"], cwd=tmp_path, check=True, timeout=30)

    subprocess.run(["bash", "-ec", settings_command()], cwd=tmp_path, check=True, timeout=30)

    settings = json.loads((tmp_path / "cse-settings.json").read_text())
    assert set(settings) == {"script"}
    decoded = gzip.decompress(base64.b64decode(settings["script"], validate=True)).decode()
    assert decoded == script
    checked = subprocess.run(
        ["bash", "-n"], input=decoded, text=True, capture_output=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert decoded.startswith("#!/bin/bash\n") and "set -euo pipefail" in decoded


def test_bash_n_would_catch_a_broken_script() -> None:
    broken = rollout_script().replace("\nfi\n", "\n", 1)
    checked = subprocess.run(
        ["bash", "-n"], input=broken, text=True, capture_output=True, timeout=30, check=False
    )
    assert checked.returncode != 0


def test_the_readme_install_blocks_are_those_of_the_packaging_guide() -> None:
    readme = README.read_text().split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    shown = blocks(readme, "sh")
    assert len(shown) == 2, "README ## Install: a Debian and an rpm block"
    guide = blocks(install_section(), "sh")
    for block in shown:
        assert block in guide, f"README install block differs from docs/packaging.md:\n{block}"
