# avsc — every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev,cpu,pipeline,jax
OUT ?= runs/local

.DEFAULT_GOAL := help

.PHONY: help
help: ## List every target with a one-line description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install avsc with its dev, CPU, pipeline and JAX extras

.PHONY: run
run: $(STAMP) ## Main job: run the whole pipeline locally (kfp.local) on a generated demo dataset
	$(PY) pipeline.py run --local --preset quick --output $(OUT)

.PHONY: test
test: $(STAMP) ## Run the test suite (unit + local whole-pipeline run; cluster e2e tests skipped)
	$(PY) -m pytest -m "not e2e" -q

.PHONY: test-fast
test-fast: $(STAMP) ## Run the fast unit tests only
	$(PY) -m pytest -m "not slow and not e2e" -q

.PHONY: check
check: $(STAMP) ## Lint (ruff), formatting (ruff format --check), types (mypy), the docstring examples and the import order
	@status=0; \
	$(VENV)/bin/ruff check --output-format concise . || status=1; \
	$(VENV)/bin/ruff format --check --output-format concise . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	$(PY) -m pytest --doctest-modules src/avsc -q || status=1; \
	$(PY) scripts/import-graph.py || status=1; \
	exit $$status

.PHONY: demo
demo: $(STAMP) ## Demo data -> ingest -> preprocess with the quick preset, into runs/demo
	$(VENV)/bin/avsc demo-data runs/demo/dataset
	$(VENV)/bin/avsc ingest runs/demo/dataset -o runs/demo/manifest.parquet
	$(VENV)/bin/avsc preprocess runs/demo/manifest.parquet -o runs/demo/features --preset quick

.PHONY: compile
compile: $(STAMP) ## Compile the Kubeflow pipeline to avsc_pipeline.yaml
	$(PY) pipeline.py compile -o avsc_pipeline.yaml

.PHONY: bench
bench: $(STAMP) ## Run every benchmark (prints figures; slow)
	$(PY) bench/preprocess.py
	$(PY) bench/train.py
	$(PY) bench/fusion.py
	$(PY) bench/predict.py
	$(PY) bench/pipeline.py
	KERAS_BACKEND=jax $(PY) bench/gpu.py --device cpu --preset quick --clips 64

.PHONY: clean
clean: ## Remove build outputs and local runs (keeps .venv)
	rm -rf runs build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache avsc_pipeline.yaml

# Cluster, image and kind targets live beside the manifests they drive.
-include mk/*.mk
