# Two commands do all set-up: `make run` starts the service, `make test` runs
# every test. Each creates .venv from the checked-in requirements first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.run-installed

# Starts the development server on port 5000 (PORT overrides). With neither
# REDIS_URL nor REDIS_HOST set, it starts the embedded server.
run: $(VENV)/.run-installed
	$(BIN)/python app.py

# Unit tests on fakeredis and integration tests on a Redis Stack 7.4 server
# that the suite starts itself on a free loopback port.
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
