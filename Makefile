# WeakSeg quick start: `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch first, so pip never pulls a multi-GB CUDA build on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_output

.PHONY: setup demo test unit lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/weakseg demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q Testing

unit: setup
	$(PY) -m pytest -q -m "not slow and not integration and not data" Testing

lint: setup
	$(VENV)/bin/ruff check WeakSegLib WeakSeg Testing

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
