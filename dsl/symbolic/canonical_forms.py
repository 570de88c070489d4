"""Canonical form up to rank equivalence within a comparison group (docs/design.md §1).

Two metrics prune the same weights when their scores order every group the same way.
The rules below rewrite the *outermost* structure of an exact sympy form (all numbers
rational, so ``sqrt(x)`` and ``x ^ 0.5`` coincide) until nothing changes:

* a score constant within the group (a Row score under ``row``) ties everywhere: ``0``;
* additive terms constant within the group are dropped (a shift keeps the order);
* strictly increasing outer functions are stripped (``increasing`` in ``dsl.functions``), and for
  ``row``/``layer`` the whole-tensor normalizations minmax and zscore (a positive affine
  map per layer) and a structure score's stdnorm (a positive factor per layer);
* in a product, positive numbers and nonneg factors constant within the group are
  dropped (numbers and Scalars for row/layer, Rows too for row; numbers only for
  global, where n_in and sum(...) differ between layers), a negative number becomes -1;
* a monomial ``±Π bᵢ^kᵢ`` of nonneg bases (``W^2`` counts as ``|W|^2``) is raised to
  ``1/k₁``, k₁ the exponent of its first base in ``order_key`` order (W first), so that
  base has exponent 1 (``W^2·‖X‖^2 ≡ |W|·‖X‖``, ``x^2·y ≡ x·y^0.5``, ``1/|W| ≡ -|W|``:
  a negative k₁ flips the sign); with signed odd-power bases, by the gcd of the
  exponents' numerators, an odd integer (``W^3·‖X‖^3 ≡ W·‖X‖``);
* a common nonneg group-constant factor of all terms of a sum is dropped.
"""
from __future__ import annotations

import math

import sympy
from sympy import Abs, Integer, Mul

from .functions import NORMALIZER_CLASSES, StdNorm, increasing_classes, order_key, shape_of, sign_of
from ..types import NONNEG, POS, ROW, SCALAR, SIGNED

MAX_STEPS = 64
_CONSTANT_SHAPES = {"row": (ROW, SCALAR), "layer": (SCALAR,), "global": ()}


def canonical_sympy(e, group: str):
    """The canonical representative of ``e``'s rank-equivalence class under ``group``."""
    for _ in range(MAX_STEPS):
        new = _step(e, group)
        if new == e:
            break
        e = new
    return e


def is_constant(e, group: str) -> bool:
    """Whether ``e`` takes one value within each comparison group."""
    return e.is_number or shape_of(e) in _CONSTANT_SHAPES[group]


def _droppable(e, group: str) -> bool:
    return is_constant(e, group) and sign_of(e) in (NONNEG, POS)


def _step(e, group: str):
    if e == 0 or is_constant(e, group):
        return sympy.S.Zero
    if e.is_Add:
        return _add(e, group)
    if isinstance(e, increasing_classes()) or (group != "global" and (
            type(e) in NORMALIZER_CLASSES.values() or isinstance(e, StdNorm))):
        return e.args[0]
    if isinstance(e, Abs) and sign_of(e.args[0]) != SIGNED:
        return e.args[0]
    return _monomial(e, group)


def _add(e, group: str):
    terms = [t for t in e.args if not is_constant(t, group)]
    if len(terms) < len(e.args):
        return sympy.Add(*terms)
    content, primitive = e.primitive()
    if content.is_positive and content != 1:
        return primitive
    # a nonneg group-constant factor common to every term (e.g. 1 / row_sum(|W|) under row)
    powers = [Mul.make_args(t) for t in e.args]
    common = set(powers[0]).intersection(*powers[1:])
    drop = [f for f in common if _droppable(f, group)]
    if drop:
        return sympy.Add(*[Mul(*[f for f in p if f not in drop]) for p in powers])
    return e


def _monomial(e, group: str):
    coeff, factors = e.as_coeff_mul()
    sign = -1 if coeff.is_negative else 1
    kept = [f for f in factors if not _droppable(f, group)]
    if coeff not in (1, -1) or len(kept) < len(factors):
        return sign * Mul(*kept)
    if sign == -1 and len(kept) == 1 and not kept[0].is_Pow:
        return -_step(kept[0], group)  # -T(x) ranks like -x for increasing T: -exp(W) ≡ -W
    pairs, unchanged = [], sign * Mul(*kept)
    for f in kept:
        base, k = (f.base, f.exp) if f.is_Pow and f.exp.is_Rational else (f, Integer(1))
        if base.is_Add:  # (2a + 2b)^k ≡ (a + b)^k; (-a - b)^k ≡ ±(a + b)^k
            base = base.primitive()[1]
            if k.is_Integer and base.could_extract_minus_sign():
                base, sign = -base, (-sign if k % 2 else sign)
        signed = sign_of(base) == SIGNED
        if signed and k.is_Integer and k % 2 == 0:
            base, signed = Abs(base), False
        elif signed and not (k.is_Integer and k % 2 == 1):
            return unchanged  # a fractional power of a signed base: leave alone
        pairs.append((base, k, signed))
    if any(s for _, _, s in pairs):
        g = Integer(math.gcd(*[k.p for _, k, _ in pairs]))  # odd: t ↦ t^(1/g) is increasing on ℝ
    else:
        g = min(pairs, key=lambda p: order_key(p[0]))[1]  # the first base gets exponent 1
        if g < 0:
            sign = -sign  # 1/|W| ranks like -|W|
    return sign * Mul(*[b ** (k / g) for b, k, _ in pairs])
