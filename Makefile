# mailactors: two commands on a fresh clone.
#   make run   creates .venv, installs what running needs, runs the embedded demo (three
#              emails to var/maildir)
#   make test  creates .venv, installs that and the development extras, runs the tests
#              (services: see README)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run up test lint typecheck protos bench-deps metrics-deps browser-deps clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# What running needs (the `dependencies` of pyproject.toml), nothing more.
$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

# Running plus the development extras (pytest, mypy, moto, testcontainers, ...).
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(RUN_STAMP) $(STAMP)

run: $(RUN_STAMP)
	$(PY) supervisor.py demo

up: $(RUN_STAMP)
	$(PY) supervisor.py up

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# One checking standard: ruff (line length 100 included) on everything, mypy --strict on
# the code that ships.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict runtime actors config bench supervisor.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict runtime actors config bench supervisor.py

protos: $(STAMP)
	PYTHON=$(PY) protos/generate.sh

bench-deps:
	apt-get install -y postfix

# The web view's tests drive Debian's chromium with its chromedriver (never a browser download).
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	else apt-get install -y chromium chromium-driver || \
	     (apt-get update && apt-get install -y chromium chromium-driver); fi

# promtool (Debian's prometheus package) checks the metrics pages in the tests.
metrics-deps:
	command -v promtool >/dev/null || apt-get install -y prometheus \
		|| (apt-get update -qq && apt-get install -y prometheus)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
