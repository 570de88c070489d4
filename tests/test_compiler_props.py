"""Compiled == interpreted on random well-typed formulas and random statistics (micrograd's
pattern: the same expression through the optimized path and through the reference)."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from prunedsl.compiler import compile_expr, interpret
from prunedsl.compiler.plan import build_plan, f32
from prunedsl.dsl.ast import Num
from prunedsl.dsl.checker import check
from prunedsl.errors import NonFiniteScoreError

from strategies import checked_exprs, random_stats

SHAPE = {"Mat": lambda o, i: (o, i), "Row": lambda o, i: (o, 1), "Col": lambda o, i: (1, i),
         "Scalar": lambda o, i: ()}


def assert_same_scores(got: torch.Tensor, want: torch.Tensor):
    """Equal NaN and ±inf positions, finite values close (float32 reassociation)."""
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    for pred in (torch.isnan, torch.isposinf, torch.isneginf):
        assert torch.equal(pred(got), pred(want)), pred.__name__
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-5, atol=1e-6)


def _clone(stats):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in stats.items()}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(checked_exprs(max_depth=4, shape=None), random_stats())
def test_compiled_equals_interpreted(expr, stats):
    before = _clone(stats)
    want = interpret(expr, stats)
    m = compile_expr(expr)
    out, inn = stats["W"].shape
    assert want.shape == SHAPE[expr.type.shape](out, inn)
    try:
        got = m(stats, layer="test")
    except NonFiniteScoreError as err:
        assert not torch.isfinite(want).all()
        assert "on layer test" in str(err)
        got = m(stats, on_nonfinite="allow")
        want = torch.where(torch.isnan(want), torch.full_like(want, -math.inf), want)
    assert_same_scores(got, want)
    for k, v in before.items():  # in-place ops never touch the inputs
        if isinstance(v, torch.Tensor):
            assert torch.equal(stats[k], v), k


@settings(max_examples=200, deadline=None)
@given(checked_exprs(max_depth=4, shape="Mat", library=True), random_stats())
def test_compiled_equals_interpreted_with_library_metrics(expr, stats):
    want = interpret(expr, stats)
    got = compile_expr(expr)(stats, on_nonfinite="allow")
    want = torch.where(torch.isnan(want), torch.full_like(want, -math.inf), want)
    assert_same_scores(got, want)


@settings(max_examples=300, deadline=None)
@given(checked_exprs(max_depth=5, shape=None))
def test_plans_are_hashable_and_consistent(expr):
    plan = build_plan(expr)
    assert hash(plan) == hash(build_plan(expr)) and plan == build_plan(expr)
    defined = {r for _, r in plan.inputs}
    for ins, free, pos in zip(plan.instrs, plan.frees, plan.reuse):
        regs = [a for a in ins.args if isinstance(a, int)]
        assert set(regs) <= defined, "SSA: use before definition"
        assert ins.out not in defined
        defined.add(ins.out)
        defined -= set(free)  # a freed register is never read again
        if pos >= 0:
            assert ins.args[pos] in free
    assert plan.output in defined or not isinstance(plan.output, int)
    # no two instructions compute the same thing
    keys = [(ins.op, ins.args) for ins in plan.instrs]
    assert len(keys) == len(set(keys))


_SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e-8, 1e30, -1e30, 3e38, 1e-40, math.inf, -math.inf,
            math.nan, 0.1, 2.5e-3, 7.0]


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "min", "max", "sqrt", "abs", "sq",
                                "^2", "^0.5", "^-1", "^0", "^1"])
def test_constant_folding_matches_torch_float32(op):
    from prunedsl.dsl.ast import BinOp, Call
    from prunedsl.dsl.types import Type
    for a in _SPECIAL:
        for b in _SPECIAL:
            if op in "+-*/":
                e = BinOp(op, Num(a), Num(b))
            elif op in ("min", "max"):
                e = Call(op, (Num(a), Num(b)))
            elif op.startswith("^"):
                if b != _SPECIAL[0]:
                    continue
                e = BinOp("^", Num(a), Num(float(op[1:])))
            else:
                if b != _SPECIAL[0]:
                    continue
                e = Call(op, (Num(a),))
            e = _typed(e, Type)
            plan = build_plan(e)
            want = interpret(e, {})
            got = compile_expr(e)({}, on_nonfinite="allow") if plan.instrs else \
                torch.tensor(plan.output.value)
            if not plan.instrs:  # folded: exactly torch's float32 answer, sign of zero too
                v, w = plan.output.value, want.item()
                assert (math.isnan(v) and math.isnan(w)) or (v == w and math.copysign(1, v) ==
                                                             math.copysign(1, w)), (op, a, b, v, w)
            else:  # not folded (sqrt, ^0.5), or finite inputs gave inf/NaN: computed by torch
                assert op in ("sqrt", "^0.5") or not math.isfinite(want.item())
                w = want.item()
                assert got.item() == (-math.inf if math.isnan(w) else w)


def _typed(e, Type):
    """Attach types to a hand-built number-only tree (check() would fold Neg)."""
    from dataclasses import replace
    from prunedsl.dsl.ast import BinOp, Call
    if isinstance(e, Num):
        return replace(e, type=Type("Scalar", "signed"))
    if isinstance(e, BinOp):
        return replace(e, left=_typed(e.left, Type), right=_typed(e.right, Type),
                       type=Type("Scalar", "signed"))
    return replace(e, args=tuple(_typed(a, Type) for a in e.args), type=Type("Scalar", "signed"))


def test_f32_rounding():
    assert f32(0.1) == torch.tensor(0.1).item()
    assert f32(1e39) == math.inf and f32(-1e39) == -math.inf
    assert f32(3.4028235e38) == 3.4028234663852886e38
    assert math.isnan(f32(math.nan))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["2 * 3 / 7 + 0.1", "(1 + 1e-8) * 3", "sqrt(2) * 0.1 - 5",
                        "min(0.3, 0.1 / 3)", "2 ^ 0.5 / 3"]), random_stats())
def test_folded_constants_agree_with_the_interpreter(text, stats):
    from prunedsl.dsl.parser import parse_expr
    expr = check(parse_expr(f"W * ({text})"))
    assert_same_scores(compile_expr(expr)(stats, on_nonfinite="allow"),
                       torch.nan_to_num(interpret(expr, stats), nan=-math.inf,
                                        posinf=math.inf, neginf=-math.inf))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(checked_exprs(max_depth=4, shape=None), random_stats(shape_out=37, shape_in=300))
def test_compiled_equals_interpreted_on_vectorized_sizes(expr, stats):
    """Sizes that take torch's vectorized and multi-threaded paths."""
    want = interpret(expr, stats)
    got = compile_expr(expr)(stats, on_nonfinite="allow")
    want = torch.where(torch.isnan(want), torch.full_like(want, -math.inf), want)
    assert_same_scores(got, want)
