# localimg developer tasks. `make install` sets up .venv with the right torch for this machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch unless an NVIDIA GPU is present (then pip's default CUDA build): on Linux a plain
# `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
EXTRAS ?= test
# stable-diffusion.cpp is compiled on install. GGML_NATIVE=OFF builds for any x86-64 CPU with AVX2
# instead of this machine's exact CPU (docs/install.md: CUDA, Metal and Vulkan builds).
ifeq ($(strip $(CMAKE_ARGS)),)
CMAKE_ARGS := -DGGML_NATIVE=OFF
endif

.PHONY: install install-ggml install-chromium test test-fast lint docs format bench gallery \
	gallery-check clean

# Everything the tests need: the venv with torch, localimg[test], the ggml extra and chromium.
# chromium first: a machine that cannot install it stops before the long pip work.
install: install-chromium
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	$(MAKE) install-ggml

# Compiles stable-diffusion.cpp (~2.5 min on 2 cores). --no-cache-dir keeps pip from reusing a
# wheel built natively elsewhere (it would die with SIGILL on another CPU).
install-ggml:
	CMAKE_ARGS='$(CMAKE_ARGS)' $(BIN)/pip install --no-cache-dir -e ".[ggml]"

# The web page's browser tests drive Debian's chromium (Playwright's own download is not used).
install-chromium:
	scripts/install-chromium.sh

# The suite in parallel: a worker per core (tests/conftest.py decides how many and pins each to
# its cores), each test file whole on one worker so a module's server starts once.
PYTEST_PARALLEL ?= -n auto --dist loadfile

test:
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

test-fast:  # without the slow tests and the serve --ray ones (they start a Ray cluster)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow and not ray"

docs:  # the documentation site (mkdocs.yml, docs/) into site/; warnings are errors
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict  # (the variable hides a release banner)

lint:
	$(BIN)/ruff check localimg tests bench
	$(BIN)/ruff format --check localimg tests bench
	$(BIN)/mypy

format:
	$(BIN)/ruff format localimg tests bench
	$(BIN)/ruff check --fix localimg tests bench

bench:  # every benchmark; writes bench/RESULTS.md (BENCH_ARGS=--quick: tiny models, minutes)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

gallery:  # regenerate gallery/index.yaml from gallery/models/*.yaml and gallery/templates/
	$(BIN)/python -m localimg.gallery.build build

gallery-check:  # schema, unique names, sha256 (or a reason), templates resolve, index fresh
	$(BIN)/python -m localimg.gallery.build check

clean:
	rm -rf .test-cache .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
