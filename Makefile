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

# uPlot, the chart library that /dashboard serves from node_modules.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error >/dev/null

# Starts the development server on port 5000 (PORT overrides). With neither
# REDIS_URL nor REDIS_HOST set, it starts the embedded server.
run: $(VENV)/.run-installed node_modules/.package-lock.json
	$(BIN)/python app.py

# Unit tests on fakeredis and integration tests on a Redis Stack 7.4 server
# that the suite starts itself on a free loopback port.
# tools/install_test_deps.sh adds the npm packages and Debian's chromium for
# the browser test of /dashboard.
test: $(VENV)/.dev-installed
	tools/install_test_deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
