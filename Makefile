# Two commands do all the set-up on a fresh machine:
#   make train   create .venv if missing, train the default model on real MNIST within TIME_BUDGET, export it
#                (DATASET=fashion_mnist, kmnist, emnist/digits or emnist/mnist: that data set instead)
#   make test    create .venv if missing, run the whole test suite (fast and slow tests)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data set: mnist, or another TFDS name mnist-tf train --dataset takes (a folder: set RUN_DIR too).
DATASET ?= mnist
RUN_DIR ?= runs/$(if $(filter mnist,$(DATASET)),default,$(DATASET))
EXPORT_DIR ?= export$(if $(filter mnist,$(DATASET)),,/$(DATASET))
# make train's fit time: the default preset's epochs are planned to fit it on this CPU (mnist-tf train --time-budget);
# Fashion-MNIST's `default` is a network three times as large, trained twice as long.
TIME_BUDGET ?= $(if $(filter fashion_mnist,$(DATASET)),15m,10m)
# Offline machines: the data set's archives (see README, "Offline data"), the first of these folders that
# exists: ../shared/datasets/NAME, and for Fashion-MNIST Debian's package dataset-fashion-mnist.
MANUAL_DIRS := ../shared/datasets/$(DATASET) $(if $(filter fashion_mnist,$(DATASET)),/usr/share/datasets/fashion-mnist)
MANUAL_DIR ?= $(firstword $(wildcard $(MANUAL_DIRS)))
MANUAL_FLAG := $(if $(MANUAL_DIR),--manual-dir $(MANUAL_DIR),)
DATASET_FLAG := $(if $(filter mnist,$(DATASET)),,--dataset $(DATASET))

.PHONY: install train export test test-fast lint benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

train: install
	$(BIN)/mnist-tf train --run-dir $(RUN_DIR) --time-budget $(TIME_BUDGET) $(DATASET_FLAG) $(MANUAL_FLAG)
	$(BIN)/mnist-tf export --model $(RUN_DIR) --out $(EXPORT_DIR) --tflite $(MANUAL_FLAG)

# Every benchmark part, preset and 3 seeds (about 40 min on 2 cores); see docs/performance.md.
benchmark: install
	$(BIN)/mnist-tf benchmark --out runs/benchmark $(MANUAL_FLAG)

# Tests run in one process per core, at most 4 (TEST_WORKERS=1: one process); a test file stays in one process.
# The 15 slowest tests are listed at the end, so a slow CPU's run shows where its time went.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations 15

test: install
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

# Lint, formatting and the package's layers, as CI checks them (settings: pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .cache .pytest_cache
