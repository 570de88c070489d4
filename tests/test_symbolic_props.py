"""Property tests of the sympy layer on random well-typed formulas (tests/strategies.py):

1. formula() parses, checks, keeps the shape and computes the same scores where the
   original is finite;
2. canonical() is stable: the same for formula(e), and a fixpoint when re-parsed;
3. metrics that canonical() calls equal rank every comparison group the same way.

Scores are computed by ``evaluate``, a float64 numpy twin of ``compiler.interpret`` (the
reference semantics; ``test_evaluate_matches_the_interpreter`` keeps the two in step).
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from prunedsl.dsl import symbolic
from prunedsl.dsl.ast import BinOp, Call, Neg, Num, Operand
from prunedsl.dsl.checker import check
from prunedsl.dsl.parser import parse_expr

from strategies import checked_exprs

GROUPS = ("row", "layer", "global")

SCALE = float(os.environ.get("PRUNEDSL_TEST_SCALE", "1"))  # e.g. 20 for a long hunt


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- a float64 reference evaluator ----------------------------------------------------------
def evaluate(e, stats):
    """Scores of a checked expression; Mat (out, in), Row (out, 1), Col (1, in), Scalar 0-d."""
    with np.errstate(all="ignore"):
        out = np.asarray(_eval(e, stats), dtype=np.float64)
    return out.reshape(()) if e.type.shape == "Scalar" else out


def _eval(e, s):
    if isinstance(e, Num):
        return np.float64(e.value)
    if isinstance(e, Operand):
        return s[e.key]
    if isinstance(e, Neg):
        return -_eval(e.operand, s)
    if isinstance(e, BinOp):
        a = _eval(e.left, s)
        if e.op == "^":
            return np.power(a, e.right.value)
        b = _eval(e.right, s)
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[e.op](a, b)
    assert isinstance(e, Call), e
    args = [_eval(a, s) for a in e.args]
    if len(args) == 2:
        return (np.minimum if e.func == "min" else np.maximum)(*args)
    x = np.asarray(args[0], dtype=np.float64)
    f = e.func
    simple = {"abs": np.abs, "sqrt": np.sqrt, "log": np.log, "exp": np.exp, "tanh": np.tanh,
              "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "sq": lambda v: v * v}
    if f in simple:
        return simple[f](x)
    if f.startswith(("row_", "col_")):
        axis, red = f.split("_", 1)
        return _reduce(red, x, 1 if axis == "row" else 0)
    if f in ("sum", "mean", "std", "max", "min", "fro"):
        return _reduce("norm" if f == "fro" else f, x, None)
    if f == "minmax":
        lo, hi = x.min(), x.max()
        return np.zeros_like(x) if hi - lo == 0 else (x - lo) / (hi - lo)
    if f == "zscore":
        sd = x.std()
        return np.zeros_like(x) if sd == 0 else (x - x.mean()) / sd
    raise AssertionError(f)


def _reduce(red, x, axis):
    kw = {"axis": axis, "keepdims": axis is not None}
    if red == "norm":
        return np.sqrt(np.sum(x * x, **kw))
    return {"sum": np.sum, "mean": np.mean, "std": np.std, "max": np.max, "min": np.min}[red](x, **kw)


def make_stats(seed: int, out: int = 4, inn: int = 5):
    """Generic statistics (no exact zeros or ties): W signed, the rest by their sign."""
    rng = np.random.default_rng(seed)
    scale = lambda shape: np.exp(rng.normal(0, 0.7, shape))  # noqa: E731
    signed = lambda shape: rng.normal(0, 1, shape) * scale(shape)  # noqa: E731
    stats = {"W": signed((out, inn)), "G": np.abs(signed((out, inn))) + 1e-3,
             "hinv": np.abs(signed((1, inn))) + 0.125, "x_mean": signed((1, inn)),
             "n_in": np.float64(inn), "n_out": np.float64(out)}
    for key in ("x_norm2", "x_norm1", "x_norminf", "x_std", "x_var"):
        stats[key] = np.abs(signed((1, inn))) + 1e-3
    return stats


def reparse(text):
    return check(parse_expr(text))


# --- 1. formula() ---------------------------------------------------------------------------------
def assert_same_scores(got, want, text):
    assert got.shape == want.shape, text
    fin = np.isfinite(want)
    scale = np.max(np.abs(want[fin]), initial=1.0)
    assert np.allclose(got[fin], want[fin], rtol=1e-6, atol=1e-9 * scale), text


@settings(max_examples=scaled(300), **SETTINGS)
@given(checked_exprs(max_depth=4, shape=None), st.integers(0, 2 ** 32 - 1))
def test_formula_parses_checks_and_computes_the_same(expr, seed):
    text = symbolic.formula(expr)
    back = reparse(text)
    assert back.type.shape == expr.type.shape, text
    for k in range(2):
        stats = make_stats(seed + k, out=3 + k, inn=4 + 2 * k)
        assert_same_scores(evaluate(back, stats), evaluate(expr, stats), text)
    assert symbolic.formula(back) == text or reparse(symbolic.formula(back)).type == back.type
    symbolic.pretty(expr), symbolic.latex(expr)


@settings(max_examples=scaled(60), **SETTINGS)
@given(checked_exprs(max_depth=3, shape="Mat", library=True), st.integers(0, 2 ** 32 - 1))
def test_formula_of_library_metrics(expr, seed):
    back = reparse(symbolic.formula(expr))
    stats = make_stats(seed)
    assert_same_scores(evaluate(back, stats), evaluate(expr, stats), symbolic.formula(expr))


# --- 2. canonical() is stable --------------------------------------------------------------------
@settings(max_examples=scaled(300), **SETTINGS)
@given(checked_exprs(max_depth=4, shape=None))
def test_canonical_is_stable(expr):
    simplified = reparse(symbolic.formula(expr))
    for group in GROUPS:
        c = symbolic.canonical(expr, group)
        assert symbolic.canonical(simplified, group) == c, group
        assert symbolic.canonical(reparse(c), group) == c, group  # a fixpoint, and it parses


# --- 3. canonical() claims only true rank equivalences ----------------------------------------------
def assert_same_order(f, g, what):
    """Within one group: f_i < f_j ⇒ g_i ≤ g_j and back, on the finite scores (at a pole
    a/(b - c) and -a/(c - b) differ by the sign of a zero), with float noise allowed."""
    f, g = f.ravel(), g.ravel()
    ok = np.isfinite(f) & np.isfinite(g)
    f, g = f[ok], g[ok]
    assert not np.any(_less(f) & ~_at_most(g)), what
    assert not np.any(_less(g) & ~_at_most(f)), what


def _tol(v):
    return 1e-7 * np.max(np.abs(v), initial=1.0)


def _less(v):  # [i, j]: v_i < v_j by more than the tolerance
    return v[None, :] - v[:, None] > _tol(v)


def _at_most(v):  # [i, j]: v_i <= v_j up to the tolerance
    return v[None, :] - v[:, None] >= -_tol(v)


def _scores(expr, stats):
    return np.broadcast_to(evaluate(expr, stats), stats["W"].shape)


@settings(max_examples=scaled(250), **SETTINGS)
@given(checked_exprs(max_depth=4, shape="Mat"), st.integers(0, 2 ** 32 - 1))
def test_canonical_forms_rank_like_the_original(expr, seed):
    layers = [make_stats(seed, 4, 5), make_stats(seed + 1, 3, 6)]
    for group in GROUPS:
        text = symbolic.canonical(expr, group)
        canon = reparse(text)
        what = f"{group}: {text}"
        if group == "global":
            f = np.concatenate([_scores(expr, s).ravel() for s in layers])
            g = np.concatenate([_scores(canon, s).ravel() for s in layers])
            assert_same_order(f, g, what)
            continue
        for s in layers:
            f, g = _scores(expr, s), _scores(canon, s)
            if group == "layer":
                assert_same_order(f, g, what)
            else:
                for i in range(f.shape[0]):
                    assert_same_order(f[i], g[i], what)


@settings(max_examples=scaled(40), **SETTINGS)
@given(st.lists(checked_exprs(max_depth=2, shape="Mat"), min_size=12, max_size=12),
       st.integers(0, 2 ** 32 - 1))
def test_equal_canonical_forms_rank_alike(exprs, seed):
    # unrelated random metrics that happen to share a canonical form must rank alike
    s = make_stats(seed)
    scores = [_scores(e, s) for e in exprs]
    for group in ("row", "layer"):
        by_form = {}
        for e, f in zip(exprs, scores):
            by_form.setdefault(symbolic.canonical(e, group), []).append(f)
        for text, fs in by_form.items():
            for f in fs[1:]:
                if group == "layer":
                    assert_same_order(fs[0], f, f"{group}: {text}")
                else:
                    for x, y in zip(fs[0], f):
                        assert_same_order(x, y, f"{group}: {text}")


# --- the evaluator agrees with the project's interpreter ---------------------------------------------
@settings(max_examples=scaled(60), **SETTINGS)
@given(checked_exprs(max_depth=3, shape=None), st.integers(0, 2 ** 32 - 1))
def test_evaluate_matches_the_interpreter(expr, seed):
    torch = pytest.importorskip("torch")
    interpret = pytest.importorskip("prunedsl.compiler").interpret
    stats = make_stats(seed)
    want = interpret(expr, {k: torch.tensor(v, dtype=torch.float64) for k, v in stats.items()})
    want = want.double().numpy()
    got = evaluate(expr, stats).reshape(want.shape)
    fin = np.isfinite(want) & np.isfinite(got)
    assert np.array_equal(np.isnan(want), np.isnan(got)) or not fin.all()
    scale = np.max(np.abs(want[fin]), initial=1.0)
    assert np.allclose(got[fin], want[fin], rtol=1e-3, atol=1e-5 * scale)
