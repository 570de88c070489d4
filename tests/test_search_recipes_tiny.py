"""Recipes on a tiny real model (seconds): a candidate with +R or an allocation rule is
pruned by the prune command's own pass (``runtime/job.prune_pass``) to the same weights
``run_prune`` gives, its validation perplexity differs from the mask-only one, and
``--recipes fixed`` reproduces, record for record, the search a version-2 prunedsl wrote
(tests/data/search_state_v2, committed from the code before recipes; 1 torch thread)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunedsl.api import parse
from prunedsl.runtime import job as job_module
from prunedsl.runtime.job import PruneJob, run_prune
from prunedsl.search.fitness import Fitness, FitnessSettings
from prunedsl.search.recipe import Recipe
from prunedsl.search.state import read_state

V2 = Path(__file__).parent / "data" / "search_state_v2"
# the search that wrote tests/data/search_state_v2 (run in a directory holding tiny/)
V2_ARGS = ["--model", "tiny/model", "--data-dir", "tiny/data", "--sparsity", "0.5", "--nsamples", "4",
           "--seqlen", "32", "--val-windows", "4", "--seed", "1", "--budget", "8", "--full-evals", "3",
           "--batch", "4", "--test-windows", "2", "--test-seqlen", "32", "--no-report", "--threads", "1",
           "--quiet", "--select-windows", "0"]  # the fixture predates the selection slice


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(tmp_path_factory.mktemp("ws") / "tiny")


@pytest.fixture(scope="module")
def fitness(tiny):
    s = FitnessSettings(model=str(tiny / "model"), data_dir=str(tiny / "data"), sparsity=0.5, nsamples=4,
                        seqlen=32, val_windows=4, seed=1, calib_data=str(tiny / "data" / "wiki.valid.tokens"))
    return Fitness(s, progress=False, log=lambda m: None)


def _spy(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Every prune_pass call's pruned weights (the spy proves both paths go through it)."""
    seen: list[dict[str, torch.Tensor]] = []
    real = job_module.prune_pass

    def spy(bench, metric, **kw):
        out = real(bench, metric, **kw)
        seen.append({n: p.detach().clone() for n, p in bench.model.named_parameters() if ".layers." in n})
        return out
    monkeypatch.setattr(job_module, "prune_pass", spy)
    return seen


@pytest.mark.parametrize("recipe, job_kw", [
    (Recipe(reconstruct=True, group="layer"), {"reconstruct": True}),         # prune --reconstruct
    (Recipe(allocation="owl"), {"allocation": "owl"}),                        # prune --allocation owl
])
def test_a_recipe_candidate_is_pruned_as_prune_prunes_it(tiny, fitness, monkeypatch, recipe, job_kw):
    from prunedsl.api import parse_allocation
    seen = _spy(monkeypatch)
    res = fitness.full(parse("wanda"), recipe)
    assert len(seen) == 1 and fitness.bench.dense is not None
    if recipe.allocation:
        assert res["allocation_seconds"] >= 0  # recorded with the other costs
        job_kw = {"allocation": parse_allocation(job_kw["allocation"])}
    run_prune(PruneJob(model=str(tiny / "model"), metric=parse("wanda"), sparsity=0.5, nsamples=4, seqlen=32,
                       seed=1, calib_data=str(tiny / "data" / "wiki.valid.tokens"), data_dir=str(tiny / "data"),
                       evaluate=False, progress=False, **job_kw))
    assert len(seen) == 2
    search_w, prune_w = seen
    assert search_w.keys() == prune_w.keys() and search_w
    for name in search_w:
        assert torch.equal(search_w[name], prune_w[name]), name


def test_plus_r_changes_the_validation_perplexity(fitness):
    mask = fitness.full(parse("wanda"))
    plus_r = fitness.full(parse("wanda"), Recipe(reconstruct=True, group="layer"))
    again = fitness.full(parse("wanda"))
    assert mask["val_ppl"] == again["val_ppl"]           # the model was dense again in between
    assert plus_r["val_ppl"] != mask["val_ppl"]
    assert plus_r["prune_seconds"] > 0 and "allocation_seconds" not in plus_r


def _search(cwd, out, *extra):
    return subprocess.run([sys.executable, "-m", "prunedsl", "search", "--output", str(out), *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def _comparable(state: dict) -> dict:
    """A state without the version, wall-clock times and the settings added since (recipes,
    selection slice, transfer)."""
    s = {k: v for k, v in state.items() if k not in ("version", "seconds")}
    later = ("recipes", "recipe", "reconstruct", "allocation", "select_windows", "select_top", "transfer_models",
             "time_limit", "proposer_seed", "gradients_note", "llm_seed")
    s["config"] = {k: v for k, v in s["config"].items() if k not in ("output", *later)}
    s["config"]["cli"] = {k: v for k, v in s["config"]["cli"].items() if k not in later}
    s["config"]["fitness"] = {k: v for k, v in s["config"]["fitness"].items() if k not in later}
    for h in s["history"]:
        h.pop("seconds")
    for c in s["candidates"]:
        c.pop("proxy_seconds")
        for k in ("prune_seconds", "eval_seconds"):
            (c["full"] or {}).pop(k, None)
    return s


def test_recipes_fixed_reproduces_the_search_before_recipes(tiny, tmp_path):
    out = tmp_path / "fixed"
    res = _search(tiny.parent, out, *V2_ARGS, "--recipes", "fixed")
    assert res.returncode == 0, res.stderr[-3000:]
    new, old = json.loads((out / "state.json").read_text()), json.loads((V2 / "state.json").read_text())
    assert new["version"] == 3 and old["version"] == 2
    assert new["config"]["recipes"] == "fixed" and all("recipe" not in c for c in new["candidates"])
    assert _comparable(new) == _comparable(old)
    assert (out / "hall.md").read_text() == (V2 / "hall.md").read_text()
    # the default searches the recipes: the same seeded run then has +R and allocation candidates
    res = _search(tiny.parent, tmp_path / "search", *V2_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    recipes = [c.get("recipe") for c in json.loads((tmp_path / "search" / "state.json").read_text())["candidates"]]
    assert any(r and r["reconstruct"] for r in recipes) and any(r and r["allocation"] for r in recipes)


def test_a_version_2_search_resumes_as_a_formula_only_search(tiny, tmp_path):
    out = tmp_path / "v2"
    shutil.copytree(V2, out)
    state = json.loads((out / "state.json").read_text())
    state["config"]["output"] = str(out)
    (out / "state.json").write_text(json.dumps(state))
    migrated = read_state(out)
    assert migrated.version == 3 and migrated.config.recipes == "fixed" and migrated.config.recipe == Recipe()
    assert migrated.config.cli["recipes"] == "fixed"
    res = _search(tiny.parent, out, "--resume", "--budget", "12", "--quiet", "--threads", "1", "--no-report")
    assert res.returncode == 0, res.stderr[-3000:]
    st = json.loads((out / "state.json").read_text())
    assert st["version"] == 3 and st["counters"]["screened"] - st["counters"]["seeds"] == 12
    assert all("recipe" not in c for c in st["candidates"])          # still formulas only
