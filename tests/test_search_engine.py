"""The search engine with a fake fitness and scripted proposers (no model: milliseconds).

Covers dedup by canonical form, failures recorded (never raised), the budget, the
full-evaluation schedule, seeds, the Pareto front, atomic files, and in-process resume
after a crash at every possible point (the SIGKILL test is in test_search_resume.py).
"""
from __future__ import annotations

import json
import math

import pytest

from prunedsl.api import parse
from prunedsl.errors import NonFiniteScoreError, SearchError
from prunedsl.search.base import Outcome, Proposal
from prunedsl.search.engine import Engine, SearchConfig, seed_metrics
from prunedsl.search.evolve import EvolveProposer
from prunedsl.search.fitness import BASE_STATISTICS, FitnessSettings
from prunedsl.search.grammar import Vocabulary
from prunedsl.search.hall import atomic_write, pareto_front, read_state
from prunedsl.search.records import Candidate


class FakeFitness:
    """Proxy = a deterministic function of the canonical form; val ppl = 100 · (1 + proxy)."""

    available = BASE_STATISTICS

    def __init__(self, crash_after: int | None = None):
        self.calls = 0
        self.crash_after = crash_after
        self.full_calls: list[str] = []

    def _tick(self):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise KeyboardInterrupt  # stands in for a kill in the middle of an evaluation

    def proxy(self, metric, recipe=None) -> float:
        self._tick()
        if "log" in metric.text():
            raise NonFiniteScoreError("layer model.layers.0.mlp.up_proj: 3 scores are NaN")
        if "G" in metric.requires:
            raise SearchError("this search does not provide G")
        c = parse(TWINS.get(metric.text(), metric.text())).canonical("row")
        return (sum(map(ord, c)) % 97) / 97 + 0.01 * len(c)

    def full(self, metric) -> dict:
        self._tick()
        self.full_calls.append(metric.text())
        p = self.proxy(metric)
        self.calls -= 1
        return {"val_ppl": 100 * (1 + p), "prune_seconds": 0.0, "eval_seconds": 0.0, "sparsity": 0.5}

    def test_ppl(self, metric, *, seqlen, windows) -> dict:
        ppl = 50.0 if metric is None else 100 * (1 + self.proxy(metric))
        n = windows or 4  # every window as hard as the others: a band of width 0
        return {"test_ppl": ppl, "test_windows": n, "eval_seconds": 0.0,
                "test_nll_sums": [math.log(ppl) * (seqlen - 1)] * n}


TWINS = {"min(|W| * ‖X‖ ^ 2, 1000000000)": "|W| * ‖X‖ ^ 2"}  # same masks, other canonical form


class Scripted:
    """Proposes fixed texts (or ready Proposals, e.g. with a recipe) in order; records what it observed."""

    name = "scripted"

    def __init__(self, texts):
        self.texts = list(texts)
        self.i = 0
        self.seen: list[Outcome] = []

    def propose(self, n):
        out = [t if isinstance(t, Proposal) else Proposal(t, "scripted") for t in self.texts[self.i:self.i + n]]
        self.i += len(out)
        return out

    def observe(self, outcomes):
        self.seen += outcomes

    def state(self):
        return {"i": self.i}

    def load_state(self, state):
        self.i = state["i"]


def _config(tmp_path, **kw) -> SearchConfig:
    base = dict(output=str(tmp_path / "run"), budget=6, full_evals=2, batch=3, report=False,
                fitness=FitnessSettings("fake", sparsity=0.5).to_dict())
    return SearchConfig(**{**base, **kw})


TEXTS = ["|W| * ‖X‖ ^ 2", "sqrt(|W| * ‖X‖)",        # the second ranks like wanda: a duplicate
         "|W| * (", "log(|W|) * ‖X‖", "|W| ^ 3 / hinv", "sq(W) * std(X)", "row_sum(|W|)",
         "|W| * ‖X‖₁", "|W| * ‖X‖∞", "minmax(|W|) + ‖X‖", "|W| * var(X)", "exp(|W|)"]


def test_seeds_dedup_failures_budget_and_schedule(tmp_path):
    proposer = Scripted(TEXTS)
    fit = FakeFitness()
    engine = Engine(_config(tmp_path), lambda: fit, proposer, log=lambda m: None)
    summary = engine.run()
    st = engine.state
    c = st.counters
    seeds = [r for r in st.candidates if r.seed]
    usable = [n for n, t in seed_metrics() if "G" not in parse(t).requires]
    assert sorted(r.name for r in seeds) == sorted(usable)
    assert all(r.val_ppl is not None for r in seeds)          # seeds are always evaluated
    assert set(st.skipped_seeds) == {n for n, _ in seed_metrics()} - set(usable)
    assert c.screened - c.seeds == 6                        # the budget, exactly
    assert c.duplicates >= 1 and c.failed == 3  # sqrt(wanda); "(", log, row_sum (Row)
    assert sum(1 for r in st.candidates if not r.seed and r.full) == 2
    errors = [f.error for f in st.failures]
    assert any("syntax error" in e and "^" in e for e in errors)  # rendered with a caret
    assert any("NaN" in e for e in errors)
    dup = next(o for o in proposer.seen if o.duplicate_of)
    assert dup.ok and dup.proxy is not None
    # the best reported is never worse than the best seed on validation
    assert summary["best"]["val_ppl"] <= min(r.val_ppl for r in seeds)
    hall = json.loads((tmp_path / "run" / "hall.json").read_text())
    assert [r["id"] for r in hall["front"]] == [r.id for r in pareto_front(st.candidates)]
    # full evaluations went to the best by proxy
    new = sorted((r for r in st.candidates if not r.seed), key=lambda r: r.proxy)
    assert {r.id for r in new[:2]} == {r.id for r in new if r.full}


def test_existing_output_needs_resume(tmp_path):
    Engine(_config(tmp_path), FakeFitness, Scripted(TEXTS), log=lambda m: None).run()
    with pytest.raises(SearchError, match="--resume"):
        Engine(_config(tmp_path), FakeFitness, Scripted(TEXTS), log=lambda m: None).run()


def _evolve():
    return EvolveProposer(seed=3, vocab=Vocabulary.from_available(BASE_STATISTICS), initial_random=4)


@pytest.mark.parametrize("when", [0.1, 0.5, 0.97])
def test_resume_after_crash_matches_uninterrupted(tmp_path, when):
    cfg = dict(budget=14, full_evals=3, batch=4)
    fit = FakeFitness()
    ref = Engine(_config(tmp_path / "a", **cfg), lambda: fit, _evolve(), log=lambda m: None)
    ref.run()
    crash_after = int(when * fit.calls)  # evaluations before the "kill"
    crashed = Engine(_config(tmp_path / "b", **cfg), lambda: FakeFitness(crash_after), _evolve(),
                     log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        crashed.run()
    before = read_state(tmp_path / "b" / "run")
    resumed = Engine(_config(tmp_path / "b", **cfg), FakeFitness, _evolve(), log=lambda m: None)
    resumed.run(resume=True)
    a, b = ref.state.candidates, resumed.state.candidates
    # nothing saved was lost (the saved candidates are a prefix), and the run is the same
    assert [r.canonical for r in before.candidates] == [r.canonical for r in b][:len(before.candidates)]
    assert [(r.canonical, r.proxy, r.val_ppl) for r in a] == [(r.canonical, r.proxy, r.val_ppl) for r in b]
    assert ref.state.counters == resumed.state.counters


def test_pareto_front():
    recs = [_candidate(id=i, complexity=c, val_ppl=v) for i, (c, v) in
            enumerate([(2, 30.0), (4, 25.0), (3, 31.0), (6, 25.0), (8, 20.0), (5, None)])]
    assert [r.id for r in pareto_front(recs)] == [0, 1, 4]


def _candidate(**kw) -> Candidate:
    base = dict(id=0, input="W", text="W", pretty="W", name=None, canonical="W", complexity=1,
                origin="test", parents=(), node=None, note="", proxy=0.5, proxy_seconds=0.0)
    return Candidate(**{**base, **kw})


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    path = tmp_path / "x.json"
    atomic_write(path, "old")

    class Boom(str):
        def encode(self, *a):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(path, Boom("new"))
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary left behind


def test_non_mat_metric_is_a_failed_outcome(tmp_path):
    proposer = Scripted(["row_sum(|W|)", "|W| * ‖X‖ ^ 3"])
    engine = Engine(_config(tmp_path, budget=1, full_evals=0), FakeFitness, proposer, log=lambda m: None)
    engine.run()
    failed = [o for o in proposer.seen if not o.ok]
    assert failed and "Mat" in failed[0].error
    assert not math.isnan(engine.state.candidates[-1].proxy)


def test_a_search_run_without_report_gets_it_on_resume(tmp_path):
    """`--no-report`, then `--resume` without it: the finished search writes its report then
    (it used to stay done with no report), and the search itself is not run again."""
    fit = FakeFitness()
    engine = Engine(_config(tmp_path, budget=8, full_evals=2, batch=4, test_windows=1),
                    lambda: fit, _evolve(), log=lambda m: None)
    engine.run()
    out = tmp_path / "run"
    assert engine.state.phase == "done" and not (out / "report.md").exists() and not engine.state.test
    screened = engine.state.counters.screened
    engine = Engine(_config(tmp_path, budget=8, full_evals=2, batch=4, test_windows=1, report=True),
                    lambda: fit, _evolve(), log=lambda m: None)
    engine.run(resume=True)
    assert (out / "report.md").exists() and engine.state.test and engine.state.phase == "done"
    assert engine.state.counters.screened == screened
    mtime = (out / "report.md").stat().st_mtime_ns
    engine = Engine(_config(tmp_path, budget=8, full_evals=2, batch=4, test_windows=1, report=True),
                    lambda: fit, _evolve(), log=lambda m: None)
    engine.run(resume=True)  # nothing pending now: the report is not written again
    assert (out / "report.md").stat().st_mtime_ns == mtime


def test_report_with_lineage_and_plot(tmp_path):
    engine = Engine(_config(tmp_path, budget=14, full_evals=3, batch=4, report=True, test_windows=1),
                    FakeFitness, _evolve(), log=lambda m: None)
    engine.run()
    out = tmp_path / "run"
    text = (out / "report.md").read_text()
    for baseline in ("magnitude", "wanda", "ria", "sparsegpt", "dense"):
        assert f"| {baseline}" in text
    assert "test ppl" in text and "Hall of fame" in text and "Lineage of the best" in text
    # full_evals=3 evaluates discovered formulas, and with this fake fitness the best of them
    # (by validation ppl) has a lower test ppl than wanda: the verdict must say so
    test, recs = engine.state.test, engine.state.candidates
    best = min((r for r in recs if not r.seed and r.val_ppl is not None),
               key=lambda r: (r.val_ppl, r.complexity, r.id))
    wanda = next(r for r in recs if r.seed and r.name == "wanda")
    assert test[best.canonical]["test_ppl"] < test[wanda.canonical]["test_ppl"]
    assert f"`{best.pretty}`" in text and "**beats wanda: 0." in text  # the ratio and its band
    assert "No formula beyond the seeds" not in text
    assert (out / "progress.png").stat().st_size > 1000
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["formula"] and "parents" in lineage
    assert set(engine.state.test) >= {"dense"}
    assert engine.state.phase == "done"


def test_proxy_twins_are_not_fully_evaluated_twice(tmp_path):
    proposer = Scripted(["min(|W| * ‖X‖ ^ 2, 1e9)", "|W| * ‖X‖ ^ 2", "|W| ^ 3 / hinv"])
    engine = Engine(_config(tmp_path, budget=3, full_evals=3), FakeFitness, proposer, log=lambda m: None)
    engine.run()
    recs = {r.text: r for r in engine.state.candidates}
    bloated, simple = recs["min(|W| * ‖X‖ ^ 2, 1000000000)"], recs["|W| * ‖X‖ ^ 2"]
    assert bloated.proxy == simple.proxy and bloated.canonical != simple.canonical
    assert bloated.twin_of == simple.id and bloated.full is None   # the simpler one is kept
    assert simple.val_ppl is not None and engine.state.counters.twins == 1


def test_cli_settings_on_resume():
    from prunedsl.cli import build_parser
    from prunedsl.search.cli import _settings
    parse_args = build_parser().parse_args
    new = _settings(parse_args(["search", "--model", "m", "--sparsity", "0.6", "--output", "d"]), None)
    assert new["budget"] == 100 and new["proxy_blocks"] == 8 and new["proposer"] == "evolve"
    with pytest.raises(SearchError, match="--sparsity is required|--model is required"):
        _settings(parse_args(["search", "--output", "d"]), None)
    resumed = _settings(parse_args(["search", "--output", "d", "--resume", "--budget", "300"]), new)
    assert resumed["budget"] == 300 and resumed["model"] == "m"  # the budget may grow
    with pytest.raises(SearchError, match="differs from the saved search"):
        _settings(parse_args(["search", "--output", "d", "--resume", "--sparsity", "0.5"]), new)


def test_resume_with_a_larger_budget_extends_a_finished_search(tmp_path):
    Engine(_config(tmp_path, budget=4, full_evals=1), FakeFitness, _evolve(), log=lambda m: None).run()
    more = Engine(_config(tmp_path, budget=8, full_evals=2), FakeFitness, _evolve(), log=lambda m: None)
    more.run(resume=True)
    c = more.state.counters
    assert c.screened - c.seeds == 8 and more.state.phase == "done"
    assert sum(1 for r in more.state.candidates if not r.seed and r.full) == 2


class Stuttering(Scripted):
    """Returns nothing in some rounds (an LLM whose replies were all invalid), then more."""

    def __init__(self, texts, empty_rounds):
        super().__init__(texts)
        self.empty_rounds = set(empty_rounds)
        self.rounds = 0

    def propose(self, n):
        self.rounds += 1
        return [] if self.rounds in self.empty_rounds else super().propose(n)


def test_a_few_empty_rounds_do_not_end_the_search(tmp_path):
    from prunedsl.search.engine import EMPTY_ROUNDS
    prop = Stuttering(["|W| * ‖X‖ ^ 2", "|W| * ‖X‖₁", "|W| * var(X)"], empty_rounds=range(1, EMPTY_ROUNDS))
    eng = Engine(_config(tmp_path, budget=3, batch=3), FakeFitness, prop, log=lambda m: None)
    eng.run()
    assert eng.state.counters.screened - eng.state.counters.seeds == 3


def test_a_proposer_that_stays_empty_ends_the_search(tmp_path):
    from prunedsl.search.engine import EMPTY_ROUNDS
    logs = []
    prop = Stuttering(["|W| * ‖X‖ ^ 2"], empty_rounds=range(2, 100))
    eng = Engine(_config(tmp_path, budget=5, batch=3), FakeFitness, prop, log=logs.append)
    eng.run()
    assert prop.rounds == 1 + EMPTY_ROUNDS and eng.state.phase == "done"
    assert any("proposed nothing in" in m for m in logs)


def test_llm_proposer_gets_the_runs_statistics():
    from prunedsl.cli import build_parser
    from prunedsl.dsl.library import BUILTIN
    from prunedsl.search.cli import _settings, make_proposer
    args = build_parser().parse_args(["search", "--proposer", "llm", "--output", "d", "--model", "m",
                                      "--sparsity", "0.5", "--llm-base-url", "http://127.0.0.1:9/v1", "--llm-model", "m"])
    available = frozenset({"W", "x_norm2"})
    prop = make_proposer(_settings(args, None), args, available, BUILTIN)
    assert prop.available == available
    seeds = {n.text for n in prop.graph.nodes if n.complete}
    assert {"|W|", "|W| * ‖X‖"} <= seeds  # magnitude, wanda (resolved)
    assert not any("hinv" in t or "G" in t for t in seeds)  # this run has neither
