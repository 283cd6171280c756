# esml: two commands matter: `make demo` and `make test`. Both build .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
ESML_DATA_DIR ?= ../shared/data

.PHONY: demo test lint bench validate models synth venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned Python dependencies into $(VENV) (first run only)"
	@$(PY) -m pip install -q -e '.[ml,aws,dev]' 2>&1 | grep -v 'is ignored: it is neither a file nor a directory' || true
	@$(PY) -c 'import esml, xgboost, torch, onnxruntime, aws_cdk, moto' || (echo 'dependency install failed' && exit 1)
	@touch $(STAMP)

$(NODE_STAMP): package.json
	@echo "installing the pinned CDK CLI (npm)"
	@npm install --no-audit --no-fund --silent
	@touch $(NODE_STAMP)

venv: $(STAMP) $(NODE_STAMP)

demo: venv
	$(VENV)/bin/esml demo

# one worker per core; a test file stays on one worker (its module fixtures start servers once)
test: venv
	$(PY) -m pytest -n auto --dist loadfile

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) -m bench.run

# books against LOBSTER's own orderbook files, ES MBO checks, simulator vs real data
validate: venv
	$(PY) -m esml.evaluation.market_validation --data-dir $(ESML_DATA_DIR)

# the shipped champion: the whole stack (trees, three nets, regime classifier, ensemble) as
# one bundle under models/, on 3 SYNTHETIC days anyone can regenerate; 10-15 min on 2 cores.
# --force: it does not beat the baselines, and its manifest, `esml demo` and the status line say so
models: venv
	$(PY) training/train.py --local --stack --synthetic-days 3 --keep 1 --out models --force

synth: venv
	npx cdk synth --quiet

clean:
	rm -rf cdk.out .pytest_cache reports
