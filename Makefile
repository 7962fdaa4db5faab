# Developer entry points. `make demo` and `make test` are the README's quick start.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv demo test lint unit e2e deb rpm wheelhouse bench bench-quick clean

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml scripts/bootstrap
	scripts/bootstrap $(VENV)

demo: venv
	$(VENV)/bin/waagent-guard demo

# The whole suite with coverage (the end-to-end container tests skip themselves
# unless run as root with systemd-nspawn; CI sets WG_E2E=required).
test: venv
	$(PY) -m pytest --cov=waagent_guard --cov-report=term-missing --cov-fail-under=90 $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check waagent_guard tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf build dist out *.egg-info .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
