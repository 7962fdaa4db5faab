"""`waagent-guard run`: the long-running guard (see docs/ARCHITECTURE.md)."""
