# daceml: two commands on a fresh machine.
#   make run   - set everything up, then run the demo (PyTorch CNN -> ONNX -> daceml -> C++)
#   make test  - set everything up, then run the test suite
# Both are idempotent: a second run installs nothing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The install stamp changes whenever what the install depends on changes.
INSTALL_HASH := $(shell cat requirements.txt setup.py csrc/*.cpp scripts/system_packages.sh scripts/install_chromium.sh | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.daceml-installed-$(INSTALL_HASH)
PYTEST_WORKERS ?= 2

.PHONY: setup run test test-all bench conformance clean-cache wheels

setup: $(STAMP)

$(STAMP):
	bash scripts/system_packages.sh
	bash scripts/install_chromium.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -m pip check
	rm -f $(VENV)/.daceml-installed-*
	touch $(STAMP)

run: setup
	$(PY) examples/cnn_demo.py

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q tests

test-all: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "" tests

bench: setup
	$(PY) -m daceml.bench --out reports

conformance: setup
	$(PY) -m daceml.onnx.conformance --jobs 2 --with-fallback --out reports

# wheels of daceml (pure Python), dace and their dependencies for a GPU machine (Python 3.12, no
# network): dist/wheels; scripts/gpu_check.sh installs and runs them there
wheels: setup
	bash scripts/make_wheels.sh dist/wheels

clean-cache:
	rm -rf $${DACEML_CACHE_DIR:-$$HOME/.cache/daceml}
