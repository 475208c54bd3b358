# Two commands do all the set-up on a fresh machine:
#   make reproduce   create .venv, install, run the course's main job on the embedded rooms set
#   make test        create .venv if missing, install, lint, run pytest (unit tests + nbval on notebooks/)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.depthlib-installed
# torch/torchvision are pinned because these exact builds are served from local disk on the
# course's build machine; any recent torch works elsewhere (see README).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
LINT_PATHS := depthlib tests benchmarks notebooks
PROFILE ?= cpu

.PHONY: install test lint reproduce bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) 2>&1 | sed '/is ignored: it is neither/d'
	$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | sed '/is ignored: it is neither/d'
	$(BIN)/python -c "import torch, torchvision, segmentation_models_pytorch, depthlib"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test: lint
	rc=0; HF_HUB_OFFLINE=1 DEPTHLIB_PROFILE=quick MPLBACKEND=Agg DEPTHLIB_FIGURES=$(CURDIR)/.test-figures \
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider \
	|| rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

reproduce: install
	DEPTHLIB_PROFILE=$(PROFILE) $(BIN)/depthlib reproduce --profile $(PROFILE)

bench: install
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
