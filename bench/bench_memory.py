"""Benchmark: peak RSS of `prunedsl prune --metric wanda`, single batch vs micro-batched.

Each setting runs in a fresh subprocess (``python -m prunedsl prune … --no-eval``) and its
peak resident memory is read from the kernel (``os.wait4``'s ru_maxrss of that child), so
one run's allocations never count for another. Issue #12's target: with micro-batches,
peak RSS at 128×2048 ≤ 1.5× the peak at 32×512.

    python bench/bench_memory.py                                   # the issue's grid, smollm2-135m
    python bench/bench_memory.py --grid 32x512,128x512,128x2048 --calib-batch 8 --json out.json
    python bench/bench_memory.py --model tiny/model --data-dir tiny/data --grid 4x32,8x32 --calib-batch 2

Prints a Markdown table (nsamples × seqlen, mode, peak RSS, wall seconds) and the ratio
the target is about.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def parse_grid(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        n, s = part.lower().split("x")
        out.append((int(n), int(s)))
    return out


def run_one(args, nsamples: int, seqlen: int, calib_batch: int | None) -> dict:
    """One prune in a fresh process; its peak RSS (bytes) and wall seconds."""
    cmd = [sys.executable, "-m", "prunedsl", "prune", "--model", args.model, "--metric", "wanda",
           "--sparsity", "0.5", "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--no-eval",
           "--json", "--device", args.device]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if calib_batch:
        cmd += ["--calib-batch", str(calib_batch)]
    env = dict(os.environ, TQDM_DISABLE="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        seconds = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        out, err = out.read(), err.read()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{err.decode()[-2000:]}")
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    record = json.loads(out)
    return {"nsamples": nsamples, "seqlen": seqlen, "calib_batch": calib_batch,
            "mode": f"micro-batches of {calib_batch}" if calib_batch else "single batch",
            "peak_rss_bytes": int(rss), "wall_seconds": seconds, "prune_seconds": record["prune_seconds"],
            "sparsity": record["sparsity"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--grid", default="32x512,128x512,128x2048", help="nsamples x seqlen, comma-separated")
    p.add_argument("--calib-batch", type=int, default=8, help="micro-batch size of the micro-batched runs")
    p.add_argument("--modes", default="single,micro", help="single, micro or both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args()

    modes = [m.strip() for m in args.modes.split(",")]
    rows = []
    for nsamples, seqlen in parse_grid(args.grid):
        for mode in modes:
            batch = args.calib_batch if mode == "micro" else None
            row = run_one(args, nsamples, seqlen, batch)
            rows.append(row)
            print(f"{nsamples}×{seqlen} {row['mode']}: peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB, "
                  f"{row['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    print(f"| calibration | mode | peak RSS (GiB) | prune s | wall s |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nsamples']}×{r['seqlen']} | {r['mode']} | {r['peak_rss_bytes'] / 2**30:.2f} | "
              f"{r['prune_seconds']:.1f} | {r['wall_seconds']:.1f} |")
    base = next((r for r in rows if r["calib_batch"] is None), rows[0])
    biggest = max((r for r in rows if r["calib_batch"]), key=lambda r: r["nsamples"] * r["seqlen"], default=None)
    if biggest is not None:
        ratio = biggest["peak_rss_bytes"] / base["peak_rss_bytes"]
        print(f"\npeak RSS, {biggest['nsamples']}×{biggest['seqlen']} micro-batched / {base['nsamples']}×"
              f"{base['seqlen']} single batch: {ratio:.2f} (target ≤ 1.5)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
