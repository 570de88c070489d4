"""Benchmark the metric compiler. Run: python bench/bench_compile.py [--repeats 15]

(a) compiled `wanda` (and `ria`) on a 4096×11008 float32 W vs the hand-written torch
    expression: median wall time over repeated runs (target: ratio ≤ 1.1×);
(b) parse + check + compile of a typical formula (RIA, a = 0.5) with a fresh text each
    time (no parse cache) and a cleared compile cache, once warm (target: < 5 ms);
(c) per-call overhead of a compiled metric on a tiny layer.
Prints Markdown tables to stdout.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import prunedsl
from prunedsl.compiler import clear_cache, compile_expr
from prunedsl.dsl.checker import Env, check
from prunedsl.dsl.library import library
from prunedsl.dsl.parser import parse_expr

RIA_TEXT = "(|W| / col_sum(|W|) + |W| / row_sum(|W|)) * ‖X‖ ^ 0.5"


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def hand_ria(W, x):
    A = torch.abs(W)
    return (A / A.sum(dim=0, keepdim=True) + A / A.sum(dim=1, keepdim=True)) * x ** 0.5


def bench_scores(out: int, inn: int, repeats: int) -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(out, inn, generator=g)              # (out, in)
    x = torch.rand(1, inn, generator=g)                 # (1, in)
    stats = {"W": W, "x_norm2": x}
    rows = []
    for name, hand in [("wanda", lambda: torch.abs(W) * x), ("ria", lambda: hand_ria(W, x))]:
        m = prunedsl.parse(name).compile()
        assert torch.allclose(m(stats), hand(), rtol=1e-6, atol=0)
        t_hand = median_ms(hand, repeats)
        t_comp = median_ms(lambda: m(stats), repeats)
        t_allow = median_ms(lambda: m(stats, on_nonfinite="allow"), repeats)
        rows.append((name, f"{out}×{inn}", t_hand, t_comp, t_allow))
    return rows


def bench_compile(n: int) -> dict[str, float]:
    env = Env(metrics=library("metric"))
    parts = {"parse": [], "check": [], "compile": [], "total": []}
    for i in range(n + 20):  # the first 20 warm up
        text = f"{RIA_TEXT}  # {i}"  # a fresh text: comments are ignored by the grammar
        clear_cache()
        t0 = time.perf_counter()
        tree = parse_expr(text)
        t1 = time.perf_counter()
        expr = check(tree, env)
        t2 = time.perf_counter()
        compile_expr(expr)
        t3 = time.perf_counter()
        if i >= 20:
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                parts[k].append(dt)
    return {k: statistics.median(v) * 1e3 for k, v in parts.items()}


def bench_overhead(repeats: int) -> tuple[float, float]:
    W, x = torch.randn(4, 8), torch.rand(1, 8)
    m = prunedsl.parse("wanda").compile()
    stats = {"W": W, "x_norm2": x}
    n = 2000
    hand = median_ms(lambda: [torch.abs(W) * x for _ in range(n)], repeats) / n * 1e3
    comp = median_ms(lambda: [m(stats) for _ in range(n)], repeats) / n * 1e3
    return hand, comp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=int, default=4096)
    ap.add_argument("--in", dest="inn", type=int, default=11008)
    ap.add_argument("--compiles", type=int, default=300)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} runs\n")

    print("| metric | W | hand-written torch (ms) | compiled (ms) | ratio | compiled, allow (ms) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, shape, t_hand, t_comp, t_allow in bench_scores(args.out, args.inn, args.repeats):
        print(f"| {name} | {shape} | {t_hand:.1f} | {t_comp:.1f} | {t_comp / t_hand:.2f}× | {t_allow:.1f} |")

    c = bench_compile(args.compiles)
    print(f"\n| parse + check + compile (RIA, fresh text, cold compile cache) | median ms |")
    print("| --- | ---: |")
    for k in ("parse", "check", "compile", "total"):
        print(f"| {k} | {c[k]:.3f} |")

    hand, comp = bench_overhead(5)
    print("\n| per-call cost, wanda on 4×8 | µs |")
    print("| --- | ---: |")
    print(f"| hand-written torch | {hand:.1f} |")
    print(f"| compiled (validation + run + finite check) | {comp:.1f} |")


if __name__ == "__main__":
    main()
