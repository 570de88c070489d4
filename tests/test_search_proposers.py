"""The evolve and enumerate proposers: every child well-typed, operators respect types,
state round trips (RNG included) continue identically, enumeration is deduplicated."""
from __future__ import annotations

import json
import random


from prunedsl.api import parse
from prunedsl.dsl.ast import size
from prunedsl.search.base import Outcome, Proposal
from prunedsl.search.enumerate import EnumerateProposer
from prunedsl.search.evolve import EvolveProposer
from prunedsl.search.fitness import BASE_STATISTICS
from prunedsl.search.grammar import Grower, Vocabulary, nodes, replace_at, typecheck

VOCAB = Vocabulary.from_available(BASE_STATISTICS)
SEEDS = ["|W|", "|W| * ‖X‖", "ria", "W ^ 2 / hinv"]


def _fake_outcomes(props, canon=None):
    out = []
    for p in props:
        m = parse(p.text)
        c = m.canonical("row")
        out.append(Outcome(p, ok=True, canonical=c, proxy=(sum(map(ord, c)) % 89) / 89,
                           complexity=size(m.expr)))
    return out


def _seeded(seed=0, **kw):
    ev = EvolveProposer(seed=seed, vocab=VOCAB, initial_random=4, **kw)
    ev.observe(_fake_outcomes([Proposal(t, "seed") for t in SEEDS]))
    return ev


def test_evolve_children_are_checked_mat_metrics():
    ev = _seeded()
    origins = set()
    for _ in range(6):
        props = ev.propose(10)
        assert props
        for p in props:
            m = parse(p.text)  # what the engine does: must never fail for evolve
            # W is the only Mat operand of VOCAB, so a Mat child must read it, and nothing
            # outside the statistics the vocabulary was built from
            assert m.type.shape == "Mat" and "W" in m.requires and m.requires <= BASE_STATISTICS
            assert size(m.expr) <= ev.max_size
            origins.add(p.origin)
        ev.observe(_fake_outcomes(props))
    assert {"evolve:random", "evolve:crossover", "evolve:mutate"} <= origins
    assert any(p.parents for p in props)


def test_evolve_state_round_trip_continues_identically():
    a = _seeded(seed=5)
    a.observe(_fake_outcomes(a.propose(8)))
    saved = json.loads(json.dumps(a.state()))  # what the engine writes
    b = EvolveProposer(seed=99, vocab=VOCAB, initial_random=4)
    b.load_state(saved)
    for _ in range(3):
        pa, pb = a.propose(6), b.propose(6)
        assert [p.text for p in pa] == [p.text for p in pb]
        a.observe(_fake_outcomes(pa))
        b.observe(_fake_outcomes(pb))


def test_crossover_and_mutation_keep_shapes():
    rng = random.Random(1)
    grower = Grower(rng, VOCAB)
    for _ in range(200):
        shape = rng.choice(["Mat", "Row", "Col", "Scalar"])
        tree = typecheck(grower.grow(shape, 3))
        if tree is None:
            continue
        assert tree.type.shape == shape  # the typed grower builds what it was asked for
        path, node = rng.choice(list(nodes(tree)))
        if path and node.type is not None:
            new = typecheck(grower.grow(node.type.shape, 2, nonneg=node.type.nonneg))
            if new is not None:
                child = typecheck(replace_at(tree, path, new))
                if child is not None:
                    assert child.type.shape == shape


def test_enumerate_is_small_first_unique_and_well_typed():
    small = Vocabulary(mat=("W",), col=("x_norm2", "hinv"), scalar=())
    en = EnumerateProposer(vocab=small, max_size=4)
    props = en.propose(5000)
    assert en.propose(1) == []  # everything up to size 4 was handed out
    sizes = [int(p.note.split()[1]) for p in props]
    assert sizes == sorted(sizes) and sizes[0] == 1
    metrics = [parse(p.text) for p in props]
    canon = [m.canonical("row") for m in metrics]
    assert len(canon) == len(set(canon))  # no two rank the same
    assert all(m.type.shape == "Mat" and size(m.expr) <= 4 for m in metrics)
    assert {"W", "|W|"} <= {p.text for p in props}
    assert parse("wanda").canonical("row") in canon and parse("W ^ 2 / hinv").canonical("row") in canon


def test_enumerate_exhausts_and_resumes():
    tiny = Vocabulary(mat=("W",), col=("x_norm2",), scalar=())
    en = EnumerateProposer(vocab=tiny, max_size=3)
    first = en.propose(5)
    other = EnumerateProposer(vocab=tiny, max_size=3)
    other.load_state(json.loads(json.dumps(en.state())))
    assert [p.text for p in en.propose(1000)] == [p.text for p in other.propose(1000)]
    assert en.propose(10) == []  # exhausted: the engine stops
    assert first
