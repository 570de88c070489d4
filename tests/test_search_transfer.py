"""Transfer tables (search/transfer.py): the top formulas and the library pruned on other
tiny models with the search's settings, one table per model with every row, resumed
without measuring a saved row again; bad --transfer-models fail before the search starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunedsl.search.engine import Engine, SearchConfig
from prunedsl.search.fitness import FitnessSettings
from prunedsl.search.recipe import recipe_key
from prunedsl.search.transfer import RECONSTRUCT, default_transfer_fitness, parse_transfer_models, transfer_rows
from test_search_engine import TEXTS, Scripted
from test_search_selection import SelectFitness


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny workspace's Llama (unused by the fake search) and two other tiny models."""
    from prunedsl.runtime.testing import save_tiny_workspace, tiny_llama, tiny_qwen2, tiny_tokenizer
    root = save_tiny_workspace(tmp_path_factory.mktemp("tiny"))
    for name, model in (("qwen", tiny_qwen2(seed=1)), ("llama3", tiny_llama(seed=2, layers=3, hidden=32))):
        model.save_pretrained(root / name)
        tiny_tokenizer().save_pretrained(root / name)
    return root


def _config(tiny, tmp_path, models, **kw) -> SearchConfig:
    fs = FitnessSettings("fake", sparsity=0.5, nsamples=4, seqlen=32, val_windows=4, select_windows=2,
                         data_dir=str(tiny / "data"))
    base = dict(output=str(tmp_path / "run"), budget=6, full_evals=4, batch=3, report=True, test_windows=3,
                test_seqlen=32, report_top=2, select_top=3, fitness=fs.to_dict(), transfer_models=tuple(models))
    return SearchConfig(**{**base, **kw})


class Counting:
    """A transfer fitness that counts its measurements and stops (a kill) after ``stop_after``."""

    def __init__(self, fit, log, stop_after):
        self.fit, self.log, self.left = fit, log, stop_after

    def test_ppl(self, metric, **kw):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        self.log.append(None if metric is None else metric.text())
        return self.fit.test_ppl(metric, **kw)


def _engine(tiny, tmp_path, models, loads, calls, stop_after=None):
    engine = Engine(_config(tiny, tmp_path, models), SelectFitness, Scripted(TEXTS), log=lambda m: None)
    base = default_transfer_fitness(engine)

    def factory(model):
        loads.append(model)
        return Counting(base(model), calls, (stop_after or {}).get(model, -1))
    engine.transfer_fitness = factory
    return engine


def test_transfer_tables_have_every_row_and_resume(tiny, tmp_path):
    torch.set_num_threads(1)
    models = [str(tiny / "qwen"), str(tiny / "llama3")]
    loads, calls = [], []
    engine = _engine(tiny, tmp_path, models, loads, calls, stop_after={models[1]: 3})
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of the second model
        engine.run()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    rows = transfer_rows(engine.state)
    assert loads == models and len(state["transfer"][models[0]]) == len(rows)
    assert len(state["transfer"][models[1]]) == 3 and state["phase"] == "report"
    # resumed: the finished model is not loaded again, the saved rows are not measured again
    loads2, calls2 = [], []
    engine = _engine(tiny, tmp_path, models, loads2, calls2)
    assert engine.run(resume=True)["phase"] == "done"
    assert loads2 == [models[1]] and len(calls2) == len(rows) - 3
    st = engine.state
    seeds = [r for r in st.candidates if r.seed]
    found = [r for r in rows if r.rec is not None and not r.rec.seed]
    assert len(found) == 3 and len(rows) == 1 + len(found) + 2 * len(seeds)  # winner + report_top 2
    assert sum(r.recipe.reconstruct for r in rows) == len(seeds) and rows[1].name == "★ winner"
    for m in models:
        assert set(st.transfer[m]) == {r.key for r in rows}
        assert all("test_ppl" in res and len(res["test_nll_sums"]) == 3 for res in st.transfer[m].values())
    # the +R rows really reconstruct: sparsegpt +R differs from its mask
    sgpt = next(r for r in seeds if r.name == "sparsegpt")
    got = st.transfer[models[0]]
    assert got[sgpt.canonical]["test_ppl"] != got[recipe_key(sgpt.canonical, RECONSTRUCT)]["test_ppl"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Transfer to other models" in report and "### Across models" in report
    for m in models:
        section = report.split(f"### {Path(m).name}\n")[1].split("###")[0]
        table = [line for line in section.splitlines() if line.startswith("| ")][1:]
        assert len(table) == len(rows)                                          # every row
        assert not any("| – " in line or "error" in line for line in table)     # and measured
        assert any(line.startswith("| wanda ") and "+R" in line for line in table)
        assert "× wanda [95%]" in section and "rank" in section


def test_transfer_model_names_are_checked_before_anything_loads(tiny, tmp_path):
    ok = parse_transfer_models(f"gemma3-270m, {tiny / 'qwen'},Qwen/Qwen2.5-0.5B", "smollm2-135m")
    assert ok == ("gemma3-270m", str(tiny / "qwen"), "Qwen/Qwen2.5-0.5B")
    for text, why in (("gemma3-270m,,x", "empty name"), ("no-such-model", "not a model alias"),
                      ("./missing-dir", "no such directory"), ("m.gguf", "no such .gguf file"),
                      ("smollm2-135m", "own --model"), ("gemma3-270m,gemma3-270m", "named twice")):
        with pytest.raises(Exception, match=why) as e:
            parse_transfer_models(text, "smollm2-135m")
        assert "--transfer-models" in str(e.value)


def test_cli_rejects_a_bad_transfer_model_before_the_search_starts(tiny, tmp_path, capsys):
    from prunedsl.cli import main
    out = tmp_path / "run"
    rc = main(["search", "--model", str(tiny / "model"), "--data-dir", str(tiny / "data"), "--sparsity", "0.5",
               "--output", str(out), "--transfer-models", f"{tiny / 'qwen'},gemma9-1b"])
    err = capsys.readouterr().err
    assert rc == 2 and "--transfer-models" in err and "gemma9-1b" in err
    assert not (out / "state.json").exists()                      # nothing was searched
    rc = main(["search", "--model", str(tiny / "model"), "--sparsity", "0.5", "--output", str(out),
               "--transfer-models", str(tiny / "qwen"), "--no-report"])
    assert rc == 2 and "--no-report" in capsys.readouterr().err


def test_cli_search_with_a_selection_slice_and_a_transfer_model_then_a_larger_budget(tiny, tmp_path, capsys):
    from prunedsl.cli import main
    out = tmp_path / "run"
    common = ["--threads", "1", "--quiet", "--output", str(out)]
    rc = main(["search", "--model", str(tiny / "model"), "--data-dir", str(tiny / "data"), "--sparsity", "0.5",
               "--budget", "6", "--full-evals", "3", "--batch", "3", "--nsamples", "4", "--seqlen", "32",
               "--val-windows", "4", "--select-windows", "3", "--select-top", "2", "--test-windows", "3",
               "--test-seqlen", "32", "--seed", "1", "--transfer-models", str(tiny / "qwen"), *common])
    text = capsys.readouterr().out
    assert rc == 0 and "winner (selection slice, never seen by the search)" in text
    state = json.loads((out / "state.json").read_text())
    assert state["config"]["transfer_models"] == [str(tiny / "qwen")] and state["config"]["select_top"] == 2
    assert state["config"]["fitness"]["select_windows"] == 3
    assert all(len(r["select_nll_sums"]) == 3 for r in state["selection"].values())
    report = (out / "report.md").read_text()
    assert "## Final choice (selection slice)" in report and "### qwen" in report
    assert "select ppl" in report and "× wanda [95%]" in report
    # a finished search resumed with a larger budget: more candidates, new finalists, the report again
    assert main(["search", "--resume", "--budget", "9", *common]) == 0
    again = json.loads((out / "state.json").read_text())
    assert again["phase"] == "done" and again["counters"]["screened"] > state["counters"]["screened"]
    assert set(state["selection"]) <= set(again["selection"])
    # a transfer model added on --resume of the finished search: measured; the saved one is not measured again
    both = f"{tiny / 'qwen'},{tiny / 'llama3'}"
    assert main(["search", "--resume", "--transfer-models", both, *common]) == 0
    third = json.loads((out / "state.json").read_text())
    assert third["transfer"][str(tiny / "qwen")] == again["transfer"][str(tiny / "qwen")]   # eval_seconds too
    assert set(third["transfer"][str(tiny / "llama3")]) == set(third["transfer"][str(tiny / "qwen")])
    assert "### llama3" in (out / "report.md").read_text()
    # the saved settings hold: another selection slice is a different fitness
    assert main(["search", "--resume", "--select-windows", "5", *common]) == 2
    assert "--select-windows 5 differs from the saved search" in capsys.readouterr().err


def test_top_formulas_are_the_winner_and_the_next_report_top(tiny, tmp_path):
    from prunedsl.search.selection import winner
    from prunedsl.search.transfer import top_formulas
    from test_search_selection import SEED_TEXTS

    class SeedWins(SelectFitness):
        def select_ppl(self, metric, recipe=None):
            return {**super().select_ppl(metric, recipe), "select_ppl": 1.0 if metric.text() in SEED_TEXTS else 9.0}
    for fitness, first in ((SelectFitness, "discovered"), (SeedWins, "seed"), (None, "best by val")):
        cfg = _config(tiny, tmp_path / first, [], report=False)
        if fitness is None:
            cfg.fitness = {**cfg.fitness, "select_windows": 0}
        engine = Engine(cfg, fitness or SelectFitness, Scripted(TEXTS), log=lambda m: None)
        engine.run()
        st = engine.state
        found = sorted((r for r in st.candidates if not r.seed and r.val_ppl is not None), key=lambda r: r.val_ppl)
        top, w = top_formulas(st), winner(st)
        if first == "discovered":
            assert top[0] is w and not w.seed and top[1:] == [r for r in found if r is not w][:2]
        elif first == "seed":
            assert w.seed and top == found[:2]             # the library winner is among the library rows
        else:
            assert w is None and top == found[:3]          # the best by val ppl, then the next 2


def test_a_model_that_did_not_load_is_retried_on_resume(tiny, tmp_path):
    torch.set_num_threads(1)
    models = [str(tiny / "qwen")]
    engine = Engine(_config(tiny, tmp_path, models), SelectFitness, Scripted(TEXTS), log=lambda m: None)
    base = default_transfer_fitness(engine)

    def missing_package(model):
        raise ImportError("No module named 'some_model_parts'")
    engine.transfer_fitness = missing_package
    assert engine.run()["phase"] == "done"
    saved = engine.state.transfer[models[0]]
    assert saved and all(r.get("load_failed") and "some_model_parts" in r["error"] for r in saved.values())
    report = (tmp_path / "run" / "report.md").read_text()
    assert "some_model_parts" in report and "--resume` tries it again" in report
    # the package installed: --resume measures every row, and a row's own error would have stayed
    loads, calls = [], []
    engine = _engine(tiny, tmp_path, models, loads, calls)
    assert engine.run(resume=True)["phase"] == "done"
    rows = transfer_rows(engine.state)
    assert loads == models and len(calls) == len(rows)
    assert all("test_ppl" in r for r in engine.state.transfer[models[0]].values())
