# Two commands matter: `make dev` runs the service, `make test` runs the checks and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# ariadne-codegen generates the SDK (service/client); it needs graphql-core 3.2, strawberry 3.3: own venv
CODEGEN_VERSION := 0.19.0
CODEGEN := $(VENV)/codegen/bin/ariadne-codegen

.PHONY: install dev test lint pytest bench chaos clean client

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(CODEGEN):
	$(PYTHON) -m venv $(VENV)/codegen
	$(VENV)/codegen/bin/python -m pip install --quiet 'ariadne-codegen==$(CODEGEN_VERSION)'

install: $(STAMP) $(CODEGEN)

client: install  ## export the schema from the server and regenerate the SDK from it and service/client/operations
	$(BIN)/python -c 'from service.schema import schema; print(schema.as_str())' > service/client/schema.graphql
	rm -rf service/client/generated_async service/client/generated_sync
	$(CODEGEN) client --config service/client/codegen-async.toml
	$(CODEGEN) client --config service/client/codegen-sync.toml

dev: install  ## run API + worker + scheduler (embedded Postgres/Redis unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/claimcheck dev

test: lint pytest  ## ruff, mypy, the import contracts, then the test suite on real Postgres, Redis and HTTP

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service callbacks observability tests bench
	$(BIN)/lint-imports

pytest: install
	$(BIN)/pytest

bench: install  ## the benchmark scripts (they print figures; see bench/README.md)
	$(BIN)/python -m bench.enqueue
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.deliveries
	$(BIN)/python -m bench.artifact_memory
	$(BIN)/python -m bench.subscribers
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.limits
	$(BIN)/python -m bench.load

chaos: install  ## jobs and webhooks through injected faults; prints what was lost (must be nothing)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
