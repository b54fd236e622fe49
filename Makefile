# The two commands a newcomer needs: `make run` and `make test`. Both set everything up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# Services for the integration tests (the machine's PostgreSQL and Redis); override to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# Torch ops in the tests are tiny: one thread each is about ten times faster than contending for two cores.
TEST_THREADS ?= 1

.PHONY: install run test test-fast lint format schema audit audit-deps graphiql-deps static bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch from the local wheel first; any other spec may pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[gpu,dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP) graphiql-deps
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py seed_demo
	$(PY) manage.py load_trends
	$(PY) manage.py load_products
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py serve

# The whole suite against real PostgreSQL and Redis (started by .ci/run in CI). Without them locally,
# the services tests are skipped with a reason; under CI (CI=true) a missing service fails the run.
test: $(STAMP) audit-deps graphiql-deps
	@if $(PY) -m tests.services_up "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"; then \
		DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" OMP_NUM_THREADS=$(TEST_THREADS) \
			$(PY) -m pytest $(PYTEST_ARGS); \
	else \
		if [ "$$CI" = "true" ]; then echo "PostgreSQL or Redis is down under CI: failing"; exit 1; fi; \
		echo "PostgreSQL/Redis not reachable: running the embedded suite only"; \
		OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest $(PYTEST_ARGS); \
	fi

# The GraphQL-over-HTTP audit (tools/graphql-http-audit, Node >= 18) that `make test` runs against a live
# server: `npm ci` when node_modules is missing or older than the lock file. Without npm the audit test is
# skipped locally; under CI a missing npm fails here.
AUDIT_DIR := tools/graphql-http-audit
AUDIT_STAMP := $(AUDIT_DIR)/node_modules/.package-lock.json

$(AUDIT_STAMP): $(AUDIT_DIR)/package.json $(AUDIT_DIR)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(AUDIT_DIR) --no-audit --no-fund --loglevel=error && touch $(AUDIT_STAMP); \
	elif [ "$$CI" = "true" ]; then echo "npm is missing under CI: failing"; exit 1; \
	else echo "npm not found: the graphql-http audit test will be skipped"; fi

audit-deps: $(AUDIT_STAMP)

# GraphiQL's scripts and styles (tools/graphiql), served as static files so that the IDE needs no CDN
# (backend/staticfiles.py picks the files; `collectstatic` copies them). `make run` and `make test` install
# them; without npm the IDE page cannot load its scripts (manage.py check says so), and CI fails here.
GRAPHIQL_DIR := tools/graphiql
GRAPHIQL_STAMP := $(GRAPHIQL_DIR)/node_modules/.package-lock.json

$(GRAPHIQL_STAMP): $(GRAPHIQL_DIR)/package.json $(GRAPHIQL_DIR)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(GRAPHIQL_DIR) --no-audit --no-fund --loglevel=error && touch $(GRAPHIQL_STAMP); \
	elif [ "$$CI" = "true" ]; then echo "npm is missing under CI: failing"; exit 1; \
	else echo "npm not found: GraphiQL will not load its scripts"; fi

graphiql-deps: $(GRAPHIQL_STAMP)

# What production runs in its image build: hashed, compressed static files in STATIC_ROOT for ServeStatic.
static: $(STAMP) graphiql-deps
	$(PY) manage.py collectstatic --noinput

# The same audit against a server you started yourself (`make run`): make audit AUDIT_URL=http://...
AUDIT_URL ?= http://$(HOST):$(PORT)/graphql
audit: audit-deps
	node $(AUDIT_DIR)/audit.mjs $(AUDIT_URL)

# Benchmarks print figures (bench/README.md); the websocket one needs PostgreSQL and a scratch Redis db.
BENCH_DATABASE_URL ?= $(TEST_DATABASE_URL)
BENCH_REDIS_URL ?= $(TEST_REDIS_URL)
bench: $(STAMP)
	$(PY) bench/http_me.py
	BENCH_DATABASE_URL="$(BENCH_DATABASE_URL)" BENCH_REDIS_URL="$(BENCH_REDIS_URL)" $(PY) bench/ws.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo pyproject.toml

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

schema: $(STAMP)
	$(PY) manage.py export_schema graphql_schema.schema:schema --path graphql_schema/schema.graphql
	$(PY) manage.py shell -c "from rest_api.api import OPENAPI_PATH, openapi_document; OPENAPI_PATH.write_text(openapi_document())"

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .import_linter_cache $(AUDIT_DIR)/node_modules \
		$(GRAPHIQL_DIR)/node_modules
