# Two commands on a fresh machine: `make run` (the main job) and `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env run test test-all bench clean

env:
	bash scripts/setup-env.sh

run: env
	$(VENV)/bin/diffflow run

test: env
	$(PY) -m pytest -m "not slow" -n 2 -q

test-all: env
	$(PY) -m pytest -n 2 -q

bench: env
	$(VENV)/bin/diffflow bench

clean:
	rm -rf $(VENV) runs
