# `make demo` and `make test` set everything up on a fresh machine, then run.
# torch is installed first and pinned: on this machine kind `pip install torch==2.13.0` takes the CPU
# build lying on disk; any other spelling pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.halign-installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo demo-quick test test-unit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/halign demo --out runs/demo

demo-quick: setup
	$(VENV)/bin/halign demo --out runs/demo-quick --quick

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
