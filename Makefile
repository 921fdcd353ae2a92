# The README's commands. `make demo` (alias `make run`) and `make test` work on a fresh machine:
# they create the virtualenv, install, and start PostgreSQL and RabbitMQ if they are not answering.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install services demo run test test-faults lint bench-routing bench-e2e constraints mutation clean

# Every install (here, CI through `make test`, and the Dockerfile) takes its versions from
# constraints.txt; `make constraints` regenerates it (docs/security.md).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

services:
	@bash .ci/services.sh

demo run: install services
	$(BIN)/engine demo

test: install services lint
	$(BIN)/pytest

# Restarts this machine's RabbitMQ and PostgreSQL under load (and SIGKILLs processes): not in `make test`.
test-faults: install services
	$(BIN)/pytest tests/faults -s -p no:cacheprovider

# ruff, the architecture's import contracts (pyproject [tool.importlinter]) and mypy --strict.
lint: install
	$(BIN)/ruff check engine workers tests
	$(BIN)/ruff format --check engine workers tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

bench-routing: install
	$(BIN)/python -m tests.bench.bench_routing

constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q --upgrade pip
	.venv-constraints/bin/pip install -q ".[test]"
	.venv-constraints/bin/pip freeze --exclude-editable | grep -iv '^conversation.engine' > constraints.txt
	rm -rf .venv-constraints

# The engine end to end against the bare pipeline (docs/loadtest.md); BENCH_* variables make it longer.
bench-e2e: install services
	$(BIN)/python -m tests.bench.bench_e2e

# Mutation testing of the modules that hold the engine's guarantees (docs/testing.md); not in `make test`.
# `make mutation GROUPS="consumer flush"` runs some groups only.
mutation: install services
	$(BIN)/python -m tests.mutation.run $(GROUPS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
