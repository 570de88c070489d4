"""The typed search records (search/records.py): JSON round trips, the committed state
read and written back key for key, and a state.json with a missing, unknown or mistyped
key read as the clear "not a prunedsl search state" error naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from prunedsl.errors import SearchError
from prunedsl.search.base import Outcome, Proposal
from prunedsl.search.hall import write_hall, write_json
from prunedsl.search.records import (Candidate, Counters, Failure, HistoryPoint, SearchConfig,
                                     SearchState)
from prunedsl.search.state import read_state

V1 = Path(__file__).parent / "data" / "search_state_v1"

texts = st.text(max_size=12)
floats = st.floats(allow_nan=False)
maybe_float = st.none() | floats
json_scalars = st.none() | st.booleans() | st.integers() | floats | texts
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


@st.composite
def candidates(draw, index: int = 0) -> Candidate:
    return Candidate(id=index, input=draw(texts), text=draw(texts), pretty=draw(texts),
                     name=draw(st.none() | texts), canonical=draw(texts),
                     complexity=draw(st.integers(1, 40)), origin=draw(texts),
                     parents=tuple(draw(st.lists(texts, max_size=3))), node=draw(st.none() | st.integers(0, 99)),
                     note=draw(texts), proxy=draw(floats), proxy_seconds=draw(floats),
                     val_ppl=draw(maybe_float), full=draw(st.none() | st.dictionaries(texts, json_values, max_size=3)),
                     seed=draw(st.booleans()), screened_at=draw(st.integers(0, 99)),
                     twin_of=draw(st.none() | st.integers(0, 99)))


proposals = st.builds(Proposal, texts, texts, st.lists(texts, max_size=2).map(tuple),
                      st.none() | st.integers(0, 9), texts)
outcomes = st.builds(Outcome, proposals, st.booleans(), st.none() | texts, st.none() | texts,
                     st.none() | texts, maybe_float, maybe_float, st.none() | st.integers(1, 30),
                     st.dictionaries(texts, json_values, max_size=3))


@st.composite
def states(draw) -> SearchState:
    n = draw(st.integers(0, 4))
    return SearchState(
        config=SearchConfig(output=draw(texts), budget=draw(st.integers(0, 500)),
                            library_texts=tuple(draw(st.lists(texts, max_size=2))),
                            fitness=draw(st.dictionaries(texts, json_values, max_size=3)),
                            cli={"model": draw(texts)}),
        phase=draw(st.sampled_from(["seeds", "search", "report", "done"])),
        candidates=[draw(candidates(i)) for i in range(n)],
        failures=draw(st.lists(st.builds(Failure, texts, texts, texts, texts, st.booleans(),
                                         st.none() | texts), max_size=2)),
        history=draw(st.lists(st.builds(HistoryPoint, st.integers(0, 9), st.integers(0, 9), st.integers(0, 9),
                                        maybe_float, st.booleans(), maybe_float, floats), max_size=2)),
        pending=draw(st.lists(proposals, max_size=2)), unobserved=draw(st.lists(outcomes, max_size=2)),
        proposer=draw(st.none() | st.dictionaries(texts, json_values, max_size=3)),
        test=draw(st.dictionaries(texts, st.dictionaries(texts, json_values, max_size=2), max_size=2)),
        seconds=draw(floats), skipped_seeds=draw(st.dictionaries(texts, texts, max_size=2)),
        counters=draw(st.builds(Counters, *[st.integers(0, 999)] * 8)))


@settings(max_examples=200, deadline=None)
@given(candidates())
def test_candidate_json_round_trip(c):
    data = json.loads(json.dumps(c.to_json()))
    assert Candidate.from_json(data) == c
    assert ("twin_of" in data) == (c.twin_of is not None)  # left out until set, as before
    assert list(data)[:3] == ["id", "input", "text"]


@settings(max_examples=100, deadline=None)
@given(states())
def test_a_state_written_by_the_code_reads_back_equal(tmp_path_factory, state):
    out = tmp_path_factory.mktemp("run")
    write_json(out / "state.json", state.to_json())
    back = read_state(out)
    assert back == state
    write_json(out / "again.json", back.to_json())
    assert (out / "again.json").read_bytes() == (out / "state.json").read_bytes()


def test_fields_added_without_a_version_bump_are_left_out_until_set(tmp_path):
    state = read_state(V1)
    assert "selection" not in state.to_json() and "select_top" not in state.to_json()["config"]
    state.selection = {"c": {"select_ppl": 12.5, "select_nll_sums": [1.0, 2.0]}}
    state.transfer = {"gemma3-270m": {"c +R": {"test_ppl": 30.0}}}
    state.config.select_top, state.config.transfer_models = 2, ("gemma3-270m",)
    out = tmp_path / "run"
    out.mkdir()
    write_json(out / "state.json", state.to_json())
    back = read_state(out)
    assert back == state and back.config.transfer_models == ("gemma3-270m",)


def test_committed_state_is_written_back_key_for_key(tmp_path):
    raw = json.loads((V1 / "state.json").read_text())
    state = read_state(V1)
    # migrated to version 3: a formula-only search, with the mask-only recipe
    config = {**raw["config"], "recipes": "fixed", "cli": {**raw["config"]["cli"], "recipes": "fixed"},
              "recipe": {"reconstruct": False, "group": None, "allocation": None}}
    assert state.to_json() == {**raw, "version": 3, "config": config}
    for r, c in zip(raw["candidates"], state.candidates):
        assert c.to_json() == r and list(c.to_json()) == list(r)  # the key order too
    # the hall of fame it writes is the committed one, byte for byte
    write_hall(tmp_path, state)
    assert (tmp_path / "hall.json").read_text() == (V1 / "hall.json").read_text()
    assert (tmp_path / "hall.md").read_text() == (V1 / "hall.md").read_text()


def _broken(tmp_path, edit) -> pytest.ExceptionInfo:
    raw = json.loads((V1 / "state.json").read_text())
    edit(raw)
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text(json.dumps(raw))
    with pytest.raises(SearchError, match="not a prunedsl search state") as e:
        read_state(out)
    assert str(out / "state.json") in str(e.value) and "left as it is" in e.value.hint
    return e


def test_a_candidate_without_a_required_key_is_a_clear_error(tmp_path):
    e = _broken(tmp_path, lambda raw: raw["candidates"][3].pop("canonical"))
    assert "candidates[3] lacks canonical" in str(e.value)


@pytest.mark.parametrize("edit, why", [
    (lambda raw: raw["candidates"][0].update(colour="red"), "candidates[0] has unknown keys 'colour'"),
    (lambda raw: raw["candidates"][1].update(proxy="0.5"), "candidates[1].proxy is a JSON str, not float"),
    (lambda raw: raw["candidates"][2].update(parents=None), "candidates[2].parents is null, not a list"),
    (lambda raw: raw["failures"].append({"text": "W"}), "failures[0] lacks input"),
    (lambda raw: raw.update(phase="sideways"), "phase is 'sideways', not one of"),
    (lambda raw: raw.update(seconds=3.0), "seconds is not an object"),
    (lambda raw: raw["counters"].update(screened=True), "counters.screened is a JSON bool, not int"),
    (lambda raw: raw["pending"].append({"text": "W", "origin": "x", "mood": 1}), "pending[0] has unknown keys"),
    (lambda raw: raw.update(candidates={}), "candidates is a JSON dict, not a list"),
    (lambda raw: raw["candidates"].pop(0), "candidates[0].id is 1, not 0"),
])
def test_a_mistyped_or_unknown_key_is_a_clear_error(tmp_path, edit, why):
    assert why in str(_broken(tmp_path, edit).value)


def test_json_lists_are_read_as_the_tuples_the_records_hold():
    state = read_state(V1)
    assert isinstance(state.candidates[0].parents, tuple) and isinstance(state.config.library_texts, tuple)
