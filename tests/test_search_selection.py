"""The final choice on the selection slice (search/selection.py): the validation stream's three
parts share no token, the winner is the best on the selection slice (not on the fitness
slice), and a killed selection or report phase resumes without measuring anything twice."""
from __future__ import annotations

import json

import pytest
import torch

from prunedsl.api import parse
from prunedsl.errors import SearchError
from prunedsl.runtime import data
from prunedsl.search.engine import Engine, SearchConfig, seed_metrics
from prunedsl.search.fitness import FitnessSettings, split_validation, validation_parts
from prunedsl.search.selection import finalists, select_ppl, winner
from test_search_engine import TEXTS, FakeFitness, Scripted

SEED_TEXTS = {parse(t).text() for _, t in seed_metrics()}


# --- the split ----------------------------------------------------------------------------
def test_three_parts_are_disjoint_and_in_the_documented_order():
    ids = torch.arange(3000).unsqueeze(0)  # unique tokens: a token's value is its position
    p = validation_parts(ids, val_windows=4, seqlen=64, nsamples=64, seed=1, select_windows=3)
    assert p.fitness.reshape(-1).tolist() == list(range(256))           # [0, v·L)
    assert p.selection.reshape(-1).tolist() == list(range(256, 448))    # [v·L, (v+s)·L)
    assert p.calib.shape == (64, 64) and int(p.calib.min()) >= 448      # after both
    parts = [set(t.reshape(-1).tolist()) for t in (p.fitness, p.selection, p.calib)]
    assert all(a.isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1:])


def test_no_selection_slice_is_the_split_of_before():
    ids = torch.arange(3000).unsqueeze(0)
    p = validation_parts(ids, val_windows=4, seqlen=64, nsamples=8, seed=1, select_windows=0)
    assert p.selection is None
    assert torch.equal(p.fitness, ids[:, :256])
    assert torch.equal(p.calib, data.calibration_windows(ids[:, 256:], 8, 64, 1))  # the old code, verbatim
    val, calib = split_validation(ids, val_windows=4, seqlen=64, nsamples=8, seed=1)
    assert torch.equal(val, p.fitness) and torch.equal(calib, p.calib)
    # a selection slice moves calibration, never the fitness slice
    q = validation_parts(ids, val_windows=4, seqlen=64, nsamples=8, seed=1, select_windows=2)
    assert torch.equal(q.fitness, p.fitness) and not torch.equal(q.calib, p.calib)
    other = torch.arange(10 ** 4, 10 ** 4 + 500).unsqueeze(0)  # --calib-data: calibration from that text
    r = validation_parts(ids, 4, 64, 8, 1, calib_source=other, select_windows=2)
    assert torch.equal(r.calib, data.calibration_windows(other, 8, 64, 1))


def test_a_stream_too_short_for_the_selection_slice_names_the_option():
    ids = torch.arange(540).unsqueeze(0)  # 8 windows of 64 fit, calibration windows after them do not
    with pytest.raises(SearchError, match="too few for 4 evaluation windows of 64 plus 4 selection windows") as e:
        validation_parts(ids, 4, 64, 8, 1, select_windows=4)
    assert "--select-windows" in e.value.hint
    with pytest.raises(SearchError, match="at least 0"):
        validation_parts(ids, 4, 64, 8, 1, select_windows=-1)


def test_eval_data_selection_slice_follows_the_fitness_slice_of_the_file(tmp_path):
    from test_search_eval_data import NumberTokenizer
    from prunedsl.search.fitness import Fitness
    task = tmp_path / "task.txt"
    task.write_text(" ".join(str(i) for i in range(1000)))
    fit = Fitness.__new__(Fitness)  # the data split only: no model
    fit.settings = FitnessSettings(model="none", nsamples=64, seqlen=32, val_windows=4, select_windows=2,
                                   eval_data=str(task), calib_data=str(task))
    fit.loaded = type("Loaded", (), {"tokenizer": NumberTokenizer()})
    p = fit._data()
    assert p.fitness.reshape(-1).tolist() == list(range(128))
    assert p.selection.reshape(-1).tolist() == list(range(128, 192))
    assert int(p.calib.min()) >= 192  # the same file calibrates after both slices


# --- the winner ---------------------------------------------------------------------------
class SelectFitness(FakeFitness):
    """On the selection slice the order of the discovered formulas is reversed (the worst
    by val ppl is the best there) and every seed is far behind; ``interrupt`` stands in for
    a kill after that many selection (or test) measurements."""

    def __init__(self, interrupt_select: int | None = None, interrupt_test: int | None = None):
        super().__init__()
        self.select_calls: list[str] = []
        self.test_calls: list[str | None] = []
        self.interrupt_select, self.interrupt_test = interrupt_select, interrupt_test

    def select_ppl(self, metric, recipe=None) -> dict:
        if self.interrupt_select is not None and len(self.select_calls) >= self.interrupt_select:
            raise KeyboardInterrupt
        self.select_calls.append(metric.text())
        val = 100 * (1 + self.proxy(metric))
        self.calls -= 1
        return {"select_ppl": 10 ** 5 if metric.text() in SEED_TEXTS else 10 ** 4 - val, "eval_seconds": 0.0}

    def test_ppl(self, metric, *, seqlen, windows, **kw) -> dict:
        if self.interrupt_test is not None and len(self.test_calls) >= self.interrupt_test:
            raise KeyboardInterrupt
        self.test_calls.append(None if metric is None else metric.text())
        return super().test_ppl(metric, seqlen=seqlen, windows=windows)


def _config(tmp_path, **kw) -> SearchConfig:
    base = dict(output=str(tmp_path / "run"), budget=8, full_evals=5, batch=4, report=True, test_windows=4,
                select_top=3, fitness=FitnessSettings("fake", sparsity=0.5, select_windows=4).to_dict())
    return SearchConfig(**{**base, **kw})


def _run(tmp_path, fit, resume=False, **kw):
    return Engine(_config(tmp_path, **kw), lambda: fit, Scripted(TEXTS), log=lambda m: None).run(resume=resume)


def test_the_winner_is_the_best_on_the_selection_slice_not_on_the_fitness_slice(tmp_path):
    fit = SelectFitness()  # report_top 1: the winner is on the test table although it is not the best by val
    engine = Engine(_config(tmp_path, report_top=1), lambda: fit, Scripted(TEXTS), log=lambda m: None)
    summary = engine.run()
    st = engine.state
    fin = finalists(st)
    found = sorted((r for r in st.candidates if not r.seed and r.val_ppl is not None), key=lambda r: r.val_ppl)
    assert len(found) >= 4 and [r.id for r in fin[:-1]] == [r.id for r in found[:3]] and fin[-1].seed
    assert sorted(fit.select_calls) == sorted(r.text for r in fin)           # each finalist measured once
    w = winner(st)
    assert w is fin[2] and w is not found[0]                                # the worst finalist by val ppl
    assert select_ppl(st, w) == min(select_ppl(st, r) for r in fin)
    assert summary["winner"]["canonical"] == w.canonical
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Final choice (selection slice)" in report and "never saw" in report
    row = next(line for line in report.splitlines() if line.startswith("| ★ winner"))
    assert w.pretty.replace("|", "\\|") in row
    assert f"The winner (chosen on the selection slice" in report and f"`{w.pretty}`" in report
    assert w.canonical in st.test                                           # the winner is on the test table
    hall = (tmp_path / "run" / "hall.md").read_text()
    assert "Final choice (selection slice)" in hall and "★ winner" in hall
    assert json.loads((tmp_path / "run" / "hall.json").read_text())["selection"]["winner"] == w.canonical


def test_a_killed_selection_and_report_resume_without_measuring_again(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, SelectFitness(interrupt_select=2))
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert len(saved["selection"]) == 2 and saved["phase"] == "search"
    with pytest.raises(KeyboardInterrupt):  # now the selection finishes and the test table is cut short
        _run(tmp_path, second := SelectFitness(interrupt_test=3), resume=True)
    assert len(second.select_calls) == 2                                    # 4 finalists, 2 were saved
    assert not set(second.select_calls) & {r["text"] for r in saved["candidates"]
                                           if r["canonical"] in saved["selection"]}
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert len(saved["test"]) == 3 and saved["phase"] == "report"
    third = SelectFitness()
    assert _run(tmp_path, third, resume=True)["phase"] == "done"
    assert third.select_calls == [] and len(third.test_calls) == len(json.loads(
        (tmp_path / "run" / "state.json").read_text())["test"]) - 3          # the 3 saved ones not again


def test_resume_of_a_finished_search_with_a_larger_budget_measures_only_new_finalists(tmp_path):
    texts = TEXTS + ["|W| * ‖X‖ ^ 3", "|W| ^ 2 * ‖X‖", "|W| * sqrt(‖X‖)", "|W| * exp(‖X‖)"]
    first, second = SelectFitness(), SelectFitness()
    Engine(_config(tmp_path, budget=4, full_evals=3), lambda: first, Scripted(texts), log=lambda m: None).run()
    before = json.loads((tmp_path / "run" / "state.json").read_text())
    assert before["phase"] == "done" and before["selection"]
    engine = Engine(_config(tmp_path, budget=10, full_evals=8), lambda: second, Scripted(texts), log=lambda m: None)
    assert engine.run(resume=True)["phase"] == "done"
    st = engine.state
    assert st.counters.screened_new > before["counters"]["screened"] - before["counters"]["seeds"]
    assert not set(second.select_calls) & set(first.select_calls)           # old finalists: saved
    assert second.select_calls                                              # new finalists: measured
    assert all(r.canonical in st.selection for r in finalists(st)) and winner(st) is not None


def test_a_larger_select_top_on_a_finished_search_goes_back_to_the_report(tmp_path):
    _run(tmp_path, SelectFitness(), select_top=1)
    fit = SelectFitness()
    assert _run(tmp_path, fit, resume=True, select_top=3)["phase"] == "done"
    assert len(fit.select_calls) == 2                                       # the two new finalists only


def test_no_selection_slice_means_no_winner_and_the_report_of_before(tmp_path):
    fit = SelectFitness()
    engine = Engine(_config(tmp_path, fitness=FitnessSettings("fake", sparsity=0.5).to_dict()),
                    lambda: fit, Scripted(TEXTS), log=lambda m: None)
    summary = engine.run()
    assert fit.select_calls == [] and summary["winner"] is None and engine.state.selection == {}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Final choice" not in report and "select ppl" not in report and "★ discovered" in report
    assert "selection" not in json.loads((tmp_path / "run" / "state.json").read_text())


def test_a_library_winner_is_said_plainly(tmp_path):
    class SeedWins(SelectFitness):
        def select_ppl(self, metric, recipe=None):
            res = super().select_ppl(metric, recipe)
            return {**res, "select_ppl": 1.0 if metric.text() in SEED_TEXTS else 10 ** 6}
    engine = Engine(_config(tmp_path), lambda: SeedWins(), Scripted(TEXTS), log=lambda m: None)
    engine.run()
    best = finalists(engine.state)[-1]
    assert best.seed and winner(engine.state) is best
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"The winner on the selection slice is a library metric, `{best.name}`" in report
    assert f"| {best.name}" in report and "★ winner" in report


def test_a_real_fitness_measures_the_selection_slice_as_it_measures_the_fitness_slice(tmp_path):
    from prunedsl.runtime.perplexity import perplexity
    from prunedsl.runtime.prune import prune_model
    from prunedsl.runtime.testing import save_tiny_workspace
    from prunedsl.search.fitness import Fitness
    torch.set_num_threads(1)
    tiny = save_tiny_workspace(tmp_path)
    fit = Fitness(FitnessSettings(model=str(tiny / "model"), data_dir=str(tiny / "data"), sparsity=0.5, nsamples=4,
                                  seqlen=32, val_windows=4, select_windows=3, proxy_blocks=0, proxy_rows=1.0,
                                  proxy_rank=0), progress=False, log=lambda m: None)
    ids = data.tokenize(fit.loaded.tokenizer, data.load_text("validation", data_dir=str(tiny / "data")))
    assert torch.equal(fit.val_ids, ids[:, :128]) and torch.equal(fit.select_ids, ids[:, 128:224])
    assert torch.equal(fit.calib, data.calibration_windows(ids[:, 224:], 4, 32, 0))
    res = fit.select_ppl(parse("wanda"))
    assert len(res["select_nll_sums"]) == 3
    for name, m in fit.model.named_modules():  # dense again afterwards
        if name in fit.dense:
            assert torch.equal(m.weight, fit.dense[name])
    compiled = parse("wanda").compile()
    prune_model(fit.model, fit.calib, lambda l, s: compiled(s), parse("wanda").requires, sparsity=0.5, progress=False)
    assert res["select_ppl"] == pytest.approx(perplexity(fit.model, fit.select_ids, seqlen=32, progress=False)["ppl"],
                                              rel=1e-6)
    fit.bench.restore()
    assert fit.full(parse("wanda"))["val_ppl"] != res["select_ppl"]   # another slice


def test_a_search_saved_before_the_selection_slice_resumes_without_one():
    from pathlib import Path
    from prunedsl.cli import build_parser
    from prunedsl.search.cli import _settings
    saved = json.loads((Path(__file__).parent / "data" / "search_state_v1" / "state.json").read_text())["config"]["cli"]
    assert "select_windows" not in saved
    args = build_parser().parse_args(["search", "--output", "x", "--resume"])
    assert _settings(args, saved)["select_windows"] == 0                    # its calibration stays put
    new = build_parser().parse_args(["search", "--output", "x", "--model", "m", "--sparsity", "0.5"])
    assert _settings(new, None)["select_windows"] == 16                     # a new search has one
