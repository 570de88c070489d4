"""The block-level vocabulary of allocation rules and its evaluator (the language itself
is described in ``dsl/allocation.py``): which block statistics a rule may read, the
requirement keys the runtime computes for it, and the value of an importance expression
for one block from those statistics.
"""
from __future__ import annotations

import math
from typing import Mapping

from .ast import BinOp, Call, Expr, Name, Neg, Num, walk
from .functions import BINARY, ELEMENTWISE, ELEMENTWISE_FUNCTIONS
from .printer import format_number
from .types import NONNEG, POS, SIGNED

# Block statistics: of the metric's scores over a block, of its weights, and plain names.
SCORE_STATISTICS = {"outlier_ratio": NONNEG, "skew": SIGNED, "kurtosis": SIGNED}
WEIGHT_STATISTICS = {"alpha_hill": POS}
BLOCK_NAMES = {"depth": NONNEG, "params": POS}
STAT_USAGE = "outlier_ratio(score, M), skew(score), kurtosis(score), alpha_hill(W), depth, params"


def scalar_functions() -> list[str]:
    """The functions that work on block values: the elementwise ones (read live from the
    registry) and min/max."""
    return sorted(set(ELEMENTWISE) | set(BINARY))


# --- requirements and evaluation -------------------------------------------------------
def stat_key(e: Expr) -> str:
    """Requirement key of a block statistic node (``Name`` or statistic ``Call``)."""
    if isinstance(e, Name):
        return e.name
    if e.func == "outlier_ratio":
        return f"outlier_ratio:{format_number(e.args[1].value)}"
    return e.func


def is_stat(e: Expr) -> bool:
    return (isinstance(e, Name) and e.name in BLOCK_NAMES) or \
        (isinstance(e, Call) and (e.func in SCORE_STATISTICS or e.func in WEIGHT_STATISTICS))


def requirements(e: Expr) -> frozenset[str]:
    return frozenset(stat_key(n) for n in walk(e) if is_stat(n))


def evaluate(e: Expr, values: Mapping[str, float]) -> float:
    """Value of a checked importance expression for one block (NaN where undefined)."""
    try:
        v = _eval(e, values)
    except (ZeroDivisionError, OverflowError, ValueError):
        return math.nan
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, complex) else math.nan


def _eval(e: Expr, values: Mapping[str, float]) -> float:
    if isinstance(e, Num):
        return e.value
    if is_stat(e):
        return float(values[stat_key(e)])
    if isinstance(e, Neg):
        return -_eval(e.operand, values)
    if isinstance(e, BinOp):
        a, b = _eval(e.left, values), _eval(e.right, values)
        if e.op == "/" and b == 0:
            return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                "^": lambda: a ** b}[e.op]()
    args = [_eval(a, values) for a in e.args]
    f = e.func
    if f in BINARY:
        return min(args) if f == "min" else max(args)
    return ELEMENTWISE_FUNCTIONS[f].scalar(args[0])
