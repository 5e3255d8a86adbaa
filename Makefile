# mailactors: two commands on a fresh clone.
#   make run   creates .venv, installs, runs the embedded demo (three emails to var/maildir)
#   make test  creates .venv, installs, runs the tests (services: see README)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run up test lint typecheck protos bench-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) supervisor.py demo

up: $(STAMP)
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

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
