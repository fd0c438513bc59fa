# The README's commands. Each installs what it needs into .venv first (from constraints.txt).
# Installed with its bytecode compiled: where PYTHONDONTWRITEBYTECODE is set (as on this project's
# machines), every Python process would otherwise compile DVC, Optuna and the rest from source on each
# import (`python -m dvc version`: 2.3 s against 1.0 s here), and the suite starts thousands of them.
# The Makefile is a prerequisite of the install: a change to how it installs reaches existing venvs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.mlci-installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install demo test test-wheel smoke lint dist bench bench-quick airflow docker-pins constraints clean

help:
	@echo "make demo    run the demo DAG end to end (SQLite, local git + DVC remotes, local compute)"
	@echo "make test    the whole suite: lint, tests, packaging checks, benchmarks in quick mode"
	@echo "make test-wheel  the built wheel alone in a clean virtualenv runs three example DAGs"
	@echo "make smoke   the smoke tests on the other supported Airflow + Python combinations"
	@echo "make airflow Airflow UI with the example DAGs (airflow standalone)"
	@echo "make bench   benchmarks: our path and the baseline side by side, ratios printed"

install: $(STAMP)

$(STAMP): constraints.txt setup.cfg pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 airflow_provider_mlci > /dev/null
	@touch $@

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Three workers (much of a DAG test is waiting: three keep two cores busy), each with its own Airflow
# home and database; a file's tests stay on one worker, the slowest files first (tests/conftest.py,
# SLOWEST_FIRST). Then, alone, the production topology (Postgres, Redis, Celery workers as users of
# their own: tests/integration/test_deployment.py).
test: $(STAMP) lint
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder -m "not deployment"
	$(BIN)/python -m pytest -m deployment
	$(MAKE) --no-print-directory dist
	$(MAKE) --no-print-directory bench-quick

# The wheel alone (its own requirements, constraints.txt, no dev extra, no source tree) in a new
# virtualenv under $TMPDIR runs the validation, repro and report examples (~2 min; CI runs it after test).
test-wheel: $(STAMP)
	$(BIN)/python scripts/test_wheel.py

# The tests marked smoke on Airflow 3.1 + Python 3.11, 3.2 + 3.12 and 3.3 + 3.13, each in its own
# virtualenv under .venv-smoke/ from constraints/ (~3.5 min; CI runs it after test; SMOKE= picks).
SMOKE ?= airflow-3.1-python-3.11 airflow-3.2-python-3.12 airflow-3.3-python-3.13
smoke: $(STAMP)
	$(BIN)/python scripts/smoke.py $(SMOKE)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir dist . > /dev/null
	$(BIN)/twine check --strict dist/*

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

airflow: $(STAMP)
	$(BIN)/python scripts/airflow_ui.py

docker-pins: $(STAMP)
	$(BIN)/python scripts/image_pins.py

constraints:
	$(BIN)/uv pip compile --quiet -p 3.11 setup.cfg --extra dev --no-annotate --no-header -o constraints.tmp
	{ echo "# Pins that install together on Python 3.11 (Linux x86_64). Regenerate with: make constraints"; cat constraints.tmp; } > constraints.txt
	rm constraints.tmp
	$(BIN)/python scripts/smoke.py --compile $(SMOKE)

clean:
	rm -rf $(VENV) .venv-smoke .demo dist build *.egg-info .pytest_cache
