# Two entry points a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BSTAMP := $(VENV)/.installed-bench
PIPELINE ?= configs/pipeline/sim-local.yaml
DURATION ?= 30

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml deploy/constraints.txt deploy/test-oracles.txt scripts/setup-system.sh
	scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the local CPU wheel, never a multi-GB CUDA download.
	$(BIN)/pip install --quiet torch==2.13.0
	# Every other dependency at the version CI and the images use (deploy/constraints.txt).
	$(BIN)/pip install --quiet -c deploy/constraints.txt -e '.[dev]'
	# Reference implementations the tests compare against, without their dependencies (see the file).
	$(BIN)/pip install --quiet --no-deps -r deploy/test-oracles.txt
	touch $@

$(BSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -c deploy/constraints.txt -e '.[dev,bench]'
	touch $@

# The main job: simulated camera, microphone and LiDAR on a local Ray, predictions as JSON lines.
run: $(STAMP)
	$(BIN)/fusion run --config $(PIPELINE) --duration $(DURATION) --output -

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(BSTAMP)
	$(BIN)/python benchmarks/model.py
	$(BIN)/python benchmarks/sensors.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
