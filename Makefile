# The two commands of the README: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test test-slow test-timeshift test-faults bench bench-peak dev lint typecheck

$(STAMP): pyproject.toml package.json scripts/setup.sh
	./scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

## Run Notify's main job end to end on the embedded default with the Online Retail data.
demo: $(STAMP)
	DAGSTER_HOME=$(CURDIR) $(VENV)/bin/notify run --fast-forward-minutes 60

## The whole test suite (starts DynamoDB Local and a Kafka-protocol broker itself), on TEST_WORKERS
## processes (pytest-xdist), a test file to one process: run alone, the suite keeps ~1 of the 2 cores busy,
## half its wall is waiting on servers and subprocesses. 2 measured best here (20.5 min alone, 15.0 on
## 2, 16.0 on 3, where a timing bug showed); TEST_WORKERS=0 runs it in this process. It ends with its 15
## slowest tests: the suite aims at ~15 min here.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_WORKERS) --durations=15

## Scale and soak tests, excluded from `make test`.
test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

## The suite with the process clock moved (libfaketime): no test may depend on today's date. A European DST
## day, a leap-year edge and a new year just after midnight UTC by default; TIMESHIFT_DATES picks others.
## tests/timeshift/sitecustomize.py works around libfaketime's EINVAL from time.sleep (see its docstring),
## and faketime_environ.py beside it around its getenv in every GIL wait, which an environment write could
## crash (SIGSEGV: CI of c98e405 died so, 21 tests in; tests/unit/test_timeshift_environ.py shows both).
## One process: on two it took 9.0 and 10.5 min against 9.4 (its long files end it either way); again in
## session 58, 32.8 min on two against 33.2 on one, and the weeks-long expiry test (148 s alone) timed out.
## Session 59: it, the day-cap, catch-up and redrive tests, the run's slowest, read fewer empty minutes (fewer
## shards): the expiry test 116 -> 42 s, day-cap's file 346 -> 100, the outage test 89 -> 38, redrive's 142 -> 58.
## The servers the tests start (DynamoDB Local, SeaweedFS, PostgreSQL) run on the real clock (tests/servers.py
## server_env: a JVM under libfaketime busy-waits, which made this run 78 min instead of ~11).
## The Kafka-broker tests are left out: librdkafka's timers hang under libfaketime (the clock they test is
## the broker's, not Notify's); they run in `make test`.
TIMESHIFT_DATES ?= 2027-03-28 12:00:00|2029-02-28 23:30:00|2031-01-01 00:30:00
## TIMESHIFT_TESTS: the folders whose behaviour depends on dates. The others either have none or test the
## clocks of servers that libfaketime cannot move (litestream and weed are static Go binaries), so they
## run in `make test` only.
TIMESHIFT_TESTS ?= tests/scheduling tests/delivery tests/recommend tests/evaluation tests/events tests/pipeline
test-timeshift: $(STAMP)
	@dates='$(TIMESHIFT_DATES)'; IFS='|'; for when in $$dates; do \
	  echo "== the suite at $$when (faketime)"; \
	  PYTHONPATH=tests/timeshift$${PYTHONPATH:+:$$PYTHONPATH} FAKETIME_DONT_FAKE_MONOTONIC=1 faketime "$$when" \
	    $(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not kafka" $(TIMESHIFT_TESTS) $(PYTEST_ARGS) || exit 1; \
	done
## The fault-injection suite, short and long versions (kill -9 loops, servers killed mid-run), with its table.
test-faults: $(STAMP)
	$(VENV)/bin/python -m pytest -m faults tests/faults tests/backup/test_dr_drill.py tests/backup/test_backup_s3.py

bench: $(STAMP)
	$(VENV)/bin/python -m bench

bench-peak: $(STAMP)  ## the four peak paths in one sitting, one table (bench/results/peak.md)
	$(VENV)/bin/python -m bench.peak

## The Dagster UI on http://127.0.0.1:3000 over the same instance `make demo` writes to.
dev: $(STAMP)
	./scripts/dagster_dev.sh -h 127.0.0.1 -w workspace.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy
