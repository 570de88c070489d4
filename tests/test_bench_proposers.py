"""bench/bench_proposers.py: the arms run the same search with the same --time-limit, the
counts come from the state's counters, and an llm arm points the search at its server."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_proposers", ROOT / "bench" / "bench_proposers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_commands_share_the_task_and_the_limit(bench):
    args = type("A", (), dict(model="m", sparsity=0.6, budget=5, full_evals=2, minutes=0.5, test_windows=3,
                             search_args=["--nsamples", "4"], threads=1))()
    evolve = bench.search_command(args, "evolve:3", Path("/o/e"), None)
    llm = bench.search_command(args, "llm:qwen2.5-coder-0.5b", Path("/o/l"), 8123)
    common = evolve[:evolve.index("--output")]
    assert llm[:len(common)] == common and "--time-limit" in common and common[common.index("--time-limit") + 1] == "30.0"
    assert evolve[evolve.index("--proposer-seed") + 1] == "3"
    assert llm[llm.index("--llm-base-url") + 1] == "http://127.0.0.1:8123/v1"
    assert llm[llm.index("--llm-model") + 1] == "qwen2.5-coder-0.5b"
    with pytest.raises(SystemExit, match="unknown arm"):
        bench.search_command(args, "random", Path("/o/r"), None)


def test_quick_runs_and_counts_from_the_state(bench, tmp_path, capsys):
    out = tmp_path / "p.md"
    # formulas only (4 seeds, no allocation passes) and 15 s: the seeds fit even on a busy CI machine
    argv = ["--quick", "--minutes", "0.25", "--arms", "evolve:0", "--out", str(out), "--search-args", "--recipes",
            "fixed"]
    bench.main(argv)
    rows = json.loads(out.with_suffix(".json").read_text())
    (row,) = rows
    assert "error" not in row, row
    assert row["proposals"] >= row["valid"] >= row["new"] >= row["screened"] > 0
    assert row["search_seconds"] < 60 and "| evolve:0 |" in out.read_text()
    assert row["winner"] is not None and row["winner_test_ppl"] is not None
    # a rerun skips the arm already measured
    bench.main(argv)
    assert json.loads(out.with_suffix(".json").read_text()) == rows
