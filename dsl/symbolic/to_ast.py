"""sympy → AST, so that simplified formulas print with ``to_text`` and always parse back.

sympy stores ``x / y`` as ``x * y**-1`` and ``sqrt(x)`` as ``x**(1/2)``; this module
writes them as a division and a ``sqrt`` call again, orders factors W-first
(``|W| * ‖X‖``), puts negative signs in front (``‖X‖ - W``, ``-|W| * ‖X‖``), and with
``group_powers`` writes ``(|W| * ‖X‖) ^ 2`` for ``W**2 * ‖X‖**2``.
"""
from __future__ import annotations

from fractions import Fraction

import sympy
from sympy import Abs

from ..ast import BinOp, Call, Expr, Neg, Num, Operand
from .core import rational, round_trips
from .functions import DSLFunction, OperandSymbol, Unsupported, order_key, sign_of, sympy_classes
from ..types import SIGNED

_HALF = sympy.Rational(1, 2)


def from_sympy(e, group_powers: bool = True) -> Expr:
    """An (unchecked) AST for a sympy expression made of the language's vocabulary.

    Raises ``Unsupported`` for what the language cannot say (infinities, NaN, unknown
    functions, numbers out of the float range).
    """
    return _Writer(group_powers).visit(e)


def _float(v) -> float:
    try:
        x = float(v)
    except (OverflowError, TypeError, ValueError):
        raise Unsupported(f"not a finite real number: {v}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise Unsupported(f"not a finite real number: {v}")
    return x


def _short_float(x: float) -> float:
    """0.30000000000000004 (a sum of float exponents) prints as 0.3."""
    y = float(f"{x:.15g}")
    return y if len(repr(y)) < len(repr(x)) else x


_EXACT_INT = 2 ** 53  # integers up to here are exact as floats


def number(v) -> Expr:
    """A sympy number as a ``Num`` (0.3, 1e-08) or a division (1 / 3), in the form that
    reads back as the same rational where one exists."""
    if v.is_Float:  # a float exponent: 0.5, or 1/3 and 0.1 + 0.2 as (1 / 3) and 0.3
        x = _float(v)
        for y in (x, _short_float(x)):
            r = rational(y)
            if r.q <= 10 ** 6:
                return number(r)
        return Num(x)
    if v.is_Integer or Fraction(repr(_float(v))) == Fraction(v.p, v.q):
        return Num(_float(v))
    if v.q <= 10 ** 6 or (not round_trips(v) and max(abs(v.p), v.q) < _EXACT_INT):
        return BinOp("/", Num(_float(v.p)), Num(_float(v.q)))
    return Num(_float(v))


def _product(factors: list[Expr]) -> Expr:
    out = factors[0]
    for f in factors[1:]:
        out = BinOp("*", out, f)
    return out


def _negate_first(factors: list[Expr]) -> list[Expr]:
    first = factors[0]
    first = Num(-first.value) if isinstance(first, Num) else Neg(first)
    return [first] + factors[1:]


class _Writer:
    def __init__(self, group_powers: bool):
        self.group_powers = group_powers

    def visit(self, e) -> Expr:
        if isinstance(e, OperandSymbol):
            return Operand(e.name)
        if e is sympy.S.Exp1:
            return Call("exp", (Num(1.0),))
        if e.is_Number:
            if not (e.is_Rational or e.is_Float):
                raise Unsupported(f"not a finite number: {e}")
            return number(e)
        if e.is_NumberSymbol:
            return Num(_float(e))
        if e.is_Add:
            return self.add(e)
        if e.is_Pow and not e.exp.is_Number:
            raise Unsupported("a power with a symbolic exponent")
        if e.is_Mul or e.is_Pow:
            return self.mul(e)
        if isinstance(e, Abs):
            return Call("abs", (self.visit(e.args[0]),))
        if isinstance(e, DSLFunction):
            return Call(e.dsl_name, tuple(self.visit(a) for a in e.args))
        for cls, name in sympy_classes().items():
            if isinstance(e, cls):
                return Call(name, (self.visit(e.args[0]),))
        raise Unsupported(f"no DSL spelling for {type(e).__name__}")

    def add(self, e) -> Expr:
        terms = sorted(e.args, key=lambda t: (t.is_number, order_key(t)))  # constants last
        negative = [t.could_extract_minus_sign() for t in terms]
        if all(negative):
            start = 0
        else:
            start = negative.index(False)
        out = self.visit(terms[start])
        for i, t in enumerate(terms):
            if i == start:
                continue
            out = BinOp("-", out, self.visit(-t)) if negative[i] else BinOp("+", out, self.visit(t))
        return out

    def mul(self, e) -> Expr:
        coeff, factors = e.as_coeff_mul() if e.is_Mul else (sympy.S.One, (e,))
        num, den = [], []
        negative = coeff.is_negative
        for f in factors:
            base, k = (f.base, f.exp) if f.is_Pow else (f, sympy.S.One)
            if base.is_Add and k.is_Integer and base.could_extract_minus_sign():
                negative ^= bool(k % 2)  # W * (-hinv - ‖X‖) reads better as -W * (hinv + ‖X‖)
                f = (-base) ** k
            if f.is_Pow and f.exp.is_Number and f.exp.is_negative:
                den.append((f.base, -f.exp))
            elif f.is_Pow and f.exp.is_Number:
                num.append((f.base, f.exp))
            else:
                num.append((f, sympy.S.One))
        num_ast, den_ast = self.factors(num), self.factors(den)
        c = -coeff if coeff.is_negative else coeff
        if c != 1:
            decimal = c.is_Float or c.is_Integer or (
                c.p != 1 and len(repr(_float(c))) <= 8 and Fraction(repr(_float(c))) == Fraction(c.p, c.q))
            if decimal or max(c.p, c.q) >= _EXACT_INT:
                num_ast.insert(0, number(c))  # 0.3 * W
            else:  # W / 2, 2 * W / 3
                if c.p != 1:
                    num_ast.insert(0, Num(_float(c.p)))
                den_ast.insert(0, Num(_float(c.q)))
        if not num_ast:
            num_ast = [Num(1.0)]
        if negative:
            num_ast = _negate_first(num_ast)
        out = _product(num_ast)
        return BinOp("/", out, _product(den_ast)) if den_ast else out

    def factors(self, pairs: list) -> list[Expr]:
        """ASTs for ``base ** k`` pairs (k > 0), grouping equal exponents when asked."""
        pairs = sorted(pairs, key=lambda p: order_key(p[0]))
        groups: dict = {}
        for base, k in pairs:
            key = k if self.group_powers and k != 1 else (k, len(groups))
            groups.setdefault(key, []).append(base)
        out = []
        for key, bases in groups.items():
            k = key if not isinstance(key, tuple) else key[0]
            if len(bases) > 1 and not k.is_Integer and any(sign_of(b) == SIGNED for b in bases):
                out.extend(self.power(b, k) for b in bases)  # (a·b)^k needs a, b ≥ 0
                continue
            if len(bases) > 1:
                bases = [Abs(b) if k.is_Integer and k % 2 == 0 and sign_of(b) == SIGNED else b
                         for b in bases]
                base_ast = _product([self.visit(b) for b in bases])
                out.append(self.raise_to(base_ast, k))
            else:
                out.append(self.power(bases[0], k))
        return out

    def power(self, base, k) -> Expr:
        return self.raise_to(self.visit(base), k)

    @staticmethod
    def raise_to(base: Expr, k) -> Expr:
        if k == 1:
            return base
        if k == _HALF:
            return Call("sqrt", (base,))
        return BinOp("^", base, number(k))
