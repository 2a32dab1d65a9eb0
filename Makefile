# Entry points (README "Quick start"):
#   make reports   set up .venv if missing, print the stages `dvc repro` will run with their last durations, then
#                  run them (every stage at study scale; each finished stage is kept)
#   make test      set up .venv if missing, then ruff + mypy + unit tests + nbval on every notebook
#   make test-fast the same without the slow tests (DVC queue, torchrun, browser: pytest -m slow)
#   make paper     every chapter at the papers' budgets (for a GPU), at most MINUTES of training per call;
#                  exits with status 75 "not finished" until done: repeat the same call
MINUTES ?= 8
# DATA_MIRROR (a folder or URL mirroring the data sets) is passed through; unset = official URLs.

PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup reports paper test test-fast lint typecheck clean-scratch

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, papermill, nbval, dvc"  # fail here if the install did not succeed
	$(BIN)/pip install -q --no-deps torchmeta==1.8.0 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import metalearn.datasets.torchmeta_compat, torchmeta"  # fail here if torchmeta is unusable
	$(BIN)/python -m ipykernel install --sys-prefix --name metalearn --display-name "Python (metalearn)" >/dev/null
	touch $@

setup: $(BIN)/.installed

reports: setup
	python -m metalearn.study.pipeline plan
	dvc repro

paper: setup
	python -m metalearn.study.pipeline all --scale paper --minutes $(MINUTES)

lint: setup
	ruff check lib tests notebooks

typecheck: setup
	mypy

test: setup lint typecheck
	pytest --nbval-lax --nbval-kernel-name python3 tests notebooks

test-fast: setup lint typecheck
	pytest -m "not slow" --nbval-lax --nbval-kernel-name python3 tests notebooks

clean-scratch:
	rm -rf scratch
