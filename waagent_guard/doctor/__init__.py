"""`waagent-guard doctor`: the backup troubleshooting guide as automatic checks.

The package is split by direction: `facts` gathers every input once (adapters,
side effects injected), `checks_*` are pure functions from those facts to
findings, `catalogue` holds each check's code, cause and remedy as data,
`render` turns findings into the human report and the JSON document, and
`command` is the CLI entry point. The daemon uses `runner` (`DoctorRunner`,
`run_checks`, `check_codes`), `findings.backup_ready` and
`pressure.PressureWindow`. Nothing is imported here so that importing one
piece stays cheap.
"""

from __future__ import annotations
