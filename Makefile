# Setup on a fresh machine (Python 3.11, pip, gcc): `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: install install-dev demo test test-slow lint demo-weights expected-output container-test clean

$(STAMP): requirements.txt requirements-torch.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_QUIET) -r requirements-torch.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install $(PIP_QUIET) -r requirements.txt -r requirements-torch.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install $(PIP_QUIET) --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, nnunetv2, SimpleITK, picai_eval, report_guided_annotation, evalutils, pdac"
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PIP) install $(PIP_QUIET) -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import pytest, hypothesis"
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

## The main job on the bundled sample with the bundled (synthetic demo) weights.
demo: $(STAMP)
	rm -rf demo-output
	$(PY) process.py --input test/input --output demo-output/gc
	$(VENV)/bin/pdac detect test/input/images/venous-ct -o demo-output/detect --overlays --report
	@echo "GC outputs: demo-output/gc  |  detect outputs + overlay PNG: demo-output/detect"
	@echo "HTML report (open in a browser): demo-output/detect/report.html"

test: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-slow: $(DEV_STAMP)
	$(PY) -m pytest -q -m slow

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

## Retrain the demo weights from synthetic phantoms on the CPU (about 51 min on 2 idle cores; see README).
demo-weights: $(STAMP)
	$(PY) -m pdac.lab.demo_weights

## Container smoke test (needs docker, or podman + buildah; BASE_IMAGE may point at a local base).
container-test:
	./test.sh --model-mount

## Regenerate test/output (the expected GC outputs for test/input) after the weights changed on purpose.
expected-output: $(STAMP)
	rm -rf test/output
	$(PY) process.py --input test/input --output test/output

clean:
	rm -rf demo-output .pytest_cache .ruff_cache
