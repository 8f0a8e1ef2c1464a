# Two commands do everything on a fresh machine (see README):
#   make train   — the CPU-sized default training run (papermill nbs/train.ipynb → runs/local/default), on 2 threads
#   make test    — what CI runs: notebooks clean, library in sync, nbdev_test, pytest
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# git-ignored, so that the committed reference runs/default stays put
RUN ?= runs/local/default
PARAMS ?=
# OpenMP threads that spin while waiting slow torch down badly on a shared 2-core machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup browser train test

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

# headless Chromium for tests/test_browser.py (only the tests need it, not make train)
browser:
	@# Debian's chromium and chromium-driver, where chromedriver is missing
	@if [ ! -x /usr/bin/chromedriver ]; then \
	  if ! command -v apt-get >/dev/null; then echo "no apt-get here: install chromium and chromedriver into /usr/bin" \
	    "yourself (tests/test_browser.py skips without them, and fails under CI)"; exit 0; fi; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); set -x; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	fi

train: setup
	mkdir -p $(RUN)
	$(BIN)/papermill -k python3 --cwd . --log-output --no-progress-bar nbs/train.ipynb $(RUN)/train.ipynb -p out_dir $(RUN) -p threads 2 $(PARAMS)

test: setup browser
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh
