# Two commands do everything on a fresh machine:
#   make run    start the dev host with the Graph and identity emulators and Azurite on loopback
#   make test   ruff, ruff format --check, mypy --strict, the ServiceNow script include's Node
#               tests and the whole pytest suite
# Both create .venv and install requirements-dev.txt first, and install package-lock.json into
# node_modules with npm ci (each again only when it changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Inside node_modules: npm ci empties the folder first, so a failed install leaves no stamp.
NODE_STAMP := node_modules/.installed

.PHONY: run test lint node-test infra-check package bench clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP) $(NODE_STAMP)
	$(PY) -m devtools.run

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# acorn (the ES5 check of the script include) and Azurite (the storage emulator of `make run` and
# the tests) exactly as package-lock.json pins them; neither needs an install script.
$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	touch $(NODE_STAMP)

# The files, not their folder: Node 21 and later no longer search a folder given to --test.
node-test: $(NODE_STAMP)
	node --test --test-reporter=spec integrations/servicenow/test/*.test.js

test: lint node-test
	$(PY) -m pytest

# The infra checks alone (they also run inside `make test`): pycep parse, security properties,
# checkov in its own virtual environment (.venv-checkov, created on first use).
infra-check: $(STAMP)
	$(PY) -m devtools.infra_checks

# The zip Azure would deploy (what .funcignore lets through), with its contents and size.
package: $(STAMP)
	$(PY) -m devtools.package

clean:
	rm -rf $(VENV) .venv-checkov dist node_modules

# Benchmarks next to msgraph-sdk (in its own .venv-sdk, made on first use) on the local emulators,
# and a 10,000-device bulk job on Azurite; prints every figure, its ratio and the targets
# (docs/PERFORMANCE.md). About 8 minutes here, 4½ of them the job.
bench: $(STAMP) $(NODE_STAMP)
	$(PY) -m bench.run
