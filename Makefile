# Developer entry points. `make demo` and `make test` are the README's quick start.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv demo test lint unit e2e torture deb rpm wheelhouse wheelhouse-lock guard-toml bench bench-quick clean repo fleet

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV)

# The demo needs only the guard's runtime dependencies, not the test toolchain
# (a venv already built for the tests serves it as is). DEMO_ARGS: e.g. --duration 30s.
DEMO_ARGS ?=
demo: $(VENV)/.stamp-demo
	$(VENV)/bin/waagent-guard demo $(DEMO_ARGS)
$(VENV)/.stamp-demo: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV) demo

# The whole suite with coverage (the end-to-end container tests skip themselves
# unless run as root with systemd-nspawn; CI sets WG_E2E=required).
test: venv
	$(PY) -m pytest --cov=waagent_guard --cov-report=term-missing --cov-fail-under=90 $(PYTEST_ARGS)

# The standing torture suite (tests/torture, docs/SECURITY.md): hostile loads and
# faults, each printing one figure; bounded in time, loopback only. Also in CI.
torture: venv
	rm -f out/torture.txt; mkdir -p out
	WG_TORTURE=1 WG_TORTURE_REPORT=$(abspath out/torture.txt) $(PY) -m pytest tests/torture -q $(PYTEST_ARGS)
	cat out/torture.txt

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check waagent_guard tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf build dist out *.egg-info .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache

# --- Packages and the end-to-end test (docs/packaging.md) -------------
# `make wheelhouse` (network) fetches the pinned, hash-checked wheels; `make deb`
# and `make rpm` then build OFFLINE from it. WHEELHOUSE must match PYTHON's minor.
WHEELHOUSE ?= .cache/wheelhouse
PKG_PYTHON ?= /usr/bin/python3
DEB_OUT ?= out/deb
RPM_OUT ?= out/rpm

wheelhouse: $(WHEELHOUSE)/requirements.lock
$(WHEELHOUSE)/requirements.lock: packaging/wheelhouse/requirements.lock packaging/wheelhouse/build-requirements.lock packaging/wheelhouse/fetch
	packaging/wheelhouse/fetch $(WHEELHOUSE) $(PKG_PYTHON)

# Rewrite the locks after changing a pin in packaging/wheelhouse/*.in (network).
wheelhouse-lock: venv
	$(PY) packaging/wheelhouse/lock.py

# The packaged default config (every key commented out) and its man page guard.toml(5),
# both rendered from the settings model (a test checks each).
guard-toml: venv
	$(PY) packaging/render-guard-toml.py >packaging/guard.toml
	$(PY) packaging/render-guard-toml-man.py >packaging/guard.toml.5

# PKG_VERSION=X.Y.Z stamps another version into the build's copy of the tree
# (packaging/set-version; the tests publish 0.1.1 this way). Releases bump the
# version in the tree instead.
PKG_VERSION ?=
deb: wheelhouse
	WG_PKG_VERSION=$(PKG_VERSION) packaging/build-deb $(DEB_OUT) $(WHEELHOUSE)

rpm: wheelhouse
	WG_PKG_VERSION=$(PKG_VERSION) packaging/build-rpm $(RPM_OUT) $(WHEELHOUSE) $(PKG_PYTHON)

# Signed apt + yum repositories from what `make deb rpm` built (docs/packaging.md:
# Publishing a repository). REPO_KEY: the signing key's fingerprint in your
# GnuPG keyring (GNUPGHOME). REPO_OUT is the static site to upload; REPO_STATE
# holds reprepro's database: keep it to publish upgrades to the same site.
REPO_OUT ?= out/repo
REPO_STATE ?= out/repo-state
REPO_KEY ?=
REPO_URL ?=
repo:
	REPO_URL=$(REPO_URL) packaging/build-repo $(REPO_OUT) $(REPO_STATE) "$(REPO_KEY)" \
	    $(wildcard $(DEB_OUT)/*.deb) $(wildcard $(RPM_OUT)/*.rpm)

# Boots a Debian 12 container (root, debootstrap, systemd-nspawn; the root is
# cached in /var/cache/waagent-guard-e2e) with the real agent and our .deb.
e2e: venv
	WG_E2E=$${WG_E2E:-required} $(PY) -m pytest tests/e2e -m e2e $(PYTEST_ARGS)

# --- Benchmarks against anchors (bench/README.md, docs/PERFORMANCE.md) ----------
# `make bench`: the full report (root; ~30 minutes; writes bench/results/*.json).
# `make bench-quick`: the smoke test CI runs (~2 minutes; never asserts timings).
bench: venv
	bench/setup.sh
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: venv
	$(PY) -m bench.run --quick $(BENCH_ARGS)

# --- The monitoring kit on a simulated fleet (monitoring/README.md) -------------------------
# `make fleet`: 50 guards (each on 127.0.0.x:8419 with its own demo guest and simulated
# agent) under a real Prometheus, Alertmanager and remote-write receiver; faults injected,
# alerts asserted at a webhook; figures in out/fleet.json. Needs Debian's prometheus and
# prometheus-alertmanager (--no-install-recommends); the lease fault needs root (chattr).
FLEET_ARGS ?=
fleet: venv
	$(PY) -m tests.fleet.fleet --json out/fleet.json $(FLEET_ARGS)
