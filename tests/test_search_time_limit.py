"""--time-limit: the search stops asking, screening and fully evaluating once its wall clock
is spent, keeps the unscreened rest of the batch, and --resume with a larger limit goes on.
The clock is the engine's own ``_elapsed``, replaced here by one that advances 10 s per
screened candidate, so the test is exact and instant."""
from __future__ import annotations

import json

import pytest

from prunedsl.search import cli as search_cli
from prunedsl.search.engine import Engine
from prunedsl.search.records import SearchState
from test_search_engine import TEXTS, FakeFitness, Scripted, _config


def _clocked(engine: Engine) -> Engine:
    engine._elapsed = lambda: 10.0 * engine.state.counters.screened
    return engine


def test_the_time_limit_stops_screening_and_full_evaluations_and_resume_goes_on(tmp_path):
    fit = FakeFitness()
    cfg = _config(tmp_path, budget=8, full_evals=6, batch=4, report=False, time_limit=65.0)
    engine = _clocked(Engine(cfg, lambda: fit, Scripted(TEXTS), log=lambda m: None))
    engine.run()
    st = engine.state
    seeds = sum(r.seed for r in st.candidates)
    c = st.counters
    # the seeds' screenings take time too; the first one at or past 65 s (the 7th) is the last
    assert c.screened == 7 and c.screened_new == 7 - seeds < cfg.budget
    assert st.pending, "the unscreened rest of the batch is kept for --resume"
    found_full = [r for r in st.candidates if not r.seed and r.full is not None]
    assert len(found_full) < cfg.full_evals          # the final quota is not spent after the limit
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["config"]["time_limit"] == 65.0 and saved["phase"] == "done"

    # a larger limit: the kept proposals are screened first, then the search goes on to its budget
    pending = [p.text for p in st.pending]
    engine = _clocked(Engine(_config(tmp_path, budget=8, full_evals=6, batch=4, report=False, time_limit=1e6),
                             lambda: fit, Scripted(TEXTS), log=lambda m: None))
    engine.run(resume=True)
    st = engine.state
    assert st.counters.screened_new > 7 - seeds and not st.pending
    handled = [r.input for r in st.candidates if not r.seed] + [f.input for f in st.failures]
    assert pending and all(t in handled for t in pending)
    assert sum(1 for r in st.candidates if not r.seed and r.full is not None) == min(6, st.counters.screened_new)


def test_without_a_limit_nothing_changes(tmp_path):
    a, b = FakeFitness(), FakeFitness()
    e1 = Engine(_config(tmp_path / "a", report=False), lambda: a, Scripted(TEXTS), log=lambda m: None)
    e2 = _clocked(Engine(_config(tmp_path / "b", report=False, time_limit=1e9), lambda: b, Scripted(TEXTS),
                         log=lambda m: None))
    e1.run()
    e2.run()
    assert [r.key for r in e1.state.candidates] == [r.key for r in e2.state.candidates]
    assert a.full_calls == b.full_calls
    assert "time_limit" not in json.loads((tmp_path / "a" / "run" / "state.json").read_text())["config"]


@pytest.mark.parametrize("bad", ["0", "-5", "inf", "soon"])
def test_a_bad_time_limit_is_a_usage_error(bad, capsys):
    import argparse
    parser = argparse.ArgumentParser()
    search_cli.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--output", "x", "--time-limit", bad])
    err = capsys.readouterr().err
    assert "--time-limit" in err and "positive number of seconds" in err


def test_the_time_quota_counts_from_the_end_of_the_seeds(tmp_path):
    """The seeds' time is not the search's: the full-evaluation quota follows the share of
    the time left after them (on SmolLM2 the seeds took ~40% of 30 minutes)."""
    fit = FakeFitness()
    cfg = _config(tmp_path, budget=8, full_evals=6, batch=4, report=False, time_limit=1000.0)
    engine = _clocked(Engine(cfg, lambda: fit, Scripted(TEXTS), log=lambda m: None))
    engine.run()
    seeds = engine.state.counters.seeds
    assert seeds and engine.state.search_started == 10.0 * seeds  # the clock when the seeds were done
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["seconds"]["search_started"] == 10.0 * seeds
    assert SearchState.from_json(saved).search_started == 10.0 * seeds  # resume reads it back

    engine.state.search_started = 400.0
    for elapsed, share in [(400.0, 0.0), (700.0, 0.5), (1000.0, 1.0), (2000.0, 1.0)]:
        engine._elapsed = lambda e=elapsed: e
        assert engine._time_spent() == pytest.approx(share)
    engine.state.search_started = None     # a state from before: counts from 0, as it did
    engine._elapsed = lambda: 500.0
    assert engine._time_spent() == pytest.approx(0.5)
    engine.state.search_started = 1000.0   # the seeds spent the whole limit
    assert engine._time_spent() == 1.0
