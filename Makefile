# Paceline: the two commands of the README.
#   make run   - everything on the embedded defaults: PostgreSQL, stand-ins, BigQuery emulator, Airflow UI
#   make test  - the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
VENV := .venv
BQ_VENV := .venv-bq
STAMP := $(VENV)/.paceline-installed
BQ_STAMP := $(BQ_VENV)/.paceline-installed
PYTEST_ARGS ?=

.PHONY: run test venv lint bench clean-local compose-tool

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

$(BQ_STAMP): requirements-bqemulator.txt scripts/setup-bq-emulator.sh
	bash scripts/setup-bq-emulator.sh
	@touch $(BQ_STAMP)

venv: $(STAMP) $(BQ_STAMP)

run: venv
	$(VENV)/bin/python -m paceline run

# docker-compose (Debian's package) renders docker-compose.yaml for its tests; no engine needed.
compose-tool:
	bash scripts/apt-install.sh docker-compose docker-compose

test: venv compose-tool
	@# Debian's Chromium for the browser test (Playwright, from requirements-dev.txt, drives it).
	@bash scripts/apt-install.sh chromium chromium
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: a broken suite counts as a failure"; exit 1; fi; \
	exit $$rc

lint: venv
	$(VENV)/bin/ruff check include dags plugins tests bench

clean-local:
	rm -rf var
