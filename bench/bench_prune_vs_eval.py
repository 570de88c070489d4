"""Benchmark: one sequential pruning pass vs one perplexity evaluation, on SmolLM2-135M.

Wanda (|W|·‖X‖, per-row) at 50% with 32×512 calibration tokens from the validation
split, against perplexity over 32 windows of 512 test tokens. Target: prune <= 1.5× eval.

    python bench/bench_prune_vs_eval.py [--model smollm2-135m] [--nsamples 32] [--windows 32]
                                        [--threads N]

Prints a Markdown table (wall and CPU seconds, ratios) and the dense and pruned
perplexities. The eval reference is the mean of the dense and the pruned evaluation.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import prunedsl
from prunedsl.runtime.data import calibration_windows, load_text, tokenize
from prunedsl.runtime.models import load_model
from prunedsl.runtime.workbench import Workbench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--windows", type=int, default=32)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's); 1 gives timings that other "
                        "processes on a shared machine disturb least")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    print(f"loaded {loaded.source}; torch threads {torch.get_num_threads()}", file=sys.stderr)
    test_ids = tokenize(loaded.tokenizer, load_text("test"))
    calib = calibration_windows(tokenize(loaded.tokenizer, load_text("validation")),
                                args.nsamples, args.seqlen, args.seed)

    bench = Workbench(loaded, calib, keep_dense=False)  # one pass: no dense copy to keep
    load0 = os.getloadavg()[0]
    dense, dense_cpu = timed(lambda: bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.windows))
    (report, prune_s), prune_cpu = timed(lambda: _prune(bench, args.sparsity))
    pruned, pruned_cpu = timed(lambda: bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.windows))
    load1 = os.getloadavg()[0]

    # Zeros do not make the dense matmuls cheaper, so both evaluations cost the same; their
    # mean is the reference (the machine's load can change between steps).
    eval_s = (dense["seconds"] + pruned["seconds"]) / 2
    eval_cpu = (dense_cpu + pruned_cpu) / 2
    print(f"{args.model}: Wanda {args.sparsity:.0%} (row), calibration "
          f"{args.nsamples}×{args.seqlen}, eval {dense['windows']}×{args.seqlen}, "
          f"torch threads {torch.get_num_threads()}, load average {load0:.1f} -> {load1:.1f}\n")
    print("| step | wall s | ratio to eval | CPU s | CPU ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| perplexity, dense | {dense['seconds']:.1f} | | {dense_cpu:.1f} | |")
    print(f"| perplexity, pruned | {pruned['seconds']:.1f} | | {pruned_cpu:.1f} | |")
    print(f"| **eval (mean)** | {eval_s:.1f} | 1.00 | {eval_cpu:.1f} | 1.00 |")
    print(f"| **prune_model** | {prune_s:.1f} | {prune_s / eval_s:.2f} | {prune_cpu:.1f} | "
          f"{prune_cpu / eval_cpu:.2f} |")
    print(f"| - capture | {report.seconds['capture']:.1f} | | | |")
    print(f"| - blocks | {report.seconds['blocks']:.1f} | | | |")
    print(f"\nppl dense {dense['ppl']:.3f} -> pruned {pruned['ppl']:.3f} "
          f"(sparsity {report.sparsity:.4f}, {report.pruned}/{report.total} weights)")


def timed(fn):
    """(result, process CPU seconds): CPU time is less sensitive to other processes' load."""
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def _prune(bench: Workbench, sparsity: float):
    pruned = bench.prune(prunedsl.parse("wanda"), sparsity=sparsity)
    return pruned.report, pruned.seconds["prune"]


if __name__ == "__main__":
    main()
