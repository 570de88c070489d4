"""bench_allocation_seeds.tables: per-cell mean ± sd, and rules paired to uniform by seed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_allocation_seeds.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_allocation_seeds", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(runs):
    settings = {"model": "m", "metric": "wanda", "nsamples": 4, "seqlen": 8, "eval_windows": 2,
                "torch": "x", "threads": 1}
    return {"settings": settings, "dense": 10.0,
            "runs": [{"seed": s, "rule": r, "sparsity": sp, "order": "parallel", "ppl": p}
                     for s, r, sp, p in runs]}


def test_one_seed_shows_no_nan(bench):
    text = bench.tables(_results([(0, "uniform", 0.6, 100.0), (0, "owl", 0.6, 110.0)]))
    assert "nan" not in text
    assert "| uniform | 100.00 (n=1) |" in text
    assert "| owl | +10.0% (n=1) |" in text


def test_paired_by_seed_only_on_common_seeds(bench):
    # owl has seeds 0, 1; uniform 0, 1, 2: the pairs are seeds 0 and 1 (-10% and +10%)
    text = bench.tables(_results([(0, "uniform", 0.7, 100.0), (1, "uniform", 0.7, 200.0),
                                  (2, "uniform", 0.7, 300.0),
                                  (0, "owl", 0.7, 90.0), (1, "owl", 0.7, 220.0)]))
    assert "| uniform | 200.00 ± 100.00 (n=3) |" in text
    assert "| owl | +0.0% ± 14.1% (n=2) |" in text
