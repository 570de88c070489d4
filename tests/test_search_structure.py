"""``prunedsl search --structure``: structure-score formulas searched with the same engine on a
saved tiny Llama; seeds are the library's structure scores, the hall of fame holds structure
formulas, resume continues the same search."""
import json

import pytest

from prunedsl import cli
from prunedsl.dsl.library import BUILTIN
from prunedsl.search.structure_grammar import StructureProposer, first_reducer_argument, templates
from prunedsl.search.structure_mode import parse_structure, structure_seeds


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny_struct_search"))


def _search(tiny, out, *extra):
    return cli.main(["search", "--model", str(tiny / "model"), "--data-dir", str(tiny / "data"),
                     "--nsamples", "2", "--seqlen", "16", "--val-windows", "2", "--threads", "1",
                     "--batch", "3", "--output", str(out), "--json", *extra])


def test_seeds_are_the_structure_scores_valid_for_the_kind():
    assert [n for n, _ in structure_seeds(BUILTIN, "blocks")] == ["magnitude_sp", "taylor", "wanda_sp", "shortgpt"]
    channels = [n for n, _ in structure_seeds(BUILTIN, "channels")]
    assert "flap" in channels and "saap_fusion" in channels and "shortgpt" not in channels


@pytest.mark.parametrize("kind", ["channels", "heads", "blocks"])
def test_every_template_is_a_valid_structure_formula(kind):
    for t in templates(kind, ("wanda_sp", "flap") if kind != "blocks" else ()):
        sm = parse_structure(t.format(m="|W| * var(X)"), BUILTIN, kind)
        assert kind in sm.kinds


def test_seed_outcomes_reach_the_inner_proposer_as_per_weight_formulas():
    sm = parse_structure("flap", BUILTIN, "channels")
    assert first_reducer_argument(sm.expr) is not None

    class Inner:
        name = "evolve"
        seen = []

        def propose(self, n):
            return []

        def observe(self, outcomes):
            self.seen.extend(o.proposal.text for o in outcomes)

        def state(self):
            return {}

    from prunedsl.search.base import Outcome, Proposal
    p = StructureProposer(Inner(), kind="channels", parse_structure=lambda t: parse_structure(t, BUILTIN, "channels"))
    p.observe([Outcome(Proposal("wanda_sp", "seed"), ok=True, canonical="c", proxy=0.1)])
    assert Inner.seen == ["|W| * ‖X‖"]


def test_structure_search_writes_a_hall_of_structure_formulas_and_resumes(tiny, tmp_path, capsys):
    out = tmp_path / "s"
    assert _search(tiny, out, "--structure", "channels", "--ratio", "0.25", "--budget", "3",
                   "--full-evals", "2") == 0
    first = json.loads(capsys.readouterr().out)
    c = first["counters"]
    assert c["screened"] - c["seeds"] == 3 and first["best"] is not None
    state = json.loads((out / "state.json").read_text())
    seeds = {c["name"] for c in state["candidates"] if c["seed"]}
    assert {"magnitude_sp", "wanda_sp", "flap"} <= seeds and "shortgpt" not in seeds
    new = [c for c in state["candidates"] if not c["seed"]]
    for c in new:  # every candidate is a structure formula for channels
        parse_structure(c["text"], BUILTIN, "channels")
        assert c["text"].split("(")[0] in ("group_sum", "group_max", "producers", "consumers", "stdnorm")
    evaluated = [c for c in state["candidates"] if c["val_ppl"] is not None]
    assert evaluated and all(c["full"]["removed"] == 2 * 32 for c in evaluated)   # 25% of 128, 2 blocks
    hall = (out / "hall.md").read_text()
    assert "group_sum" in hall or "consumers" in hall
    # resume with a larger budget: the same search goes on, seeds not redone
    assert _search(tiny, out, "--resume", "--budget", "6") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["counters"]["screened"] - second["counters"]["seeds"] == 6
    state2 = json.loads((out / "state.json").read_text())
    assert state2["candidates"][: len(state["candidates"])] == state["candidates"]
    assert sum(c["seed"] for c in state2["candidates"]) == len(seeds)


def test_blocks_search_and_bad_settings(tiny, tmp_path, capsys):
    assert _search(tiny, tmp_path / "b", "--structure", "blocks", "--ratio", "0.5", "--budget", "2",
                   "--full-evals", "1") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["best"]["full"]["keep"] == [[0]] or res["best"]["full"]["keep"] == [[1]]
    assert _search(tiny, tmp_path / "c", "--structure", "heads") != 0
    assert "--ratio" in capsys.readouterr().err


def test_structure_search_inside_a_block_range(tiny, tmp_path, capsys):
    out = tmp_path / "range"
    assert _search(tiny, out, "--structure", "channels", "--ratio", "0.25", "--structure-blocks", "1:",
                   "--budget", "1", "--full-evals", "1") == 0
    capsys.readouterr()
    state = json.loads((out / "state.json").read_text())
    evaluated = [c for c in state["candidates"] if c["val_ppl"] is not None]
    assert evaluated and all(c["full"]["removed"] == 32 for c in evaluated)   # 25% of block 1 only
    assert all(c["full"]["keep"][0] == list(range(128)) for c in evaluated)
    assert _search(tiny, out, "--resume", "--structure-blocks", "0:") != 0   # part of the saved fitness
    assert "--structure-blocks 0: differs from the saved search (1:)" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--structure", "blocks", "--ratio", "0.5", "--structure-blocks", "1:"], "applies to channels and heads"),
    (["--structure", "channels", "--ratio", "0.5", "--structure-blocks", "x"], "--structure-blocks 'x' is not a block range"),
    (["--structure", "channels", "--ratio", "0.5", "--structure-blocks", "4:"], "reaches past the model's 2 decoder blocks"),
    (["--sparsity", "0.5", "--structure-blocks", "1:"], "--structure-blocks only applies with --structure"),
])
def test_bad_block_ranges_in_a_structure_search(tiny, tmp_path, capsys, extra, message):
    assert _search(tiny, tmp_path / "bad", *extra, "--budget", "1", "--full-evals", "0") != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
