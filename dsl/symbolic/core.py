"""Checked AST → sympy (docs/design.md §1, "What sympy is for").

Only ASTs are converted, never text (no ``sympify``). Sign facts are what sympy is told
(``sym_functions``): W is real, statistics are nonnegative, hinv and n_in/n_out
positive, so sympy's automatic simplification never rewrites |W| to W.

    >>> to_sympy(check(parse_expr("sqrt(|W| * ‖X‖) * 2")))    # 2*sqrt(x_norm2)*sqrt(Abs(W))
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import sympy
from sympy import Float, Integer, Pow, Rational

from ..ast import BinOp, Call, Expr, Neg, Num, Operand
from ..functions import ELEMENTWISE_FUNCTIONS, NORMALIZERS
from .functions import (AXIS_CLASSES, EXTREMA, NORMALIZER_CLASSES, STRUCT_CLASSES, SYMBOLS, WHOLE_CLASSES,
                        Unsupported, elementwise_sympy, shape_of)

MAX_NUMERIC_POWER = 16  # number ^ k with |k| above this is folded in floating point


# --- numbers ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def rational(v: float) -> sympy.Rational:
    """The rational a float stands for: the simplest fraction with a denominator up to 10⁶
    that reads back as ``v`` (0.1 → 1/10, 0.3333333333333333 → 1/3), else the shortest
    decimal that does (1.00000001 → 100000001/10⁸)."""
    if not math.isfinite(v):
        raise Unsupported(f"non-finite number {v}")
    if v == int(v):
        return Integer(int(v))
    f = Fraction(v).limit_denominator(10 ** 6)
    if float(f) != v:
        f = Fraction(repr(v))
    return Rational(f.numerator, f.denominator)


def round_trips(r: sympy.Rational) -> bool:
    """Whether printing ``r`` as a decimal and reading it back gives ``r`` again."""
    try:
        return rational(float(r)) == r
    except (OverflowError, Unsupported):
        return False


def _quantize(e):
    """Numbers made by exact arithmetic, (1 + 1e-8) ^ 2 = 1.0000000200000000999..., are
    rounded to the float they print as, so a printed formula reads back as the same
    expression (which canonical() compares)."""
    if e.is_Rational:
        return e if round_trips(e) else _round(e)
    if e.is_Mul:
        c, rest = e.as_coeff_Mul()
        return e if not c.is_Rational or round_trips(c) else _round(c) * rest
    if e.is_Add and not all(round_trips(t.as_coeff_Mul()[0]) for t in e.args
                            if t.as_coeff_Mul()[0].is_Rational):
        return sympy.Add(*[_quantize(t) for t in e.args])
    return e


def _round(r):
    try:
        return rational(float(r))
    except OverflowError:
        raise Unsupported("number out of range") from None


def _clean(e):
    """Normalize what sympy's automatic evaluation leaves ambiguous:
    |W|^0.5 · |W|^0.5 is |W|^1.0 (integer-valued float exponents become integers), and
    1 / (2 * (a + b)) becomes 1 / (2a + 2b) or (a + b)^-1 / 2 depending on the order of
    construction (an Add under a power gives its numeric content to the product)."""
    if e.is_Pow:
        base, k = e.args
        if k.is_Float and float(k).is_integer():
            return _clean(Pow(base, Integer(int(k))))
        if base.is_Add and k.is_Rational:
            c, p = base.primitive()
            if c != 1:
                return Pow(c, k) * Pow(p, k)
        return e
    if e.is_Mul and any(a.is_Pow for a in e.args):
        args = [_clean(a) for a in e.args]
        return sympy.Mul(*args) if args != list(e.args) else e
    return e


def _number_power(base, v: float):
    """number ^ v: exact while the result stays small (2 ^ 0.5 is sqrt(2)), else in floats;
    (1e-8 ^ 16) ^ 16 must not build a number with thousands of digits."""
    try:
        approx = float(base) ** v
    except (OverflowError, ZeroDivisionError, TypeError):  # TypeError: zoo, unevaluated min
        raise Unsupported("number out of range") from None
    if isinstance(approx, complex) or not math.isfinite(approx) or \
            (approx != 0 and not 1e-300 < abs(approx) < 1e300) or (approx == 0 and base != 0):
        raise Unsupported("number out of range")
    small = not base.is_Rational or max(abs(base.p), base.q) < 10 ** 20
    if small and abs(v) <= MAX_NUMERIC_POWER:
        return Pow(base, rational(v))
    return rational(approx)


# --- AST → sympy -----------------------------------------------------------------------------
def to_sympy(expr: Expr, exact: bool = True):
    """A checked expression as a sympy expression.

    ``exact=True``: every number is a ``Rational`` (``|W| ^ 0.5`` and ``sqrt(|W|)`` are the
    same object; used by ``canonical``). ``exact=False`` keeps non-integer exponents as
    ``Float`` so that printing shows ``‖X‖ ^ 0.5`` where the author wrote it (``formula``).
    Raises ``Unsupported`` where sympy would change a reduction's meaning.
    """
    out = _Builder(exact).visit(expr)
    if out.has(sympy.S.ComplexInfinity, sympy.S.Infinity, sympy.S.NegativeInfinity, sympy.S.NaN):
        raise Unsupported("sympy evaluated a division by zero or log(0)")
    return out


class _Builder:
    def __init__(self, exact: bool):
        self.exact = exact

    def visit(self, e: Expr):
        if isinstance(e, Num):
            return rational(e.value)
        if isinstance(e, Operand):
            return SYMBOLS[e.key]
        if isinstance(e, Neg):
            return -self.visit(e.operand)
        if isinstance(e, BinOp):
            return _quantize(_clean(self.binop(e)))
        if isinstance(e, Call):
            return _quantize(_clean(self.call(e)))
        raise Unsupported(f"not a checked expression: {type(e).__name__}")

    def binop(self, e: BinOp):
        a = self.visit(e.left)
        if e.op == "^":
            return self.power(a, e.right)
        b = self.visit(e.right)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "/": lambda: a / b}[e.op]()

    def power(self, base, exponent: Expr):
        if not isinstance(exponent, Num):
            raise Unsupported("the exponent is not a number (is the tree checked?)")
        v = exponent.value
        if base.is_number:
            return _number_power(base, v)
        # Float keeps ‖X‖ ^ 0.5 apart from sqrt(‖X‖) for printing; but (2 * G) ^ 0.5 would
        # split into 1.4142135623730951 * G ^ 0.5, so a numeric factor gets the exact power.
        if v == int(v) or self.exact or base.as_coeff_Mul()[0] != 1:
            return Pow(base, rational(v))
        return Pow(base, Float(v))

    def call(self, e: Call):
        f, args = e.func, [self.visit(a) for a in e.args]
        if f in ("min", "max") and len(args) == 2:
            return EXTREMA[f](*args)
        if f in ELEMENTWISE_FUNCTIONS:
            return elementwise_sympy(f)(args[0])
        cls = NORMALIZER_CLASSES.get(f) or AXIS_CLASSES.get(f) or WHOLE_CLASSES.get(f) or STRUCT_CLASSES.get(f)
        if cls is None:
            raise Unsupported(f"unknown function {f}")
        # sympy may have simplified the argument to a smaller shape (0 * W + ‖X‖ → ‖X‖), which
        # changes what a reduction means (a sum over a broadcast); or to a constant (W / W → 1)
        # where the float argument is rounding noise that minmax/zscore would amplify.
        if shape_of(args[0]) != e.args[0].type.shape or (args[0].is_number and f in NORMALIZERS):
            raise Unsupported(f"the argument of {f} changed shape")
        return cls(args[0])
