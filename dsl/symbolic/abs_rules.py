"""Sign facts sympy's automatic evaluation misses: |t + |t| + p| = 2·max(t, 0) + p for p ≥ 0.

t + |t| ≥ 0 for every real t, so the outer abs is the identity; spelling the pair as
2·max(t, 0) also lets the checker see the sum is nonneg (it types ``W + |W|`` signed)."""
from __future__ import annotations

import sympy

from ..types import SIGNED
from .functions import EXTREMA, sign_of


def _nonneg_sum(e):
    """``e`` (an Add) with each pair ``t, |t|`` as 2·max(t, 0), or None unless every other
    term is provably nonneg."""
    terms = list(e.args)
    out = []
    for a in [t for t in terms if isinstance(t, sympy.Abs)]:
        u = a.args[0]
        t = u if u in terms else -u if -u in terms else None
        if t is None or a not in terms:
            continue
        terms.remove(t)
        terms.remove(a)
        out.append(2 * EXTREMA["max"](t, sympy.Integer(0)))
    if not out or any(sign_of(t) == SIGNED for t in terms):
        return None
    return sympy.Add(*out, *terms)


def drop_redundant_abs(s):
    """``s`` with every |sum| that is provably nonneg by the rule above rewritten."""
    def rewrite(e):
        inner = _nonneg_sum(e.args[0])
        return e if inner is None else inner
    return s.replace(lambda e: isinstance(e, sympy.Abs) and isinstance(e.args[0], sympy.Add),
                     rewrite)
