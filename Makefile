# The README's two commands: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench install checks-venv

$(BIN)/.installed: pyproject.toml dev/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]" -e ./dev
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

demo: install
	$(BIN)/connect-pipeline demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pipeline dev/devtools dev/connect_sim

test: install lint checks-venv
	PIPELINE_REQUIRE_CHECKS=1 $(BIN)/pytest -q

# make bench [BENCH="backlog latency --events 50000"]: see python -m benchmarks --help
bench: install
	$(BIN)/python -m benchmarks $(BENCH)
