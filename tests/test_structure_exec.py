"""Compiled structure scores (compiler/structure.py): equal to the loop-per-structure reference
on random members, the library entries on a hand-built example, and clear errors."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from prunedsl.api import parse_structure_metric
from prunedsl.compiler.interpret import interpret
from prunedsl.compiler.structure import compile_structure
from prunedsl.compiler.structure_exec import Member
from prunedsl.compiler.structure_interpret import interpret_structure
from prunedsl.dsl.ast import Call, walk
from prunedsl.dsl.printer import to_text
from prunedsl.errors import CompileError, NonFiniteScoreError

from strategies import random_stats
from test_structure_lang import structure_trees


# --- compiled = interpreted --------------------------------------------------------------------
@st.composite
def width_members(draw):
    """A channels/heads-like structure set: producers own rows, consumers own columns;
    structure s owns k entries of each, at random positions."""
    n, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    hidden = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    gen = torch.Generator().manual_seed(seed)
    members = []
    for i in range(draw(st.integers(0, 2)) + 1):
        stats = draw(random_stats(n * k, hidden))
        members.append(Member(f"up{i}", "producer", stats, torch.randperm(n * k, generator=gen).reshape(n, k)))
    for i in range(draw(st.integers(0, 1)) + 1):
        stats = draw(random_stats(hidden, n * k))
        members.append(Member(f"down{i}", "consumer", stats, torch.randperm(n * k, generator=gen).reshape(n, k)))
    return members


def _per_weight_finite(expr, members) -> bool:
    for node in walk(expr):
        if isinstance(node, Call) and node.func in ("group_sum", "group_max", "producers", "consumers"):
            for m in members:
                if not bool(torch.isfinite(interpret(node.args[0], dict(m.stats))).all()):
                    return False
    return True


def assert_close(got: torch.Tensor, want: torch.Tensor):
    assert got.shape == want.shape and got.dtype == torch.float32
    want = torch.where(torch.isnan(want), torch.full_like(want, -math.inf), want)  # "allow": NaN → -inf
    same = (got == want) | torch.isclose(got, want, rtol=1e-3, atol=1e-3 * (1 + float(want[torch.isfinite(want)].abs().max(
        ) if torch.isfinite(want).any() else 0)))
    assert bool(same.all()), (got, want)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                      HealthCheck.data_too_large])


@settings(max_examples=80, **SETTINGS)
@given(structure_trees(), width_members())
def test_compiled_equals_interpreted(tree, members):
    try:
        sm = parse_structure_metric(to_text(tree), kind="channels")
    except Exception:
        assume(False)
    assume(_per_weight_finite(sm.expr, members))
    got = sm.compile()(members, {}, on_nonfinite="allow")
    assert_close(got, interpret_structure(sm.expr, members, {}))


@settings(max_examples=30, **SETTINGS)
@given(st.sampled_from(["magnitude_sp", "taylor", "wanda_sp", "flap", "saap_fusion"]), width_members())
def test_library_compiled_equals_interpreted(name, members):
    sm = parse_structure_metric(name)
    assume(_per_weight_finite(sm.expr, members))
    assert_close(sm.compile()(members, {}, on_nonfinite="allow"), interpret_structure(sm.expr, members, {}))


# --- the library on a hand-built example ---------------------------------------------------------------
# Three MLP channels; channel s owns row s of up (producer) and column s of down (consumer).
UP = {"W": torch.tensor([[1., -2.], [3., 4.], [0., 1.]]), "G": torch.tensor([[1., 1.], [2., 2.], [1., 3.]]),
      "x_norm2": torch.tensor([[1., 2.]]), "x_var": torch.tensor([[9., 9.]])}
DOWN = {"W": torch.tensor([[5., -6., 1.], [7., 8., -1.]]), "G": torch.tensor([[1., 2., 1.], [1., 2., 1.]]),
        "x_norm2": torch.tensor([[3., 1., 2.]]), "x_var": torch.tensor([[2., 4., 1.]])}
ROWS = torch.tensor([[0], [1], [2]])
CHANNELS = [Member("mlp.up_proj", "producer", UP, ROWS), Member("mlp.down_proj", "consumer", DOWN, ROWS)]


def _std(xs):  # population
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


MAGNITUDE = [1 + 2 + 5 + 7, 3 + 4 + 6 + 8, 0 + 1 + 1 + 1]
TAYLOR = [1 * 1 + 2 * 1 + 5 * 1 + 7 * 1, 3 * 2 + 4 * 2 + 6 * 2 + 8 * 2, 0 * 1 + 1 * 3 + 1 * 1 + 1 * 1]
WANDA = [1 * 1 + 2 * 2 + (5 + 7) * 3, 3 * 1 + 4 * 2 + (6 + 8) * 1, 0 * 1 + 1 * 2 + (1 + 1) * 2]
FLAP = [2 * (5 ** 2 + 7 ** 2), 4 * (6 ** 2 + 8 ** 2), 1 * (1 ** 2 + 1 ** 2)]  # up's var(X) is not read
SAAP = [t / _std(TAYLOR) + w / _std(WANDA) for t, w in zip(TAYLOR, WANDA)]


@pytest.mark.parametrize("name, want", [("magnitude_sp", MAGNITUDE), ("taylor", TAYLOR), ("wanda_sp", WANDA),
                                        ("flap", FLAP), ("saap_fusion", SAAP)])
def test_library_values_by_hand(name, want):
    assert MAGNITUDE == [15, 21, 3] and TAYLOR == [15, 42, 5] and WANDA == [41, 25, 6] and FLAP == [148, 400, 2]
    got = parse_structure_metric(name).compile()(CHANNELS, {})
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float32), rtol=1e-6), (got, want)


def test_blocks_by_hand():
    whole = [Member("layers.0.mlp.up_proj", "whole", UP, None), Member("layers.0.mlp.down_proj", "whole", DOWN, None)]
    got = parse_structure_metric("shortgpt").compile()(whole, {"block_influence": torch.tensor(0.25)})
    assert got.tolist() == [0.25]
    got = parse_structure_metric("magnitude_sp").compile()(whole, {})
    assert got.tolist() == [1 + 2 + 3 + 4 + 0 + 1 + 5 + 6 + 1 + 7 + 8 + 1]
    got = parse_structure_metric("block_influence * group_max(|W|)").compile()(whole, {"block_influence": 0.5})
    assert got.tolist() == [0.5 * 8]


def test_heads_own_several_rows_and_columns():
    # two heads of head_dim 2: head h owns rows 2h, 2h+1 of q and columns 2h, 2h+1 of o
    q = {"W": torch.arange(8.).reshape(4, 2)}
    o = {"W": torch.arange(8.).reshape(2, 4)}
    idx = torch.tensor([[0, 1], [2, 3]])
    got = parse_structure_metric("group_sum(|W|)").compile()(
        [Member("q_proj", "producer", q, idx), Member("o_proj", "consumer", o, idx)], {})
    assert got.tolist() == [(0 + 1 + 2 + 3) + (0 + 1 + 4 + 5), (4 + 5 + 6 + 7) + (2 + 3 + 6 + 7)]


def test_row_and_col_metrics_score_every_weight_of_their_row_or_column():
    # ‖X‖ is a Col: each of the 2 owned weights of an up row gets its input channel's norm
    got = parse_structure_metric("producers(norm(X))").compile()(CHANNELS, {})
    assert got.tolist() == [3, 3, 3]
    got = parse_structure_metric("consumers(norm(X))").compile()(CHANNELS, {})
    assert got.tolist() == [6, 2, 4]


# --- errors ----------------------------------------------------------------------------------------
def test_bad_members_give_clear_errors():
    fn = parse_structure_metric("taylor").compile()
    with pytest.raises(CompileError, match="role 'rows'"):
        fn([Member("up", "rows", UP, ROWS)], {})
    with pytest.raises(CompileError, match="index out of range for 3 columns"):
        fn([Member("down", "consumer", DOWN, torch.tensor([[0], [3]]))], {})
    with pytest.raises(CompileError, match="disagree on the number of structures"):
        fn([Member("up", "producer", UP, ROWS), Member("down", "consumer", DOWN, torch.tensor([[0], [1]]))], {})
    with pytest.raises(CompileError, match="int64 index"):
        fn([Member("up", "producer", UP, ROWS.to(torch.int32))], {})
    with pytest.raises(CompileError, match="missing statistic"):
        fn([Member("up", "producer", {"W": UP["W"]}, ROWS)], {})
    with pytest.raises(CompileError, match="missing block statistic block_influence"):
        parse_structure_metric("shortgpt").compile()([Member("b", "whole", UP, None)], {})
    with pytest.raises(CompileError, match="reads consumer members"):
        parse_structure_metric("flap").compile()([Member("b", "whole", UP, None)], {})


def test_nan_scores_raise_unless_allowed():
    fn = compile_structure(parse_structure_metric("(taylor - taylor) / group_sum(|W| * 0)").expr)  # 0 / 0
    with pytest.raises(NonFiniteScoreError, match="NaN"):
        fn(CHANNELS, {})
    assert torch.isneginf(fn(CHANNELS, {}, on_nonfinite="allow")).any()


def test_stdnorm_of_tied_structures_is_zero():
    tied = [Member("up", "producer", {"W": torch.ones(3, 2)}, ROWS)]
    assert parse_structure_metric("stdnorm(group_sum(W))").compile()(tied, {}).tolist() == [0, 0, 0]
