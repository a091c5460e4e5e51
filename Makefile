# Everything a fresh clone needs: `make quickstart` (main job) and `make test` (lint + tests).
# Every package comes from requirements/lock.txt (pinned, with hashes), so a release elsewhere cannot
# change what the tests run against; `make lock` refreshes it on purpose (scripts/lock.sh).
# TORCH_SPEC pins the torch/torchvision pair, which stays out of the lock; override it on a CUDA machine:
#   make test TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
PYTEST_ARGS ?=

.PHONY: install lock quickstart test lint format proto bench clean

# The lock first (exact versions, hashes checked, nothing resolved), then PyTorch, which finds its own
# dependencies already there, then organseg itself without touching what the lock installed.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==26.3
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

install: $(VENV)/.installed

# Re-resolve requirements/lock.txt against today's package index (and the stubs, if grpcio-tools moved).
lock: install
	BIN=$(BIN) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/lock.sh

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

proto: install
	$(BIN)/python scripts/gen_proto.py

bench: install
	for b in benchmarks/*_bench.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
