# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build .venv once. The CPU wheel of torch is installed first where it
# exists (torch==2.13.0 lies on this kind of machine's disk); otherwise the
# CPU index of pytorch.org is used, so a multi-GB CUDA build is never pulled.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test lint docs bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_CPU)" \
	  || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e ".[test,experiments,tensorboard,dev,lightning,docs,huggingface,mlflow,wandb]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/polynomial_regression.py --out runs/polynomial_regression

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check lazymeter tests examples benchmarks
	$(VENV)/bin/ruff format --check lazymeter tests examples benchmarks

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(VENV)/.installed
	$(PY) benchmarks/ntk_speed.py
	$(PY) benchmarks/meter_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs site
