"""bench/bench_allocation.py's comparison group: recorded, row for the committed results (which
were made before it was recorded), and a results file is never mixed across groups. No model
is loaded."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = [ROOT / "docs" / "allocation_smollm2-135m.json", ROOT / "docs" / "allocation_gemma3-270m.json"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_allocation", ROOT / "bench" / "bench_allocation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_results_were_made_with_row_and_print_unchanged(bench, path, capsys, monkeypatch):
    results = json.loads(path.read_text())
    assert "group" not in results["settings"] and bench.results_group(results) == "row"
    monkeypatch.setattr(sys, "argv", ["bench", "--table-only", "--out", str(path)])
    bench.main()
    out = capsys.readouterr().out
    assert "Comparison group" not in out  # the tables in docs/allocation.md, as printed then
    # and docs/allocation.md says so next to each table
    doc = (ROOT / "docs" / "allocation.md").read_text()
    assert doc.count("made with the comparison group `row`") >= 2


def test_another_group_is_printed_and_never_mixed_into_a_file(bench, tmp_path, capsys, monkeypatch):
    path = tmp_path / "r.json"
    shutil.copy(COMMITTED[0], path)
    monkeypatch.setattr(sys, "argv", ["bench", "--group", "layer", "--out", str(path)])
    with pytest.raises(SystemExit, match="made with --group row"):
        bench.main()  # refused before any model is loaded
    results = json.loads(path.read_text())
    results["settings"]["group"] = "layer"
    assert "Comparison group: layer" in bench.tables(results, bench_args(bench, path))


def bench_args(bench, path):
    import argparse
    return argparse.Namespace(metrics=["wanda", "sparsegpt"], rules=["uniform", "owl", "alpha", "sdsa"],
                              sparsities=[0.6, 0.7, 0.8], out=str(path))
