# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test client screenshots lint bench bench-micro clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps: reinstall only when the package metadata changes.
$(VENV)/.server: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'
	touch $@

$(VENV)/.dev: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.server

## Install and start the service on http://127.0.0.1:8000 (embedded store unless SESSIONSVC_REDIS_URL is set),
## with the audit trail in var/audit.db unless SESSIONSVC_AUDIT_URL is set (set it empty to turn it off).
run: export SESSIONSVC_AUDIT_URL ?= sqlite:///$(CURDIR)/var/audit.db
run: $(VENV)/.server
	@case "$$SESSIONSVC_AUDIT_URL" in sqlite:///$(CURDIR)/var/*) mkdir -p var;; esac
	@if [ -n "$$SESSIONSVC_AUDIT_URL" ]; then $(BIN)/flask --app wsgi sessions audit upgrade; fi
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# The TypeScript client check's packages (tests/test_generated_clients.py);
# without npm the check skips, loudly (and fails under CI=true).
NODE_STAMP := examples/typescript/node_modules/.package-lock.json

## Install and run the whole test suite.
test: $(VENV)/.dev $(NODE_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(NODE_STAMP): examples/typescript/package-lock.json examples/typescript/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix examples/typescript --no-audit --no-fund --loglevel=error; \
	else echo "npm is missing: the TypeScript client check will not run" >&2; fi

## Generate a Python client from a running service's OpenAPI document (make run first):
## clients/python/sessionsvc_client; examples/generated_client.py drives it.
CLIENT_URL ?= http://127.0.0.1:8000
CLIENT_DIR ?= clients/python
client: $(VENV)/.dev
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/openapi-python-client generate --url $(CLIENT_URL)/apispec.json --meta none --output-path $(CLIENT_DIR)/sessionsvc_client --overwrite

## Retake the README's screenshots into docs/screenshots/ (browser tests; chromium required).
screenshots: $(VENV)/.dev
	CI=true SESSIONSVC_TEST_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/test_browser.py tests/test_console.py $(PYTEST_ARGS)

## Run the benchmark suite (own redis-server, gunicorn, wrk); results in bench/results/;
## then the shipped gunicorn.conf.py against slow clients and sync workers, logins per second,
## DPoP-bound against Bearer requests, what a GeoIP City database costs each worker in memory,
## what a user agent never seen before costs a request, and the audit trail: events into
## PostgreSQL per second and a user's history at 1,000,000 rows.
bench: $(VENV)/.dev
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.logins
	$(BIN)/python -m bench.dpop
	$(BIN)/python -m bench.flood
	$(BIN)/python -m bench.admins
	$(BIN)/python -m bench.geoip
	$(BIN)/python -m bench.agents
	$(BIN)/python -m bench.audit

## Time the check and list paths for real with pytest-benchmark.
bench-micro: $(VENV)/.dev
	$(BIN)/python -m pytest tests/test_benchmarks.py --benchmark-enable

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
