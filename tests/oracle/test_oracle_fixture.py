"""The oracle fixture itself: the package is the one CI gets, and its code answers."""

from __future__ import annotations

from oracle_support import AgentOracle


def test_oracle_is_debians_agent_package(agent_oracle: AgentOracle) -> None:
    assert agent_oracle.deb.name.startswith("waagent_")
    assert (agent_oracle.site / "azurelinuxagent" / "common" / "conf.py").is_file()
    assert agent_oracle.version.count(".") == 3  # e.g. 2.7.3.0 on Debian 12
    assert agent_oracle.shipped_conf.is_file()


def test_oracle_driver_pins_distro_and_refuses_network(agent_oracle: AgentOracle) -> None:
    script = (
        "import socket\n"
        "from azurelinuxagent.common.version import DISTRO_NAME\n"
        "print(DISTRO_NAME)\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "try:\n"
        "    s.connect(('168.63.129.16', 80))\n"
        "except OSError as e:\n"
        "    print('refused' if 'no network' in str(e) else 'other')\n"
        "finally:\n"
        "    s.close()\n"
    )
    assert agent_oracle.run_script(script).split() == ["debian", "refused"]
