# Everything a fresh clone needs: `make quickstart` (main job) and `make test` (lint + tests).
# TORCH_SPEC pins the torch/torchvision pair; override it on a CUDA machine, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install quickstart test lint format proto bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/organseg quickstart

lint: install
	$(BIN)/ruff check platform tests benchmarks scripts
	$(BIN)/ruff format --check platform tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff check --fix platform tests benchmarks scripts
	$(BIN)/ruff format platform tests benchmarks scripts

bench: install
	for b in benchmarks/*_bench.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
