# make demo: a study on the embedded default model; make test: lint, types and the test suite.
# Both create the virtualenv on first use (about 2 minutes: torch is the big part).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the pair that imports together (and that pip finds on the dev machines' disk).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/autolora tune --trials 8 --out runs/demo
	$(BIN)/autolora export runs/demo --out runs/demo/export

lint: $(VENV)/.installed
	$(BIN)/ruff check autolora tests benchmarks
	$(BIN)/ruff format --check autolora tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/trial_overhead.py

clean:
	rm -rf runs mlflow.db mlruns
