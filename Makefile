# Two commands do all set-up on a fresh machine (README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pins: the pair with a working torchvision on this project's machines (installed
# from their local wheel cache; the torch wheel bundles CUDA libraries, so .venv is about 6 GB).
# On a GPU node pick the build for your CUDA, e.g. `make venv TORCH="torch torchvision"`.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv test lint demo

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(PY) -m ruff check .

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest

demo: venv
	$(PY) demo.py --out-dir runs/demo
