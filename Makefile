# localimg developer tasks. `make install` sets up .venv with the right torch for this machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch unless an NVIDIA GPU is present (then pip's default CUDA build).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
EXTRAS ?= test

.PHONY: install install-ggml test lint docs format bench gallery gallery-check clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"

install-ggml:  # compiles stable-diffusion.cpp (minutes); see README for CMAKE_ARGS
	$(BIN)/pip install -e ".[ggml]"

test:
	$(BIN)/python -m pytest

docs:  # the documentation site (mkdocs.yml, docs/) into site/; warnings are errors
	$(BIN)/mkdocs build --strict

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
