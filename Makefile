# airlock: `make demo` runs the main job end to end; `make test` runs every test.
# Both install what they need (Debian packages, a .venv) on a fresh Debian 12 machine as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 2

.PHONY: deps demo test test-full lint unit component conformance e2e bench fuzz clean

deps:
	@scripts/deps.sh

lint: deps
	$(VENV)/bin/ruff check src lab/src tests bench
	$(VENV)/bin/ruff format --check src lab/src tests bench
	$(VENV)/bin/mypy

test: deps lint
	$(VENV)/bin/pytest -n $(WORKERS) -q tests/unit tests/component
	$(PY) -m airlock_lab.conformance --results out/conformance
	$(VENV)/bin/pytest -q tests/e2e  # one shared gap topology: serially

# Slower checks, apart from `make test`: bundle send/receive through lossy links (namespaces
# medium-tx/medium-rx of its own, iptables drops at 1, 5 and 20 %).
test-full: deps
	$(VENV)/bin/pytest -q tests/full

unit: deps
	$(VENV)/bin/pytest -q tests/unit

component: deps
	$(VENV)/bin/pytest -n $(WORKERS) -q tests/component

# The OCI distribution-spec conformance suite against airlock's registry and docker-registry
# (junit reports and the summary in out/conformance/).
conformance: deps
	$(PY) -m airlock_lab.conformance --results out/conformance

e2e: deps
	$(VENV)/bin/pytest -q tests/e2e

demo: deps
	$(PY) -m airlock_lab.demo

bench: deps
	$(PY) bench/run.py

fuzz: deps
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q tests/unit -k fuzz

clean:
	rm -rf out bench/work .pytest_cache .mypy_cache .ruff_cache
