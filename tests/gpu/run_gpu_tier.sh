#!/usr/bin/env bash
# The GPU tier in two steps.
#   tests/gpu/run_gpu_tier.sh prepare DIR   where the project is installed: models in float16,
#                                           the wheels the tier needs (tests/gpu/prepare.py)
#   tests/gpu/run_gpu_tier.sh run DIR       on the GPU machine (Python 3.11 with a CUDA torch):
#                                           installs the wheels offline, runs tests/gpu, then the
#                                           batching benchmark into benchmarks/results/gpu_batching.json
# Neither Ray nor vLLM is needed. PYTHON picks the interpreter (default: python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
STEP="${1:?usage: run_gpu_tier.sh prepare|run DIR}"
DIR="$(mkdir -p "${2:?usage: run_gpu_tier.sh prepare|run DIR}" && cd "$2" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT"
case "$STEP" in
  prepare)
    "$PYTHON" tests/gpu/prepare.py "$DIR" "${@:3}"
    ;;
  run)
    "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
    if [ -d "$DIR/wheels" ]; then
      "$PYTHON" -m pip install --no-index --find-links "$DIR/wheels" -r "$DIR/requirements.txt"
    fi
    MAAS_GPU_TIER_DIR="$DIR" "$PYTHON" -m pytest tests/gpu -q -rs -p no:cacheprovider \
      --confcutdir=tests/gpu -o addopts=""
    "$PYTHON" -m benchmarks.gpu_batching --model-dir "$DIR/models/classifier" \
      --out benchmarks/results/gpu_batching.json
    ;;
  *) echo "unknown step $STEP (prepare|run)" >&2; exit 2 ;;
esac
