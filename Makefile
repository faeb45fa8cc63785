# hivcomorb: make run, make test and friends.
# Each target creates .venv and installs the locked dependencies when missing.

SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= demo
UV_VERSION := 0.13.8
# Python 3.12 is preferred: the newest numpy, xgboost and shap need it.
PYTHON_FOR_VENV ?= $(shell for c in python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null) python3; do \
	if $$c -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' >/dev/null 2>&1; then echo $$c; break; fi; done)
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
QUICK_FLAG := $(if $(filter 1 yes true,$(QUICK)),--quick,)
DEVICE ?= auto

.PHONY: help venv run test nhanes score bench mlflow-ui clean

help:
	@echo "make run [DATA=demo|nhanes] [QUICK=1]   run the whole pipeline, write reports/<DATA>/"
	@echo "make test                               run the test suite"
	@echo "make nhanes                             build the canonical NHANES extract"
	@echo "make score [EXTRACT=file]               score an extract with the registered champion"
	@echo "make bench                              run the benchmarks in bench/"
	@echo "make mlflow-ui                          browse the tracked runs"

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON_FOR_VENV)" || { echo "No Python 3.11+ found; install python3.12 and retry." >&2; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON_FOR_VENV)"
	test -x $(BIN)/python || $(PYTHON_FOR_VENV) -m venv $(VENV)
	if $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"; then \
		$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.lock \
		&& $(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e . ; \
	else \
		$(BIN)/python -m pip install --quiet -r requirements.lock \
		&& $(BIN)/python -m pip install --quiet --no-deps -e . ; \
	fi
	rm -f $(VENV)/.installed-*
	touch $@

run: venv
	$(BIN)/hivcomorb run --config $(DATA) --device $(DEVICE) $(QUICK_FLAG)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

nhanes: venv
	$(BIN)/hivcomorb adapt nhanes

EXTRACT ?= artifacts/demo/score-demo/extract.csv
SCORE_OUT ?= reports/demo/scores.parquet
score: venv
	@test -f "$(EXTRACT)" || $(BIN)/hivcomorb synth --n-patients 1000 --seed 7 --out "$(EXTRACT)"
	$(BIN)/hivcomorb score "$(EXTRACT)" --model models:/hivcomorb-$(DATA)-aware@champion-aware --out "$(SCORE_OUT)"

bench: venv
	$(BIN)/python bench/run_all.py

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow/mlflow.db" --host 127.0.0.1 --port 5000

clean:
	rm -rf artifacts mlflow reports/*/
