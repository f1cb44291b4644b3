# The README's two commands: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench install checks-venv lock

# Every dependency from the lock file, each checked against its hashes; then the two
# local distributions without resolving anything more (`pip check`: the lock is complete).
$(BIN)/.installed: pyproject.toml dev/pyproject.toml dev/requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r dev/requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e ".[dev]" -e ./dev
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed

# Static checks of k8s/, Dockerfile and docker-compose.yml (checkov, kubectl kustomize,
# kubernetes-validate, check-jsonschema): their own virtualenv, their pins clash with ours.
CHECKS := .venv-checks
$(CHECKS)/.installed: tests/ops/requirements-checks.txt
	$(PY) -m venv $(CHECKS)
	$(CHECKS)/bin/pip install --quiet --upgrade pip
	$(CHECKS)/bin/pip install --quiet -r tests/ops/requirements-checks.txt
	touch $@

checks-venv: $(CHECKS)/.installed

# The lock files, with hashes: requirements.lock (the product: the image installs it) and
# dev/requirements.lock (product, dev tooling and test tools: make install, CI). Run after
# changing a pin in pyproject.toml or dev/pyproject.toml; a static check fails until then.
LOCK_FLAGS := --quiet --generate-hashes --universal --python-version 3.11
lock: checks-venv
	printf 'setuptools==84.2.1\nwheel==0.48.0\n' | $(CHECKS)/bin/uv pip compile $(LOCK_FLAGS) --extra otel \
		pyproject.toml - -o requirements.lock
	printf -- '-e .[dev]\n-e ./dev\nsetuptools==84.2.1\nwheel==0.48.0\n' | $(CHECKS)/bin/uv pip compile \
		$(LOCK_FLAGS) --no-emit-package connect-signals-pipeline --no-emit-package connect-pipeline-dev \
		- -o dev/requirements.lock

demo: install
	$(BIN)/connect-pipeline demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pipeline dev/devtools dev/connect_sim

test: install lint checks-venv
	PIPELINE_REQUIRE_CHECKS=1 $(BIN)/pytest -q -n 3 --dist loadfile

# make bench [BENCH="backlog latency --events 50000"]: see python -m benchmarks --help
bench: install
	$(BIN)/python -m benchmarks $(BENCH)
