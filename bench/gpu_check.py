"""The GPU check of issue #12 (run by bench/gpu_check.sh; under 10 minutes on one GPU).

Prunes each model with wanda and sparsegpt +R on ``--device`` in each ``--dtypes``, then
compares the perplexity with the CPU float32 result of the same job (the same calibration
windows and evaluation windows), and prints prune time, evaluation tokens/s and peak
device memory (``torch.cuda.max_memory_allocated``; peak RSS on CPU).

CPU references come from ``--cpu-reference FILE`` when it holds the same settings (write
one with ``--device cpu --dtypes float32 --write-reference FILE``), else they are computed
here first. Models whose alias is unknown or not installed are skipped with a message.

    python bench/gpu_check.py --device cuda --dtypes bfloat16,float32
    python bench/gpu_check.py --device cpu --dtypes float32 --models tiny/model --data-dir tiny/data \\
        --nsamples 2 --seqlen 32 --windows 2             # the CPU smoke test of this script
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import prunedsl
from prunedsl.runtime.device import resolve_placement
from prunedsl.runtime.job import PruneJob, run_prune
from prunedsl.runtime.models import ALIASES

JOBS = (("wanda", False), ("sparsegpt", True))


def available(model: str) -> bool:
    """An alias (a packaged one only where its packages are installed), a local path or
    something shaped like a hub id (owner/name)."""
    from prunedsl.runtime import packaged
    if model in packaged.PARTED:
        return packaged.installed(packaged.PARTED[model])
    if model in ALIASES or Path(model).expanduser().exists():
        return True
    return "/" in model and not model.endswith(".gguf")


def settings_key(args) -> dict:
    return {"nsamples": args.nsamples, "seqlen": args.seqlen, "windows": args.windows,
            "sparsity": args.sparsity, "seed": args.seed, "calib_batch": args.calib_batch}


def run(args, model: str, metric: str, reconstruct: bool, device: str, dtype: str) -> dict:
    placement = resolve_placement(device, dtype, args.offload)
    placement.empty_cache()
    placement.reset_peak_memory()
    t0 = time.perf_counter()
    result = run_prune(PruneJob(model=model, metric=prunedsl.parse(metric), sparsity=args.sparsity,
                                nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
                                data_dir=args.data_dir, eval_windows=args.windows, reconstruct=reconstruct,
                                progress=False, device=device, dtype=dtype, offload=args.offload,
                                calib_batch=args.calib_batch))
    ev = result.evaluation
    return {"model": model, "metric": metric + (" +R" if reconstruct else ""), "device": device,
            "dtype": result.placement["dtype"], "ppl": result.ppl, "sparsity": result.sparsity,
            "prune_seconds": result.prune_seconds, "eval_tokens_per_s": ev.eval_tokens / ev.eval_seconds,
            "peak_memory_bytes": placement.peak_memory_bytes(), "wall_seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--offload", action="store_true")
    p.add_argument("--calib-batch", type=int, default=None)
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--windows", type=int, default=16, help="test windows evaluated")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cpu-reference", default=None, metavar="FILE", help="CPU results to compare with")
    p.add_argument("--write-reference", default=None, metavar="FILE", help="write this run's rows as a reference")
    p.add_argument("--json", default=None, metavar="FILE", help="write every row here")
    args = p.parse_args()

    models = [m for m in args.models.split(",") if m]
    reference: dict = {}
    if args.cpu_reference and Path(args.cpu_reference).is_file():
        saved = json.loads(Path(args.cpu_reference).read_text())
        if saved.get("settings") == settings_key(args):
            reference = {(r["model"], r["metric"]): r for r in saved["rows"]}
        else:
            print(f"{args.cpu_reference}: other settings; computing the CPU references", file=sys.stderr)
    rows, refs = [], []
    for model in models:
        if not available(model):
            print(f"skip {model}: not installed here, or no such alias or path (aliases: {', '.join(ALIASES)}; "
                  "the Qwen aliases need PRUNEDSL_QWEN=0.5b bash scripts/install.sh)", file=sys.stderr)
            continue
        for metric, reconstruct in JOBS:
            name = metric + (" +R" if reconstruct else "")
            if args.device != "cpu" and (model, name) not in reference:
                print(f"CPU reference: {model} {name} ...", file=sys.stderr, flush=True)
                reference[(model, name)] = run(args, model, metric, reconstruct, "cpu", "float32")
                refs.append(reference[(model, name)])
            for dtype in args.dtypes.split(","):
                print(f"{model} {name} on {args.device} in {dtype} ...", file=sys.stderr, flush=True)
                row = run(args, model, metric, reconstruct, args.device, dtype)
                if args.device == "cpu" and dtype == "float32":  # on CPU the float32 row is the reference
                    reference.setdefault((model, name), dict(row))
                ref = reference.get((model, name))
                row["cpu_ppl"] = ref["ppl"] if ref else None
                row["rel_diff"] = abs(row["ppl"] - ref["ppl"]) / ref["ppl"] if ref else None
                rows.append(row)
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f"; calibration {args.nsamples}×{args.seqlen}, {args.windows} test windows of {args.seqlen}")
    print("| model | metric | device | dtype | ppl | CPU fp32 ppl | rel. diff | prune s | eval tok/s | peak mem (GiB) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cpu = f"{r['cpu_ppl']:.3f}" if r["cpu_ppl"] is not None else "–"
        diff = f"{r['rel_diff']:.2e}" if r["rel_diff"] is not None else "–"
        print(f"| {r['model']} | {r['metric']} | {r['device']} | {r['dtype']} | {r['ppl']:.3f} | {cpu} | {diff} | "
              f"{r['prune_seconds']:.1f} | {r['eval_tokens_per_s']:.0f} | {r['peak_memory_bytes'] / 2**30:.2f} |")
    if args.write_reference:
        Path(args.write_reference).write_text(json.dumps({"settings": settings_key(args), "rows": rows}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings_key(args), "rows": rows,
                                               "cpu_references": refs}, indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
