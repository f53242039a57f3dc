# airlock: `make demo` runs the main job end to end; `make test` runs every test.
# Both install what they need (Debian packages, a .venv) on a fresh Debian 12 machine as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 2

.PHONY: deps demo test test-full components lint docs-check unit component conformance e2e bench bench-cluster fuzz clean
FULL_PLATFORMS := linux/amd64,linux/arm64

deps:
	@scripts/deps.sh

lint: deps
	$(VENV)/bin/ruff check src lab/src tests bench
	$(VENV)/bin/ruff format --check src lab/src tests bench
	$(VENV)/bin/mypy

# Every `airlock ...` command in README.md and docs/ (and every --help example) parsed by the
# CLI as it is: subcommands, flags, values (tests/docs_check.py; under a second).
docs-check: deps
	$(PY) tests/docs_check.py

# The seed's real components, built from their Go modules (cached: see docs/components.md).
components: deps
	$(VENV)/bin/airlock lab components --set seed

test: deps lint docs-check components
	$(VENV)/bin/pytest -n $(WORKERS) -q tests/unit tests/component
	$(PY) -m airlock_lab.conformance --results out/conformance
	$(VENV)/bin/pytest -q tests/e2e  # one shared gap topology: serially

# Slower checks, apart from `make test`: bundle send/receive through lossy links (namespaces
# medium-tx/medium-rx of its own, iptables drops at 1, 5 and 20 %); the real components for
# linux/arm64 too (multi-arch indexes of real builds), the `current` preset's versions and the
# upgrade target (Kubernetes v1.28.15, etcd 3.5.15: tests/full/test_upgrade_release.py).
test-full: deps
	AIRLOCK_DEPS_FULL=1 scripts/deps.sh
	$(VENV)/bin/airlock lab components --set seed --set current --set upgrade \
	  --platform linux/amd64 --platform linux/arm64
	AIRLOCK_TEST_PLATFORMS=$(FULL_PLATFORMS) $(VENV)/bin/pytest -q \
	  tests/component/test_upstream.py tests/component/test_real_components.py
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

# Figures at the seed's size (bench/run.py), then growth curves on real-size content
# (bench/scale.py: 1x by default; AIRLOCK_BENCH_SCALES=1,4,8 for the full scales).
bench: deps components
	$(PY) bench/run.py
	$(PY) bench/scale.py

# The cluster journey timed both ways in the same run (bench/blog_figures.py): airlock from the
# medium to a Ready node and to podinfo answering, against the blog's way by hand (docker-archive
# per image, load/tag/push into docker-registry, kubeadm with imageRepository), on lab nodes;
# writes bench/blog_results.json. Root, the lab lock, ~8 minutes a round (ROUNDS=3 by default).
ROUNDS ?= 3
bench-cluster: deps components
	flock /tmp/airlock-lab.lock nice -n 19 $(PY) bench/blog_figures.py --rounds $(ROUNDS)

fuzz: deps
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q tests/unit -k fuzz

clean:
	rm -rf out bench/work $${XDG_CACHE_HOME:-$$HOME/.cache}/airlock/bench/work .pytest_cache .mypy_cache .ruff_cache
