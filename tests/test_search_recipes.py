"""Recipes in the search engine, with a fake fitness (milliseconds): a candidate is (formula,
recipe); the recipe round-trips through state.json and hall.json; the proxy is computed
once per canonical form; twins are twins only within a recipe; evolve varies recipes
deterministically and never without a recipe space; the CLI's --recipes options."""
from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from prunedsl.api import parse, parse_allocation
from prunedsl.dsl.library import BUILTIN
from prunedsl.errors import SearchError
from prunedsl.search.base import Proposal
from prunedsl.search.engine import Engine, SearchConfig, seed_metrics
from prunedsl.search.evolve import EvolveProposer
from prunedsl.search.fitness import BASE_STATISTICS, FitnessSettings
from prunedsl.search.grammar import Vocabulary
from prunedsl.search.hall import read_state
from prunedsl.search.pool import InProcessPool
from prunedsl.search.recipe import MASK, Recipe, RecipeSpace, recipe_count_rows, seed_list
from prunedsl.search.records import Candidate
from test_search_engine import Scripted  # proposes texts or ready Proposals (with recipes)

PLUS_R = Recipe(reconstruct=True, group="layer")
TWINS = {"min(|W| * ‖X‖ ^ 2, 1000000000)": "|W| * ‖X‖ ^ 2"}  # same masks, other canonical form


class RecipeFitness:
    """Proxy from the canonical form and, with +R, the selection group (counted, as the OBS
    proxy's); val ppl from the formula and the recipe."""

    available = BASE_STATISTICS

    def __init__(self):
        self.proxy_calls: Counter[str] = Counter()
        self.full_calls: list[tuple[str, Recipe | None]] = []

    def proxy(self, metric, recipe=None) -> float:
        c = parse(TWINS.get(metric.text(), metric.text())).canonical("row")
        group = recipe.group if recipe is not None and recipe.reconstruct else None
        self.proxy_calls[(metric.canonical("row"), group)] += 1
        value = (sum(map(ord, c)) % 97) / 97 + 0.01 * len(c)
        return value if group is None else value * (0.5 if group == "layer" else 0.6)

    def full(self, metric, recipe=None) -> dict:
        self.full_calls.append((metric.text(), recipe))
        base = 100 + (sum(map(ord, metric.canonical("row"))) * 7919) % 101
        bonus = (10 if recipe and recipe.reconstruct else 0) + (len(recipe.allocation) if recipe and
                                                                 recipe.allocation else 0)
        return {"val_ppl": base - bonus, "prune_seconds": 0.5, "eval_seconds": 0.25, "sparsity": 0.5,
                **({"allocation_seconds": 0.125} if recipe and recipe.allocation else {})}

    def test_ppl(self, metric, *, seqlen, windows, recipe=None) -> dict:
        return {"test_ppl": 50.0, "test_windows": 1, "eval_seconds": 0.0}


def _config(tmp_path, name="run", **kw) -> SearchConfig:
    base = dict(output=str(tmp_path / name), budget=6, full_evals=3, batch=3, report=False,
                recipes="search", fitness=FitnessSettings("fake", sparsity=0.5).to_dict())
    return SearchConfig(**{**base, **kw})


def _run(tmp_path, proposer, fit=None, **kw) -> Engine:
    engine = Engine(_config(tmp_path, **kw), lambda: fit or RecipeFitness(), proposer, log=lambda m: None)
    engine.run()
    return engine


def test_the_seed_list():
    metrics = seed_metrics()
    seeds = seed_list(metrics, BUILTIN, mode="search", base=MASK, group="row")
    labels = [s.label for s in seeds]
    n = len(metrics)
    assert labels[:n] == [name for name, _ in metrics]                       # mask-only first, as before
    assert labels[n:2 * n] == [f"{name} +R(layer)" for name, _ in metrics]   # each with +R
    assert labels[2 * n:] == ["wanda alloc owl", "wanda alloc alpha", "wanda alloc sdsa"]  # not uniform
    assert len(seeds) == 2 * n + 3
    assert all(s.skip for s in seed_list(metrics, BUILTIN, mode="search", base=MASK, group="global")[2 * n:])
    fixed = seed_list(metrics, BUILTIN, mode="fixed", base=PLUS_R, group="row")
    assert [s.label for s in fixed] == [f"{name} +R(layer)" for name, _ in metrics]


def test_same_formula_with_and_without_plus_r_are_two_candidates_and_proxies(tmp_path):
    fit = RecipeFitness()
    props = [Proposal("|W| * ‖X‖", "scripted", recipe=Recipe(reconstruct=True)),            # a duplicate seed
             Proposal("|W| * ‖X‖ ^ 2", "scripted"),
             Proposal("|W| * ‖X‖ ^ 2", "scripted", recipe=Recipe(reconstruct=True, group="row")),
             Proposal("|W| * ‖X‖ ^ 2", "scripted", recipe=Recipe(allocation="owl(lam = 0.1)")),
             Proposal("|W| * ‖X‖ ^ 2", "scripted", recipe=Recipe(allocation="uniform")),     # = mask-only
             Proposal("|W| * ‖X‖ ^ 2", "scripted", recipe=Recipe(allocation="spread(")),     # fails
             Proposal("|W| ^ 3 / hinv", "scripted")]
    engine = _run(tmp_path, Scripted(props), fit)
    recs = engine.state.candidates
    wanda = [r for r in recs if r.seed and r.name == "wanda"]
    assert {r.recipe for r in wanda} >= {MASK, PLUS_R} and len({r.key for r in wanda}) == len(wanda)
    assert len({r.proxy for r in wanda if not r.recipe.reconstruct}) == 1   # allocation: not seen
    plus_r = next(r for r in wanda if r.recipe == PLUS_R)
    assert plus_r.proxy < min(r.proxy for r in wanda if not r.recipe.reconstruct)  # the OBS proxy's
    assert all(n == 1 for n in fit.proxy_calls.values())          # once per formula (and +R group)
    assert sum(1 for r in recs if r.proxy_seconds == 0.0) >= 4    # reused, not recomputed
    sq = [r for r in recs if r.text == "|W| * ‖X‖ ^ 2"]
    assert [r.recipe for r in sq] == [MASK, Recipe(True, "row"), Recipe(allocation="owl(lam = 0.1)")]
    assert engine.state.counters.duplicates == 2                  # wanda +R, and uniform = mask-only
    assert any("spread(" in f.input or "spread(" in f.error for f in engine.state.failures)
    by_val = {(t, r): None for t, r in fit.full_calls}
    assert ("|W| * ‖X‖", PLUS_R) in by_val and ("|W| * ‖X‖", None) in by_val
    owl = [r for t, r in fit.full_calls if r and r.allocation]
    assert owl and all(parse_allocation(r.allocation) for r in owl)  # resolved rule text for workers
    assert all("(" in r.allocation for r in owl)


def test_recipes_round_trip_through_state_and_hall(tmp_path):
    engine = _run(tmp_path, Scripted([Proposal("|W| * ‖X‖ ^ 2", "s", recipe=Recipe(allocation="alpha"))]))
    back = read_state(tmp_path / "run")
    assert back.version == 3 and back.config.recipes == "search"
    assert [r.recipe for r in back.candidates] == [r.recipe for r in engine.state.candidates]
    assert any(r.recipe.allocation == "alpha" and not r.seed for r in back.candidates)
    raw = json.loads((tmp_path / "run" / "state.json").read_text())
    assert all(("recipe" in c) == (c["id"] in {r.id for r in back.candidates if r.recipe != MASK})
               for c in raw["candidates"])                           # left out when mask-only
    hall = json.loads((tmp_path / "run" / "hall.json").read_text())
    best = hall["best"]
    assert Candidate.from_json(best).recipe == engine.state.candidates[best["id"]].recipe
    from prunedsl.search.records import proposal_from_dict, proposal_to_dict
    for prop in (Proposal("W", "s"), Proposal("W", "s", recipe=Recipe(True, "row", "owl(lam = 0.1)"))):
        d = json.loads(json.dumps(proposal_to_dict(prop)))
        assert proposal_from_dict(d) == prop and ("recipe" in d) == (prop.recipe is not None)
    md = (tmp_path / "run" / "hall.md").read_text()
    assert "+R(layer)" in md or "alloc" in md                          # the fake favours recipes


def test_twins_only_within_one_recipe(tmp_path):
    props = [Proposal("|W| * ‖X‖ ^ 2", "s", recipe=PLUS_R), Proposal("min(|W| * ‖X‖ ^ 2, 1e9)", "s"),
             Proposal("|W| * ‖X‖ ^ 2", "s")]
    engine = _run(tmp_path, Scripted(props), budget=3, recipes="fixed")
    recs = {(r.text, r.recipe): r for r in engine.state.candidates if not r.seed}
    bloated, simple = recs[("min(|W| * ‖X‖ ^ 2, 1000000000)", MASK)], recs[("|W| * ‖X‖ ^ 2", MASK)]
    assert bloated.twin_of == simple.id and engine.state.counters.twins == 1
    assert recs[("|W| * ‖X‖ ^ 2", PLUS_R)].twin_of is None


def _evolve(space=True, seed=3) -> EvolveProposer:
    return EvolveProposer(seed=seed, vocab=Vocabulary.from_available(BASE_STATISTICS), max_size=12,
                          recipes=RecipeSpace.from_library(BUILTIN, "row") if space else None)


def _strip(state) -> dict:
    st = state.to_json()
    st.pop("seconds")
    st["config"].pop("output")
    for h in st["history"]:
        h.pop("seconds")
    for c in st["candidates"]:
        c.pop("proxy_seconds")
    return st


def test_evolve_varies_recipes_deterministically(tmp_path):
    runs = [_run(tmp_path, _evolve(), name=f"run{i}", budget=40, full_evals=8, batch=8) for i in range(2)]
    assert _strip(runs[0].state) == _strip(runs[1].state)
    new = [r for r in runs[0].state.candidates if not r.seed]
    origins = {r.origin for r in new if r.recipe != MASK}
    assert {"evolve:reconstruct", "evolve:allocation"} <= {r.origin for r in new}
    assert any(o in origins for o in ("evolve:mutate", "evolve:crossover", "evolve:point"))  # recipes inherited
    for r in new:
        if r.recipe.allocation:
            parse_allocation(r.recipe.allocation)                 # every allocation text checks
    assert runs[0].proposer.state() == runs[1].proposer.state()
    back = _evolve()
    back.load_state(json.loads(json.dumps(runs[0].proposer.state())))
    assert back.state() == runs[0].proposer.state()               # recipes in the saved archive


def test_evolve_without_a_recipe_space_proposes_formulas_only(tmp_path):
    with_space, without = _evolve(), _evolve(space=False)
    engine = _run(tmp_path, without, budget=20, recipes="fixed")
    assert all(r.recipe == MASK for r in engine.state.candidates)
    assert not any(isinstance(row, list) and len(row) > 4 for row in without.state()["archive"])
    assert with_space.recipes is not None and without.recipes is None


def test_allocation_parameters_move_by_a_bounded_factor():
    space = RecipeSpace.from_library(BUILTIN, "row")
    rng = random.Random(0)
    r = Recipe(allocation="alpha")
    eps = 0.2
    for _ in range(60):
        r = space.apply("alloc_param", r, rng)
        new = space._params(r.allocation)["eps"]
        assert 1 / 1.51 <= new / eps <= 1.51 and 0.05 - 1e-9 <= new <= 0.8 + 1e-9
        eps = new
    for _ in range(30):
        r = space.apply("allocation", r, rng) or r
        assert r.allocation is None or parse_allocation(r.allocation, library=BUILTIN)
    assert space.apply("group", PLUS_R, rng) == Recipe(True, "row")
    assert "allocation" not in RecipeSpace.from_library(BUILTIN, "global").operators(MASK)


def test_the_in_process_pool_passes_the_recipe():
    fit = RecipeFitness()
    pool = InProcessPool(fit)
    pool.submit(0, "|W|")
    pool.submit(1, "|W|", PLUS_R)
    assert pool.next_result().key == 0 and pool.next_result().key == 1
    assert fit.full_calls == [("|W|", None), ("|W|", PLUS_R)]


def test_report_counts_full_evaluations_with_recipes(tmp_path):
    engine = _run(tmp_path, Scripted([]), budget=0, full_evals=0, report=True, test_windows=1)
    rows = dict(recipe_count_rows(engine.state.candidates))
    n = len([n for n, t in seed_metrics() if "G" not in parse(t).requires])
    assert rows["fully evaluated with the OBS update (+R)"] == f"{n} (mean 0.8 s)"
    assert rows["fully evaluated with an allocation rule"] == "3 (mean 0.9 s)"
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"| fully evaluated with the OBS update (+R) | {n} (mean 0.8 s)" in re.sub(" +", " ", report)
    assert "| wanda" in report and r"\|W\|·‖X‖  +R(layer)" in report and r"\|W\|·‖X‖  alloc owl" in report
    test = engine.state.test
    assert "|W| * ‖X‖" in test and "|W| * ‖X‖  [+R(layer)]" in test and "|W| * ‖X‖  [alloc owl]" in test
    assert "sparsegpt +R" not in test    # the sparsegpt +R(layer) seed is SparseGPT proper itself
    fixed = _run(tmp_path, Scripted([]), name="fixed", budget=0, full_evals=0, recipes="fixed")
    assert recipe_count_rows(fixed.state.candidates) == []


def test_cli_recipe_options():
    from prunedsl.cli import build_parser
    from prunedsl.search.cli import _settings, base_recipe
    args = lambda *a: build_parser().parse_args(["search", "--model", "m", "--sparsity", "0.6", "--output", "d", *a])
    fs = FitnessSettings("m", sparsity=0.6)
    s = _settings(args(), None)
    assert s["recipes"] == "search" and base_recipe(s, args(), BUILTIN, fs) == MASK
    a = args("--reconstruct")
    s = _settings(a, None)
    assert s["recipes"] == "fixed" and base_recipe(s, a, BUILTIN, fs) == PLUS_R
    a = args("--reconstruct", "--group", "row", "--allocation", "owl")
    assert base_recipe(_settings(a, None), a, BUILTIN, fs) == Recipe(True, "row", "owl")
    with pytest.raises(SearchError, match="--recipes search"):
        _settings(args("--reconstruct", "--recipes", "search"), None)
    saved = _settings(args("--recipes", "fixed"), None)
    with pytest.raises(SearchError, match="differs from the saved search"):
        _settings(build_parser().parse_args(["search", "--output", "d", "--resume", "--recipes", "search"]), saved)
    a = args("--allocation", "owl", "--group", "global")
    with pytest.raises(SearchError, match="--allocation"):
        base_recipe(_settings(a, None), a, BUILTIN, FitnessSettings("m", sparsity=0.6, group="global"))


def test_the_tournament_prefers_the_better_evaluated_recipe_of_a_formula():
    from prunedsl.search.evolve import Individual
    evo = EvolveProposer(seed=0, tournament=24)
    tree = parse("|W| * ‖X‖").expr
    mask = Individual("|W| * ‖X‖", "c", 0.1, 4, tree, val_ppl=20.0)
    plus_r = Individual("|W| * ‖X‖", "c", 0.1, 4, tree, val_ppl=15.0, recipe=PLUS_R)
    untried = Individual("|W| * ‖X‖", "c", 0.1, 4, tree, recipe=Recipe(allocation="owl"))
    assert all(evo._select([mask, untried, plus_r]) is plus_r for _ in range(20))
