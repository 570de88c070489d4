"""The sympy layer (docs/design.md §1, "What sympy is for"): simplify, print, canonicalize.

    formula(expr)           lightly simplified DSL text; parses back to an equivalent metric
    pretty(expr)            the same formula in Unicode math on one line: |W|·‖X‖, √|W|, W²
    latex(expr)             the same formula in LaTeX
    canonical(expr, group)  text equal for metrics that rank weights identically per group
    to_sympy, from_sympy, shape_of, sign_of   the conversions underneath

``expr`` is a checked tree (``dsl.checker.check``). Simplification is sympy's automatic
evaluation on a sympy form that knows the sign facts (W real, statistics nonneg), so it
is fast and correct for signed W (|W|·|W| → W ^ 2, sqrt(W ^ 2) → |W|). Where sympy would
change a reduction's meaning, or its result would not parse, check or keep the shape,
``formula`` returns the unsimplified text. Results are cached per expression text.

Module map: ``functions`` (symbols, functions, signs, shapes), ``core``
(AST → sympy), ``to_ast`` (sympy → AST), ``canonical_forms`` (rank-equivalence rules);
the three spellings are printed by ``dsl.printer``.
"""
from __future__ import annotations

import functools

from ...config import GROUPS, check_group
from ...errors import PruneDSLError
from ..ast import Expr
from ..checker import check
from ..parser import parse_expr
from ..printer import latex_text, pretty_text, to_text
from .abs_rules import drop_redundant_abs
from .canonical_forms import canonical_sympy
from .core import to_sympy
from .functions import Unsupported, shape_of, sign_of
from .to_ast import from_sympy

__all__ = ["formula", "pretty", "latex", "canonical", "simplify", "to_sympy", "from_sympy",
           "shape_of", "sign_of", "GROUPS"]

# What makes us keep the unsimplified text (sympy produced zoo/nan, a number overflowed,
# the result did not check); anything else is a bug and propagates.
MAX_ROUNDS = 16
_FALLBACK = (Unsupported, PruneDSLError, ArithmeticError, RecursionError)


class _Key:
    """Hashable by the expression's DSL text; carries the tree into the cached function."""

    __slots__ = ("text", "expr")

    def __init__(self, expr: Expr):
        self.expr = expr if expr.type is not None else check(expr)
        self.text = to_text(expr)

    def __hash__(self):
        return hash(self.text)

    def __eq__(self, other):
        return isinstance(other, _Key) and other.text == self.text


def simplify(expr: Expr) -> Expr:
    """The simplified formula as a checked tree (the input itself where sympy cannot help)."""
    display, checked = _simplified(_Key(expr))
    return checked


def formula(expr: Expr) -> str:
    """Simplified DSL text; it parses, checks, has ``expr``'s shape and the same values."""
    return to_text(_simplified(_Key(expr))[0])


def pretty(expr: Expr) -> str:
    """The simplified formula in Unicode math on one line."""
    return pretty_text(_simplified(_Key(expr))[0])


def latex(expr: Expr) -> str:
    """The simplified formula in LaTeX."""
    return latex_text(_simplified(_Key(expr))[0])


def canonical(expr: Expr, group: str = "row") -> str:
    """DSL text equal for metrics that rank weights identically within ``group``."""
    return _canonical(_Key(expr), check_group(group))


@functools.lru_cache(maxsize=8192)
def _simplified(key: _Key) -> tuple[Expr, Expr]:
    """(tree to print, the same checked): ``1 / 3`` stays a division for printing."""
    expr = key.expr
    try:
        display = from_sympy(drop_redundant_abs(to_sympy(expr, exact=False)))
        checked = check(parse_expr(to_text(display)))
    except _FALLBACK:
        return expr, expr
    return (display, checked) if checked.type.shape == expr.type.shape else (expr, expr)


@functools.lru_cache(maxsize=65536)
def _canonical(key: _Key, group: str) -> str:
    try:
        s = drop_redundant_abs(to_sympy(key.expr, exact=True))
        for _ in range(MAX_ROUNDS):
            # settle: what the printed text reads back as, so the output is a fixpoint
            t = to_sympy(check(from_sympy(canonical_sympy(s, group), group_powers=False)))
            if t == s:
                break
            s = t
        return to_text(from_sympy(s, group_powers=False))
    except _FALLBACK:
        return key.text
