"""waagent-guard: a health daemon for the Azure Linux guest agent (WALinuxAgent)."""

__version__ = "0.1.0"
