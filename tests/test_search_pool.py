"""The engine with a pool whose workers finish in any order (no model, no Ray: milliseconds).

A `ShuffledPool` keeps several full evaluations in flight and finishes them in a random
order, answering "not ready yet" at random: the search it drives must be the in-process
search, record for record, and a kill with evaluations in flight must resume to it.
The same with Ray actors and a real tiny model is tests/test_search_ray.py.
"""
from __future__ import annotations

import random
import sys

import pytest

from prunedsl.api import parse
from prunedsl.search.engine import Engine, SearchConfig
from prunedsl.search.evolve import EvolveProposer
from prunedsl.search.fitness import BASE_STATISTICS, FitnessSettings
from prunedsl.search.grammar import Vocabulary
from prunedsl.search.hall import read_state
from prunedsl.search.pool import FullResult, InProcessPool, evaluate_full
from prunedsl.search.records import SearchState


class FakeFitness:
    """Proxy from the canonical form; val ppl a different function of it (so the best by
    proxy is not the best by val ppl); formulas reading hinv (the sparsegpt seed) fail
    their full evaluation."""

    available = BASE_STATISTICS

    def __init__(self, crash_after: int | None = None):
        self.calls, self.crash_after = 0, crash_after

    def _tick(self):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise KeyboardInterrupt  # stands in for a kill

    def proxy(self, metric, recipe=None) -> float:
        self._tick()
        c = metric.canonical("row")
        return (sum(map(ord, c)) % 97) / 97 + 0.01 * len(c)

    def full(self, metric) -> dict:
        self._tick()
        if "hinv" in metric.text():
            raise ValueError("the pruned model is broken")
        c = metric.canonical("row")
        return {"val_ppl": 100 + (sum(map(ord, c)) * 7919) % 101, "sparsity": 0.5}


class ShuffledPool:
    """Evaluates what was submitted in a random order, a random number at a time."""

    workers = 3

    def __init__(self, fitness, rng: random.Random):
        self.fitness, self.rng = fitness, rng
        self.order: list[int] = []
        self.texts: dict[int, str] = {}
        self.done: dict[int, FullResult] = {}
        self.most_in_flight = 0

    def submit(self, key: int, text: str) -> None:
        self.order.append(key)
        self.texts[key] = text
        self.most_in_flight = max(self.most_in_flight, len(self.order))

    def _finish_one(self) -> None:
        key = self.rng.choice([k for k in self.order if k not in self.done])
        self.done[key] = FullResult(key, *evaluate_full(self.fitness, self.texts[key]))

    def next_result(self, wait: bool = True) -> FullResult | None:
        while self.order:
            head = self.order[0]
            if head in self.done:
                self.order.pop(0)
                return self.done.pop(head)
            if not wait and self.rng.random() < 0.6:
                return None
            self._finish_one()
        return None

    def close(self) -> None:
        self.order.clear()


def _config(out, **kw) -> SearchConfig:
    base = dict(output=str(out), budget=14, full_evals=5, batch=4, report=False,
                fitness=FitnessSettings("fake", sparsity=0.5).to_dict())
    return SearchConfig(**{**base, **kw})


def _evolve():
    return EvolveProposer(seed=3, vocab=Vocabulary.from_available(BASE_STATISTICS), initial_random=4)


def _comparable(state: SearchState) -> dict:
    """The state as JSON without wall-clock times."""
    st = state.to_json()
    st.pop("seconds")
    st["config"].pop("output")
    for h in st["history"]:
        h.pop("seconds")
    for c in st["candidates"]:
        c.pop("proxy_seconds")
    for o in st["unobserved"]:
        o.get("extra", {}).pop("seconds", None)
    return st


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    engine = Engine(_config(tmp_path_factory.mktemp("ref") / "run"), FakeFitness, _evolve(),
                    log=lambda m: None)
    engine.run()
    return engine


@pytest.mark.parametrize("seed", range(5))
def test_any_completion_order_gives_the_in_process_search(reference, tmp_path, seed):
    pools = []

    def pool_factory(fitness):
        pools.append(ShuffledPool(fitness, random.Random(seed)))
        return pools[-1]

    engine = Engine(_config(tmp_path / "run"), FakeFitness, _evolve(), log=lambda m: None,
                    pool_factory=pool_factory)
    engine.run()
    assert pools[0].most_in_flight > 1                       # it did run several at once
    assert any(r.full and "error" in r.full for r in engine.state.candidates)  # failures too
    assert _comparable(engine.state) == _comparable(reference.state)
    assert (tmp_path / "run" / "hall.md").read_text() == (reference.dir / "hall.md").read_text()


@pytest.mark.parametrize("when", [0.1, 0.5, 0.95])
def test_a_kill_with_evaluations_in_flight_resumes_to_the_same_search(reference, tmp_path, when):
    crash_after = int(when * reference.fitness.calls)  # evaluations before the "kill"
    out = tmp_path / "run"
    crashed = Engine(_config(out), lambda: FakeFitness(crash_after), _evolve(), log=lambda m: None,
                     pool_factory=lambda fit: ShuffledPool(fit, random.Random(crash_after)))
    with pytest.raises(KeyboardInterrupt):
        crashed.run()
    before = read_state(out)
    in_flight = [r for r in before.candidates if r.full is None and r.seed]
    resumed = Engine(_config(out), FakeFitness, _evolve(), log=lambda m: None,
                     pool_factory=lambda fit: ShuffledPool(fit, random.Random(1)))
    resumed.run(resume=True)
    after = resumed.state
    # what was saved is kept; what was in flight was evaluated on resume
    assert [r.canonical for r in after.candidates][:len(before.candidates)] == \
        [r.canonical for r in before.candidates]
    assert all(after.candidates[r.id].full is not None for r in in_flight)
    assert [(r.canonical, r.proxy, r.val_ppl, r.full is not None) for r in after.candidates] == \
        [(r.canonical, r.proxy, r.val_ppl, r.full is not None) for r in reference.state.candidates]
    assert after.counters == reference.state.counters


def test_in_process_pool_evaluates_in_submission_order():
    seen = []

    class Recording(FakeFitness):
        def full(self, metric):
            seen.append(metric.text())
            return super().full(metric)

    pool = InProcessPool(Recording())
    assert pool.next_result(wait=False) is None              # nothing submitted
    for key, text in enumerate(["|W|", "W ^ 2 / hinv", "|W| * ‖X‖"]):
        pool.submit(key, text)
    results = [pool.next_result(wait=False) for _ in range(3)]
    assert [r.key for r in results] == [0, 1, 2]
    assert seen == [parse(t).text() for t in ["|W|", "W ^ 2 / hinv", "|W| * ‖X‖"]]
    assert "broken" in results[1].result["error"] and results[0].result["val_ppl"] > 0
    assert pool.next_result() is None


def test_ray_missing_is_a_clear_error(monkeypatch):
    from prunedsl.errors import SearchError
    from prunedsl.search.ray_pool import import_ray
    monkeypatch.setitem(sys.modules, "ray", None)            # as if not installed
    with pytest.raises(SearchError, match="not installed") as err:
        import_ray()
    assert "prunedsl[distributed]" in err.value.render()


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "--workers is 0"),
    (["--ray-address", "auto"], "need --workers N with N ≥ 2"),
    (["--worker-gpus", "1"], "need --workers N with N ≥ 2"),
])
def test_worker_options_are_checked_before_anything_loads(tmp_path, capsys, extra, message):
    from prunedsl.cli import main
    rc = main(["search", "--model", "no-such-model", "--sparsity", "0.5", "--output", str(tmp_path / "run"),
               *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
