# The two commands a new user needs: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
# The oldest Airflow that pyproject.toml claims: `make test` runs the whole suite on it too. 3.1.0 to 3.1.7
# only work with the dependency versions of their constraints files (with today's structlog, fastapi and
# pydantic they fail at import or at task start), so the claim starts at 3.1.8, the release tested here.
OLDEST_AIRFLOW_VERSION ?= 3.1.8
# Airflow's constraints file (a URL or a path) for the Airflow step of `make install`; empty: none. `make test`
# installs without: it tests what a plain pip install resolves today, and GitHub may be out of reach.
CONSTRAINTS ?=
# The package's extras installed into the venv: `celery` is for the Celery topology of tests/e2e, which the
# oldest pass skips (it skips the whole e2e suite), as it skips the servers that topology needs (E2E_SERVICES).
EXTRAS ?= test,openlineage,celery
E2E_SERVICES ?= e2e-services
COMMA := ,
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)$(if $(CONSTRAINTS),-constrained)-$(subst $(COMMA),-,$(EXTRAS))

.PHONY: install test test-current test-oldest lint typecheck pytest e2e-services demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (PYTHON=$(PYTHON))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(CONSTRAINTS),$(BIN)/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" --constraint "$(CONSTRAINTS)")
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" "apache-airflow==$(AIRFLOW_VERSION)"
	@rm -f $(VENV)/.installed-airflow-* && touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy airflow_provider_dli tests benchmarks scripts example_dags

pytest: install $(E2E_SERVICES)
	$(BIN)/pytest

# redis-server and PostgreSQL for the Celery topology of tests/e2e: installed with apt-get when missing and
# when root (as CI runs); otherwise that topology is skipped, and says why.
e2e-services:
	@bash tests/e2e/install_services.sh

test-current: lint typecheck pytest

test-oldest:
	$(MAKE) --no-print-directory VENV=.venv-oldest AIRFLOW_VERSION=$(OLDEST_AIRFLOW_VERSION) \
		EXTRAS=test,openlineage E2E_SERVICES= pytest

# Both passes at once: the end-to-end suite of the current pass spends most of its time waiting on a real
# deployment (heartbeat timeouts, triggers), which the oldest pass fills; each pass's output is kept together.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=recurse test-current test-oldest

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python -m pip install --quiet -e ".[test,openlineage,bench]" "apache-airflow==$(AIRFLOW_VERSION)"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf .venv .venv-oldest .demo .bench .mypy_cache .ruff_cache .pytest_cache
