"""Benchmarks of waagent-guard against its anchors (see bench/README.md).

`python -m bench.run [--quick] [--only NAME,...]` runs them; each writes
`bench/results/<name>.json`. Nothing here is imported by the package.
"""
