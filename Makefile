# dessam: make install | demo | test | bench
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# torch/torchvision are pinned to the releases that pip can take from a local wheel store or
# PyPI; any torch >= 2.1 works with dessam.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/qt_system_libs.sh
	sh scripts/qt_system_libs.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[test]"
# HoVer-Net's reference metrics, installed without its pinned dependencies; only tests use it
	$(PY) -m pip install -q --no-deps hover-net==0.0.10
	touch $(STAMP)

demo: install
	$(VENV)/bin/dessam demo --out demo_output

test: install
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/dessam bench

clean:
	rm -rf $(VENV) demo_output .pytest_cache
