"""`prunedsl search --workers N`: full evaluations on Ray actors, on a tiny real model.

A local Ray (2 CPUs) with 2 workers gives the in-process search record for record (the
same hall of fame, the same validation perplexities to the last bit); a worker killed in
the middle of an evaluation loses nothing (its candidate goes back to the queue); a worker
that cannot start is a clear error; and ``--workers 1`` never imports Ray.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from prunedsl.dsl.library import BUILTIN
from prunedsl.errors import SearchError
from prunedsl.search.engine import Engine, SearchConfig
from prunedsl.search.evolve import EvolveProposer
from prunedsl.search.fitness import BASE_STATISTICS, Fitness, FitnessSettings
from prunedsl.search.grammar import Vocabulary
from prunedsl.search.recipe import RecipeSpace


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _settings(tiny) -> FitnessSettings:
    return FitnessSettings(model=str(tiny / "model"), data_dir=str(tiny / "data"), sparsity=0.5,
                           nsamples=4, seqlen=32, val_windows=4, seed=1)


def _run(tiny, out, pool_factory=None, recipes="fixed") -> Engine:
    fs = _settings(tiny)
    config = SearchConfig(output=str(out), budget=12, full_evals=3, batch=4, report=False,
                          fitness=fs.to_dict(), recipes=recipes)
    space = RecipeSpace.from_library(BUILTIN, fs.group) if recipes == "search" else None
    proposer = EvolveProposer(seed=1, vocab=Vocabulary.from_available(BASE_STATISTICS), recipes=space)
    engine = Engine(config, lambda: Fitness(fs, progress=False, log=lambda m: None), proposer,
                    log=lambda m: None, pool_factory=pool_factory)
    engine.run()
    return engine


def _comparable(engine: Engine) -> dict:
    """The state without wall-clock times."""
    st = engine.state.to_json()
    st.pop("seconds")
    st["config"].pop("output")
    for h in st["history"]:
        h.pop("seconds")
    for c in st["candidates"]:
        c.pop("proxy_seconds")
        for k in ("prune_seconds", "eval_seconds", "allocation_seconds"):
            (c["full"] or {}).pop(k, None)
    for o in st["unobserved"]:
        o.get("extra", {}).pop("seconds", None)
    return st


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """The in-process search, on one torch thread like each worker (bit-equal sums)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(tiny, tmp_path_factory.mktemp("ref") / "run")
    finally:
        torch.set_num_threads(threads)


def _ray_pool(tiny, pools, **kw):
    from prunedsl.search.ray_pool import RayPool

    def factory(fitness):
        pools.append(RayPool(_settings(tiny), 2, threads=1, log=lambda m: None, **kw))
        return pools[-1]
    return factory


def test_two_ray_workers_give_the_in_process_search(tiny, reference, ray_local, tmp_path):
    pools = []
    engine = _run(tiny, tmp_path / "run", _ray_pool(tiny, pools))
    assert all(n > 0 for n in pools[0].evaluated)          # both workers evaluated candidates
    assert sum(pools[0].evaluated) == engine.state.counters.full_evals
    assert _comparable(engine) == _comparable(reference)
    assert (tmp_path / "run" / "hall.md").read_text() == (reference.dir / "hall.md").read_text()
    assert ray_local.is_initialized()                       # the pool did not own this Ray


def test_ray_workers_evaluate_recipes_as_the_process_does(tiny, ray_local, tmp_path):
    """+R and allocation candidates travel to the actors with their recipe: the same state."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = _run(tiny, tmp_path / "here", recipes="search")
    finally:
        torch.set_num_threads(threads)
    there = _run(tiny, tmp_path / "ray", _ray_pool(tiny, []), recipes="search")
    recipes = [c.recipe for c in here.state.candidates if c.full]
    assert any(r.reconstruct for r in recipes) and any(r.allocation for r in recipes)
    assert _comparable(there) == _comparable(here)


def test_a_worker_killed_mid_evaluation_loses_nothing(tiny, reference, ray_local, tmp_path):
    from prunedsl.search.ray_pool import FullEvalWorker
    marker = str(tmp_path / "killed")

    class DiesOnce(FullEvalWorker):
        """The first worker to start its second evaluation is SIGKILLed in the middle of it."""
        calls = 0

        def full(self, text):
            self.calls += 1
            if self.calls == 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().full(text)

    pools = []
    engine = _run(tiny, tmp_path / "run", _ray_pool(tiny, pools, worker_cls=DiesOnce))
    assert os.path.exists(marker) and pools[0].requeued == 1
    assert _comparable(engine) == _comparable(reference)


def test_a_worker_that_cannot_start_is_a_clear_error(tiny, ray_local, tmp_path):
    from prunedsl.search.ray_pool import FullEvalWorker

    class NoModelHere(FullEvalWorker):
        def __init__(self, settings, threads=None):
            raise SearchError(f"cannot load {settings.model} on this node")

    with pytest.raises(SearchError, match="every Ray worker.*could not start: .*cannot load .* on this node") as err:
        _run(tiny, tmp_path / "run", _ray_pool(tiny, [], worker_cls=NoModelHere))
    assert "--resume" in err.value.render()
    assert (tmp_path / "run" / "state.json").exists()       # the screened seeds are saved


def test_one_worker_runs_in_process_without_ray(tiny, tmp_path):
    code = ("import sys; from prunedsl.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "search", "--model", str(tiny / "model"), "--data-dir",
           str(tiny / "data"), "--sparsity", "0.5", "--budget", "2", "--full-evals", "1", "--batch", "2",
           "--nsamples", "4", "--seqlen", "32", "--val-windows", "4", "--no-report", "--quiet",
           "--workers", "1", "--output", str(tmp_path / "run")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "best val ppl" in res.stdout
