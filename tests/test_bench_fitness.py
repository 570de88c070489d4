"""bench/bench_fitness.py: the panel is what the study needs, and --quick runs end to end on a
tiny model, resumes without measuring again, and its tables are rebuilt from the JSON alone."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import prunedsl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fitness", ROOT / "bench" / "bench_fitness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_panel_has_every_library_metric_with_and_without_reconstruct_the_hall_and_formulas(bench):
    cands = bench.panel(16)
    keys = [c["key"] for c in cands]
    assert len(cands) >= 30 and len(set(keys)) == len(keys)
    for name in ("magnitude", "wanda", "ria", "sparsegpt", "pruner_zero", "gblm"):
        assert name in keys and f"{name} +R" in keys
    hall = json.loads(bench.HALL.read_text())
    canon = {prunedsl.parse(c["text"]).canonical() for c in cands}
    assert {prunedsl.parse(e["text"]).canonical() for e in hall["front"]} <= canon
    assert sum(c["source"] == "formula" for c in cands) >= 15
    assert {"W", "-|W|", "‖X‖"} <= set(keys)
    for c in cands:  # every candidate parses
        prunedsl.parse(c["text"])


def test_quick_runs_end_to_end_and_resumes(bench, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    bench.main(["--quick", "--out", str(out), "--only", "magnitude", "wanda", "wanda +R", "W",
                "--proxies", "proxy", "proxy_exact"])
    table = capsys.readouterr().out
    saved = json.loads((out / "fitness_tiny.json").read_text())
    assert set(saved["candidates"]) == {"magnitude", "wanda", "wanda +R", "W"}
    for c in saved["candidates"].values():
        assert len(c["test_nll_sums"]) == 10 and len(c["val_nll_sums"]) == 8
        assert all(k >= 0 for k in c["val_kl_sums"])
    assert set(saved["proxies"]) == {"proxy", "proxy_exact"}
    assert "| fitness | Spearman | Kendall" in table and "kl@8" in table and "nll_diff_wanda@2" in table
    assert "test / wanda" in table and (out / "fitness_tiny.md").read_text().strip() == table.strip()
    # the bad formula W is worse than wanda on test (a tiny random model still has structure)
    assert sum(saved["candidates"]["W"]["test_nll_sums"]) > sum(saved["candidates"]["wanda"]["test_nll_sums"])

    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured again"))
    bench.main(["--quick", "--out", str(out), "--only", "magnitude", "wanda", "wanda +R", "W",
                "--proxies", "proxy", "proxy_exact"])
    assert capsys.readouterr().out.strip() == table.strip()
    bench.main(["--quick", "--out", str(out), "--table-only"])
    assert capsys.readouterr().out.strip() == table.strip()


def test_other_settings_are_never_mixed_into_a_results_file(bench, tmp_path):
    path = tmp_path / "fitness_tiny.json"
    path.write_text(json.dumps({"settings": {"model": "tiny"}, "proxies": {}, "candidates": {}}))
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--quick", "--out", str(tmp_path), "--table-only"])


def test_only_takes_keys_that_start_with_a_dash_and_repeats(bench, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run", lambda args: seen.update(only=args.only))
    bench.main(["--quick", "--only", "magnitude", "wanda +R", "--only=-|W|"])
    assert seen["only"] == ["magnitude", "wanda +R", "-|W|"]
