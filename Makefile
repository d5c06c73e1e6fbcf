# Two entry points for a fresh machine (see README): `make audit` and `make test`.
# Both create the virtual environment first if it is missing or older than pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Jobs call `python -m rankbias`: the environment's interpreter must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: audit test setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch 2.13.0 first: an unpinned torch would pull a multi-GB CUDA build on CPU-only machines
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,lint,slurm]"
	touch $@

audit: setup
	$(BIN)/snakemake --cores all

test: setup
	$(BIN)/python -m pytest
