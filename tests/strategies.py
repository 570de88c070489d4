"""Hypothesis strategies shared by the test modules.

- ``well_typed_exprs(max_depth=4, shape="Mat")``: random *parsed* ASTs (exactly what
  ``dsl.parser.parse_expr`` returns for their ``to_text``: ``Name("W")``,
  ``Call("abs", ...)``, ``Operand("x_norm2")``, ``Call("mean", (Name("X"),))``,
  ``Neg(Num(1))`` for ``-1`` …) that pass ``dsl.checker.check``. Built type-directed
  (every production is chosen so the checker accepts it), then filtered with ``check``
  as a safety net, so almost nothing is rejected. ``shape=None`` allows any result
  shape (including ``Scalar``); a tuple allows those shapes.
- ``checked_exprs(...)``: the same trees after ``check`` (typed, resolved).
- ``formula_texts(...)``: ``to_text`` of ``well_typed_exprs``.
- ``random_stats(shape_out, shape_in)``: a statistics dict (keys of
  ``dsl.operands.OPERANDS``) of float32 tensors with zeros, all-zero rows/columns and
  exact ties; ``n_in``/``n_out`` come as python ints or 0-d tensors.

Import with ``from strategies import well_typed_exprs`` (``tests/conftest.py`` puts this
directory on ``sys.path``).
"""
from __future__ import annotations

from hypothesis import assume, strategies as st

from prunedsl.dsl.ast import BinOp, Call, Name, Neg, Num, Operand
from prunedsl.dsl.checker import Env, check
from prunedsl.dsl.functions import ELEMENTWISE_FUNCTIONS
from prunedsl.dsl.printer import to_text
from prunedsl.dsl.types import COL, MAT, NONNEG, ROW, SCALAR, SIGNED

__all__ = ["well_typed_exprs", "checked_exprs", "formula_texts", "random_stats"]

SHAPES = (MAT, ROW, COL, SCALAR)
REDUCERS = ("sum", "mean", "max", "min", "std", "norm")
WHOLE = ("sum", "mean", "std", "max", "min", "fro")
SIGN_FREE_REDUCERS = ("std", "norm", "fro")  # result is nonneg whatever the argument

# Constants as the parser produces them: -c is Neg(Num(c)). 0 and negatives included.
POS_CONSTANTS = (1.0, 2.0, 0.5, 3.0, 1e-8, 0.1, 10.0, 0.25, 1.5, 100.0)
CONSTANTS = (0.0,) + POS_CONSTANTS
NEG_CONSTANTS = (1.0, 2.0, 0.5, 3.0, 1e-3)  # magnitudes
INT_EXPONENTS = (2.0, 1.0, 0.0, 3.0, -1.0, -2.0, 4.0)
FRACTIONAL_EXPONENTS = (0.5, 1.5, -0.5, 0.25, 2.5, -1.5, 0.75)

# Leaves: (tree, nonneg?)
_X = Name("X")
MAT_LEAVES = ((Name("W"), False), (Name("G"), True))
COL_LEAVES = (
    (Operand("x_norm2"), True),                      # ‖X‖
    (Name("hinv"), True),
    (Operand("x_norm1"), True),                      # ‖X‖₁
    (Operand("x_norminf"), True),                    # ‖X‖∞
    (Call("mean", (_X,)), False),                    # mean(X)
    (Call("std", (_X,)), True),                      # std(X)
    (Call("var", (_X,)), True),                      # var(X)
    (Call("norm", (_X,)), True),                     # norm(X)
    (Call("norm", (_X, Num(1.0))), True),            # norm(X, 1)
    (Call("norm", (_X, Name("inf"))), True),         # norm(X, inf)
    (Call("norm", (_X, Num(2.0))), True),            # norm(X, 2)
    (Operand("x_norm2"), True),                      # ‖X‖₂ parses to the same Operand
)
SCALAR_NAMES = (Name("n_in"), Name("n_out"))
LIBRARY_REFS = (
    Name("wanda"), Name("magnitude"), Name("ria"),
    Call("ria", (), (("a", Num(0.3)),)), Call("ria", (Num(1.0),)),
)


def _number(c: float):
    return Num(c) if c >= 0 else Neg(Num(-c))


def _pairs(shape: str):
    """(left shape, right shape) pairs whose typed broadcast is ``shape``."""
    if shape == MAT:
        return ((MAT, MAT), (MAT, COL), (MAT, ROW), (ROW, COL), (MAT, SCALAR), (COL, MAT),
                (ROW, MAT), (SCALAR, MAT), (COL, ROW))
    if shape == SCALAR:
        return ((SCALAR, SCALAR),)
    return ((shape, shape), (shape, SCALAR), (SCALAR, shape))


@st.composite
def _leaf(draw, shape: str, nonneg: bool, library: bool):
    if shape == MAT:
        options = [t for t, nn in MAT_LEAVES if nn or not nonneg]
        if nonneg:
            options.append(Call("abs", (Name("W"),)))
        if library:
            options += LIBRARY_REFS  # all library metrics are Mat[nonneg]
        return draw(st.sampled_from(options))
    if shape == COL:
        return draw(st.sampled_from([t for t, nn in COL_LEAVES if nn or not nonneg]))
    if shape == SCALAR:
        kind = draw(st.integers(0, 2 if nonneg else 3))
        if kind == 0:
            return Num(draw(st.sampled_from(CONSTANTS)))
        if kind == 1:
            return draw(st.sampled_from(SCALAR_NAMES))
        if kind == 2:
            return Num(draw(st.sampled_from(POS_CONSTANTS)))
        return Neg(Num(draw(st.sampled_from(NEG_CONSTANTS))))
    # Row: the smallest Row is a reduction of a Mat leaf.
    red = draw(st.sampled_from(REDUCERS))
    arg = draw(_leaf(MAT, nonneg and red not in SIGN_FREE_REDUCERS, library))
    return Call(f"row_{red}", (arg,))


@st.composite
def _expr(draw, shape: str, nonneg: bool, depth: int, library: bool):
    """A parsed tree the checker types as ``shape`` (and nonneg/pos if ``nonneg``)."""
    if depth <= 0:
        return draw(_leaf(shape, nonneg, library))
    kinds = ["leaf", "unary", "binop", "binop", "pow", "minmax2", "reduce", "normalize"]
    if not nonneg:
        kinds += ["neg", "binop"]
    kind = draw(st.sampled_from(kinds))
    sub = depth - 1

    def e(s=shape, nn=False):
        return draw(_expr(s, nn, sub, library))

    if kind == "leaf":
        return draw(_leaf(shape, nonneg, library))
    if kind == "unary":
        # every registered function whose result can be nonneg when that is wanted; its
        # argument must be nonneg where the function needs it or passes a sign through
        funcs = [f for f in ELEMENTWISE_FUNCTIONS.values() if not nonneg or f.sign(NONNEG) != SIGNED]
        f = draw(st.sampled_from(funcs))
        needs = f.needs_nonneg or (nonneg and f.sign(SIGNED) == SIGNED)
        return Call(f.name, (e(nn=needs),))
    if kind == "neg":
        inner = e()
        if isinstance(inner, Num) and inner.value == 0:
            return inner  # "-0" would check to a negative zero; leave that to dedicated tests
        return Neg(inner)
    if kind == "binop":
        a, b = draw(st.sampled_from(_pairs(shape)))
        op = draw(st.sampled_from(["*", "/", "+"] if nonneg else ["+", "-", "*", "/"]))
        return BinOp(op, e(a, nonneg), e(b, nonneg))
    if kind == "pow":
        if draw(st.booleans()):
            c = draw(st.sampled_from(INT_EXPONENTS))
            odd = c != int(c) or int(c) % 2 != 0
            base = e(nn=nonneg and odd and c != 0)
        else:
            c = draw(st.sampled_from(FRACTIONAL_EXPONENTS))
            base = e(nn=True)
        return BinOp("^", base, _number(c))
    if kind == "minmax2":
        a, b = draw(st.sampled_from(_pairs(shape)))
        f = draw(st.sampled_from(["min", "max"]))
        if f == "min":
            return Call(f, (e(a, nonneg), e(b, nonneg)))
        first = draw(st.booleans())  # max is nonneg if either argument is
        return Call(f, (e(a, nonneg and first), e(b, nonneg and not first)))
    if kind == "reduce":
        if shape in (ROW, COL):
            red = draw(st.sampled_from(REDUCERS))
            axis = "row" if shape == ROW else "col"
            return Call(f"{axis}_{red}", (e(MAT, nonneg and red not in SIGN_FREE_REDUCERS),))
        if shape == SCALAR:
            which = draw(st.integers(0, 2))
            if which == 0:
                red = draw(st.sampled_from(WHOLE))
                s = draw(st.sampled_from(SHAPES))
                return Call(red, (e(s, nonneg and red not in SIGN_FREE_REDUCERS),))
            red = draw(st.sampled_from(REDUCERS))
            axis, s = ("row", COL) if which == 1 else ("col", ROW)
            return Call(f"{axis}_{red}", (e(s, nonneg and red not in SIGN_FREE_REDUCERS),))
        kind = "normalize"  # a Mat is not a reduction of anything; fall through
    # normalize
    f = "minmax" if nonneg else draw(st.sampled_from(["minmax", "zscore"]))
    return Call(f, (e(),))


def _env(library: bool) -> Env:
    if not library:
        return Env()
    from prunedsl.dsl.library import library as lib
    return Env(metrics=lib("metric"))


def _shapes(shape) -> tuple[str, ...]:
    if shape is None:
        return SHAPES
    if isinstance(shape, str):
        return (shape,)
    return tuple(shape)


@st.composite
def well_typed_exprs(draw, max_depth: int = 4, shape=MAT, *, library: bool = False):
    """Parsed ASTs that type-check with result ``shape`` (None: any shape).

    ``library=True`` also uses the built-in metrics (``wanda``, ``ria(a=0.3)``); check
    those with ``Env(metrics=library("metric"))``."""
    s = draw(st.sampled_from(_shapes(shape)))
    depth = draw(st.integers(0, max_depth))
    tree = draw(_expr(s, False, depth, library))
    try:
        checked = check(tree, _env(library))
    except Exception:  # pragma: no cover - the generator is type-directed
        assume(False)
    assume(checked.type.shape == s)
    return tree


@st.composite
def checked_exprs(draw, max_depth: int = 4, shape=MAT, *, library: bool = False):
    """``well_typed_exprs`` after ``check``: resolved and typed."""
    return check(draw(well_typed_exprs(max_depth, shape, library=library)), _env(library))


def formula_texts(max_depth: int = 4, shape=MAT, *, library: bool = False, ascii: bool = False):
    """DSL text of ``well_typed_exprs`` (what a user or an LLM would write)."""
    return well_typed_exprs(max_depth, shape, library=library).map(lambda e: to_text(e, ascii=ascii))


# --- statistics -----------------------------------------------------------------------
_POOL = (0.0, 0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.25, 3.0, -3.0, 1e-3)


def _values(gen, shape, kind: int, sign: str):
    import torch
    n = 1
    for d in shape:
        n *= d
    if kind == 0:  # ties and zeros from a small pool
        pool = torch.tensor(_POOL, dtype=torch.float32)
        t = pool[torch.randint(len(_POOL), (n,), generator=gen)]
    elif kind == 1:  # gaussian
        t = torch.randn(n, generator=gen)
    else:  # gaussian with a wide range of magnitudes and some zeros
        t = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 3)
        t = torch.where(torch.rand(n, generator=gen) < 0.2, torch.zeros(()), t)
    t = t.reshape(shape).to(torch.float32)
    if sign == "nonneg":
        t = t.abs()
    elif sign == "pos":
        t = t.abs() + 0.125
    return t


@st.composite
def random_stats(draw, shape_out=None, shape_in=None):
    """Statistics for a layer with W of shape ``(shape_out, shape_in)`` (drawn if None)."""
    import torch
    out = shape_out if shape_out is not None else draw(st.integers(1, 6))
    inn = shape_in if shape_in is not None else draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    gen = torch.Generator().manual_seed(seed)
    kinds = draw(st.lists(st.integers(0, 2), min_size=10, max_size=10))
    stats = {}
    specs = [("W", (out, inn), "signed"), ("G", (out, inn), "nonneg"),
             ("hinv", (1, inn), "pos"), ("x_norm2", (1, inn), "nonneg"),
             ("x_norm1", (1, inn), "nonneg"), ("x_norminf", (1, inn), "nonneg"),
             ("x_mean", (1, inn), "signed"), ("x_std", (1, inn), "nonneg"),
             ("x_var", (1, inn), "nonneg")]
    for (key, shape, sign), kind in zip(specs, kinds):
        stats[key] = _values(gen, shape, kind, sign)
    # all-zero rows and columns of the weight-shaped statistics, zero input channels
    for key in ("W", "G"):
        if draw(st.booleans()):
            stats[key][draw(st.integers(0, out - 1)), :] = 0
        if draw(st.booleans()):
            stats[key][:, draw(st.integers(0, inn - 1))] = 0
    if draw(st.booleans()):
        j = draw(st.integers(0, inn - 1))
        for key in ("x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std", "x_var"):
            stats[key][0, j] = 0
    as_tensor = draw(st.booleans())
    stats["n_in"] = torch.tensor(inn) if as_tensor else inn
    stats["n_out"] = torch.tensor(float(out)) if as_tensor else out
    return stats
