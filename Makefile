# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test lint clean

$(BIN)/graphmed:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch is pinned here (a loose requirement pulls CUDA wheels);
	# pyproject.toml itself stays permissive for users.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,survset,postgres]"

venv: $(BIN)/graphmed

demo: venv
	$(BIN)/graphmed quickstart --out runs/quickstart

test: venv
	$(BIN)/ruff check graphmed tests tools datasets
	$(BIN)/python -m pytest tests

lint: venv
	$(BIN)/ruff check graphmed tests tools datasets
	$(BIN)/ruff format --check graphmed tests tools datasets

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
