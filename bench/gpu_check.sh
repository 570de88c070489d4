#!/usr/bin/env bash
# GPU check of issue #12: prune SmolLM2 (and qwen2.5-coder-0.5b once its alias exists) with
# wanda and sparsegpt +R on CUDA in bfloat16 and float32, compare the perplexity with the
# CPU float32 result, print tokens/s and peak memory. Under 10 minutes on one GPU.
#
#   bash bench/gpu_check.sh                       # writes bench/gpu_check_output.md
#   DEVICE=cuda:1 DTYPES=bfloat16 bash bench/gpu_check.sh
#
# CPU references are read from bench/gpu_check_cpu.json when its settings match (write it on
# a CPU machine with: python bench/gpu_check.py --device cpu --dtypes float32
# --write-reference bench/gpu_check_cpu.json), else computed here first (a few minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
DTYPES=${DTYPES:-bfloat16,float32}
MODELS=${MODELS:-smollm2-135m,qwen2.5-coder-0.5b}
OUT=${OUT:-bench/gpu_check_output.md}

if [[ "$DEVICE" == cuda* ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available here; nothing to check (use DEVICE=cpu for a smoke run)" >&2
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PYTHON" bench/gpu_check.py --device "$DEVICE" --dtypes "$DTYPES" --models "$MODELS" \
    --cpu-reference bench/gpu_check_cpu.json --json "${OUT%.md}.json" "$@" | tee "$OUT"
