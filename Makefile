# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install everything on first use; later runs reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Datasets: an explicit HYREC_DATA_DIR wins; a development checkout falls back to ../shared/data;
# otherwise hyrec downloads from the official source into the user cache.
export HYREC_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
# implicit's ALS threads itself; BLAS threads on top of it oversubscribe 2 cores.
export OPENBLAS_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test lint eval
install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/hyrec demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

eval: install
	$(BIN)/hyrec eval --dataset ml-100k --out eval/results
