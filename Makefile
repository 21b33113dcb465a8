# seqbench — every command a user needs. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
STUDY ?= cells
export SEQBENCH_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: help install run test test-fast ui bench sweep report reproduce tune clean cluster-up cluster-down

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	# torch first, exactly pinned: a CPU wheel here, never an accidental multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install seqbench with its test tools

run: install  ## the default job: char-LM on the synthetic corpus, tracked in MLflow (~2 min)
	$(BIN)/python -m seqbench $(ARGS)

# one pytest-xdist worker per core; a test file's tests stay on one worker (a file shares its fixtures:
# the SLURM cluster, the MLflow server)
XDIST := -n auto --dist loadfile

test: install  ## the whole test suite, one worker per core (offline)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install  ## the suite without the end-to-end runs marked slow: the edit loop
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

ui: install  ## MLflow UI over the project's store (or $$MLFLOW_TRACKING_URI) on 127.0.0.1:$(PORT)
	@echo "experiments (seqbench = single runs, seqbench/<study> = a study): http://127.0.0.1:$(PORT)/#/experiments"
	$(BIN)/mlflow ui --backend-store-uri $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db) --host 127.0.0.1 --port $(PORT)

sweep: install  ## run a study: make sweep STUDY=cells (pipelines/<study>.yaml; LAUNCHER=local|slurm|basic)
	$(BIN)/python -m seqbench.sweep $(STUDY) --launcher $(or $(LAUNCHER),local) $(ARGS)

report: install  ## comparison report of a study from MLflow -> reports/<study>/report.{md,html}
	$(BIN)/python -m seqbench.report $(STUDY) $(ARGS)

reproduce: install  ## published vs measured: make reproduce RECIPE=tinyshakespeare (default: every recipe; SIZE=cpu|full) -> reports/reproduce/
	$(BIN)/python -m seqbench.reproduce $(RECIPE) --size $(or $(SIZE),cpu) --launcher $(or $(LAUNCHER),local) $(ARGS)

tune: install  ## optuna search of lr and hidden size per cell: make tune MODEL=rnn,gru TRIALS=20 (resumable)
	$(BIN)/python -m seqbench.tune --trials $(or $(TRIALS),10) model=$(or $(MODEL),rnn,lstm,peephole,cifg,gru) $(ARGS)

bench: install  ## benchmarks -> benchmarks/results/*.md
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

cluster-up: install  ## a single-node SLURM + PostgreSQL-backed mlflow server here (root; then: eval "$$(scripts/cluster env)")
	scripts/cluster up

cluster-down:  ## stop what cluster-up started
	scripts/cluster down

clean:  ## remove generated runs, stores and caches (keeps .venv)
	rm -rf outputs multirun mlruns mlartifacts mlflow.db optuna.db .cache lightning_logs reports
