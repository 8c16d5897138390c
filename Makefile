# Setup on a fresh machine (Python 3.11, pip, gcc): `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PIP_QUIET := --quiet --disable-pip-version-check

# sagemaker-shim (Grand Challenge's runtime wrapper) needs Python 3.12: its own venv, for tests/test_gc_shim.py.
SHIM_VENV := .venv-shim
SHIM_STAMP := $(SHIM_VENV)/.installed
# The newest Python 3.12 on PATH or under pyenv (its real path, not a pyenv shim); empty when none.
SHIM_PYTHON ?= $(shell for p in python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12.*/bin/python3.12 \
	2>/dev/null | sort -rV); do "$$p" -c 'import sys; sys.version_info[:2] == (3, 12) and print(sys.executable)' \
	2>/dev/null && break; done)

.PHONY: install install-dev shim-env demo test test-slow lint demo-weights expected-output container-test clean

$(STAMP): requirements.txt requirements-torch.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_QUIET) -r requirements-torch.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install $(PIP_QUIET) -r requirements.txt -r requirements-torch.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install $(PIP_QUIET) --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, nnunetv2, SimpleITK, picai_eval, report_guided_annotation, evalutils, highdicom, pynetdicom, pdac"
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PIP) install $(PIP_QUIET) -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import pytest, hypothesis"
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

## sagemaker-shim + moto's S3 server (requirements-shim.txt) in .venv-shim. Without a Python 3.12 it says
## so and installs nothing: tests/test_gc_shim.py is then skipped.
$(SHIM_STAMP): requirements-shim.txt
	@py="$(SHIM_PYTHON)"; \
	if [ -z "$$py" ]; then \
	  echo "note: no Python 3.12 (python3.12 on PATH or under pyenv; or set SHIM_PYTHON=...):" \
	       "sagemaker-shim is not installed and tests/test_gc_shim.py will be skipped"; \
	  exit 0; \
	fi; \
	set -e; \
	echo "$(SHIM_VENV): sagemaker-shim and moto with $$py"; \
	if ! $(SHIM_VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then \
	  rm -rf $(SHIM_VENV); "$$py" -m venv $(SHIM_VENV); \
	fi; \
	{ $(SHIM_VENV)/bin/pip install $(PIP_QUIET) -r requirements-shim.txt 2>&1 | grep -v "^WARNING: Location" || true; }; \
	$(SHIM_VENV)/bin/python -c "import sagemaker_shim.cli, moto.server, boto3"; \
	touch $@

shim-env: $(SHIM_STAMP)

## The main job on the bundled sample with the bundled (synthetic demo) weights.
demo: $(STAMP)
	rm -rf demo-output
	$(PY) process.py --input test/input --output demo-output/gc
	$(VENV)/bin/pdac detect test/input/images/venous-ct -o demo-output/detect --overlays --report
	@echo "GC outputs: demo-output/gc  |  detect outputs + overlay PNG: demo-output/detect"
	@echo "HTML report (open in a browser): demo-output/detect/report.html"

test: $(DEV_STAMP) $(SHIM_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-slow: $(DEV_STAMP)
	$(PY) -m pytest -q -m slow

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

## Demo weights: procedural phantoms first (the bundled recipe), then both stages on CT painted from real label maps
## (LABELMAPS: one sub-folder per source, docs/synthetic-data.md), stage 2 starting from the phantom lesion model.
LABELMAPS ?= ../shared/data/labelmaps
demo-weights: $(STAMP)
	$(PY) -m pdac.lab.demo_weights --phantoms --work work/demo-phantoms --out work/weights-phantoms \
	    --stage1-epochs 60 --stage2-epochs 150
	$(PY) -m pdac.lab.demo_weights --labelmaps $(LABELMAPS) --work work/demo --out work/weights-labelmaps \
	    --stage2-init work/weights-phantoms
	@echo "compare before replacing weights/: scripts/compare-demo-weights.sh weights work/weights-labelmaps"

## Container smoke test (needs docker, or podman + buildah; BASE_IMAGE may point at a local base).
container-test:
	./test.sh --model-mount

## Regenerate test/output (the expected GC outputs for test/input) after the weights changed on purpose.
expected-output: $(STAMP)
	rm -rf test/output
	$(PY) process.py --input test/input --output test/output

clean:
	rm -rf demo-output .pytest_cache .ruff_cache $(SHIM_VENV)
