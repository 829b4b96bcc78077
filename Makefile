# Two commands on a fresh machine (Python 3.11, pip, make): `make demo`, then `make test`.
# Both create .venv themselves. uv installs Airflow's ~200 dependencies in seconds, not minutes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo airflow airflow-celery test test-af2 test-floors lint docs bench faults clean

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -r requirements-dev.txt -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

airflow: $(STAMP)
	$(BIN)/python scripts/airflow_stack.py

# The same on CeleryExecutor: PostgreSQL, Redis, moto S3 and two Celery workers, all on 127.0.0.1 (installs
# the first two with scripts/install_services.sh when missing); Ctrl-C stops every process it started.
airflow-celery: $(STAMP)
	bash scripts/install_services.sh
	$(BIN)/python scripts/celery_stack.py

test: $(STAMP)
	$(BIN)/python -m pytest

# The same unit, integration and dag.test() suites on Airflow 2.11, in a venv of its own.
AF2_VENV := .venv-af2
AF2_BIN := $(AF2_VENV)/bin
AF2_STAMP := $(AF2_VENV)/.installed

$(AF2_STAMP): pyproject.toml requirements-af2.txt
	test -x $(AF2_BIN)/python || $(PYTHON) -m venv $(AF2_VENV)
	$(AF2_BIN)/python -m pip install -q uv==0.13.9
	$(AF2_BIN)/uv pip install -q --python $(AF2_BIN)/python --compile-bytecode -r requirements-af2.txt -e .
	touch $(AF2_STAMP)

test-af2: $(AF2_STAMP)
	$(AF2_BIN)/python -m pytest tests/unit tests/integration tests/e2e tests/faults -q

# The lowest versions pyproject.toml admits: every direct dependency (extras included) pinned at its declared
# floor by an override file, the rest resolved lowest-direct; then the unit, integration and dag.test() suites.
FLOORS_VENV := .venv-floors
FLOORS_BIN := $(FLOORS_VENV)/bin
FLOORS_STAMP := $(FLOORS_VENV)/.installed

$(FLOORS_STAMP): pyproject.toml requirements-floors.txt scripts/floors.py
	test -x $(FLOORS_BIN)/python || $(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_BIN)/python -m pip install -q uv==0.13.9 packaging
	$(FLOORS_BIN)/python scripts/floors.py $(FLOORS_VENV)/floors.txt
	$(FLOORS_BIN)/uv pip install -q --python $(FLOORS_BIN)/python --compile-bytecode --resolution lowest-direct \
		--constraint $(FLOORS_VENV)/floors.txt -r requirements-floors.txt -e '.[openlineage,s3]'
	touch $(FLOORS_STAMP)

test-floors: $(FLOORS_STAMP)
	$(FLOORS_BIN)/python -m pytest tests/unit tests/integration tests/e2e -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/deptry airflow_provider_cex
	$(BIN)/lint-imports

# The documentation site (docs/, Sphinx + MyST + autoapi) in .venv-docs; warnings are errors.
docs:
	bash scripts/build_docs.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/import_cost.py

# The full fault matrix (~400 seeded runs, about 5 minutes, loopback only); CI runs one seed per cell.
faults: $(STAMP)
	$(BIN)/python -m benchmarks.fault_matrix --seeds 6 --check

clean:
	rm -rf $(VENV) $(AF2_VENV) $(FLOORS_VENV) .venv-docs docs/_build .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
