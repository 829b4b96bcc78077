# Two commands on a fresh machine (Python 3.11, pip, make): `make demo`, then `make test`.
# Both create .venv themselves. uv installs Airflow's ~200 dependencies in seconds, not minutes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-af2 lint bench faults clean

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -r requirements-dev.txt -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

airflow: $(STAMP)
	$(BIN)/python scripts/airflow_stack.py

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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/import_cost.py

# The full fault matrix (~400 seeded runs, about 5 minutes, loopback only); CI runs one seed per cell.
faults: $(STAMP)
	$(BIN)/python -m benchmarks.fault_matrix --seeds 6 --check

clean:
	rm -rf $(VENV) $(AF2_VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
