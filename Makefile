# Two commands do everything on a fresh machine (see README):
#   make train   — the CPU-sized default training run (papermill nbs/train.ipynb → runs/local/default)
#   make test    — what CI runs: notebooks clean, library in sync, nbdev_test, pytest
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# git-ignored, so that the committed reference runs/default stays put
RUN ?= runs/local/default
PARAMS ?=
# OpenMP threads that spin while waiting slow torch down badly on a shared 2-core machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup train test

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

train: setup
	mkdir -p $(RUN)
	$(BIN)/papermill -k python3 --cwd . --log-output --no-progress-bar nbs/train.ipynb $(RUN)/train.ipynb -p out_dir $(RUN) $(PARAMS)

test: setup
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh
