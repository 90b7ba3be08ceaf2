# The two commands of the README: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test test-slow bench dev lint typecheck

$(STAMP): pyproject.toml package.json scripts/setup.sh
	./scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

## Run Notify's main job end to end on the embedded default with the Online Retail data.
demo: $(STAMP)
	DAGSTER_HOME=$(CURDIR) $(VENV)/bin/notify run

## The whole test suite (starts DynamoDB Local and a Kafka-protocol broker itself).
test: $(STAMP)
	$(VENV)/bin/python -m pytest

## Scale and soak tests, excluded from `make test`.
test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

bench: $(STAMP)
	$(VENV)/bin/python -m bench

## The Dagster UI on http://127.0.0.1:3000 over the same instance `make demo` writes to.
dev: $(STAMP)
	./scripts/dagster_dev.sh -h 127.0.0.1 -w workspace.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy
