"""The language's vocabulary in sympy: operand symbols with their sign assumptions, the
functions sympy has no class for (reductions, minmax/zscore, sigmoid, elementwise
max/min) with str/LaTeX/pretty printers, and the sign and shape of sympy expressions
by the checker's rules (``dsl.functions``, ``dsl.types``).
"""
from __future__ import annotations

import functools

import sympy
from sympy import Abs, default_sort_key

from ..functions import (AXIS_FUNCTIONS, AXIS_RESULT, ELEMENTWISE, ELEMENTWISE_FUNCTIONS, NORMALIZERS, WHOLE,
                         reduction_sign)
from ..operands import OPERANDS
from ..structure_vocab import STDNORM, STRUCT_REDUCERS, stdnorm_sign
from ..types import (NONNEG, PER_WEIGHT_SHAPES, POS, SCALAR, SIGNED, STRUCT, broadcast_shape, strongest,
                     weakest)


class Unsupported(Exception):
    """The expression has no faithful sympy form (callers fall back to the plain text)."""


# --- operands ---------------------------------------------------------------------------
class OperandSymbol(sympy.Symbol):
    """A statistic of the layer; its name is the ``OPERANDS`` key, its sign the assumptions."""

    def _sympystr(self, printer, **kw):
        return OPERANDS[self.name].text

    def _latex(self, printer, **kw):
        return OPERANDS[self.name].latex

    def _pretty(self, printer, **kw):
        from sympy.printing.pretty.stringpict import prettyForm
        return prettyForm(OPERANDS[self.name].pretty)


_ASSUMPTIONS = {SIGNED: {"real": True}, NONNEG: {"nonnegative": True}, POS: {"positive": True}}


class _Symbols(dict):
    """key -> its OperandSymbol, made on first use, so an operand registered later has one
    (sympy caches symbols by name and assumptions: the same key gives the same symbol)."""

    def __missing__(self, key: str) -> OperandSymbol:
        return OperandSymbol(key, **_ASSUMPTIONS[OPERANDS[key].type.sign])


SYMBOLS: dict[str, OperandSymbol] = _Symbols()


def operand_rank(key: str) -> int:
    """Position in the operand table: W first (|W| * ‖X‖, not ‖X‖ * |W|)."""
    return list(OPERANDS).index(key)


# --- functions sympy has no class for ------------------------------------------------------
class DSLFunction(sympy.Function):
    """One-argument function of the language; sign facts come from ``result_sign``."""

    nargs = 1
    dsl_name = ""
    latex_name = ""

    @classmethod
    def eval(cls, arg):
        return None  # not evaluated: whole-tensor semantics (subclasses fold numbers)

    def result_sign(self) -> str:
        raise NotImplementedError

    def result_shape(self, *arg_shapes: str) -> str:
        return functools.reduce(broadcast_shape, arg_shapes)  # elementwise: broadcast

    def _eval_is_extended_real(self):
        return True

    def _eval_is_real(self):
        return True

    def _eval_is_finite(self):
        return True  # the sympy model is "finite reals"; formulas agree where values are finite

    def _eval_is_nonnegative(self):
        return True if self.result_sign() != SIGNED else None

    _eval_is_extended_nonnegative = _eval_is_nonnegative

    def _eval_is_positive(self):
        return True if self.result_sign() == POS else None

    _eval_is_extended_positive = _eval_is_positive

    def _sympystr(self, printer, **kw):
        return f"{self.dsl_name}({', '.join(printer._print(a) for a in self.args)})"

    def _latex(self, printer, exp=None, **kw):
        args = ", ".join(printer._print(a) for a in self.args)
        out = rf"{self.latex_name}\left({args}\right)"
        return out if exp is None else rf"{out}^{{{exp}}}"

    def _pretty(self, printer, **kw):
        from sympy.printing.pretty.stringpict import prettyForm
        args = prettyForm(*printer._print_seq(self.args, delimiter=", ").parens())
        return prettyForm(*prettyForm(self.dsl_name).right(args), binding=prettyForm.FUNC)


class Elementwise(DSLFunction):
    """An elementwise function sympy has no class for (sigmoid; sympy has abs, exp, log,
    tanh; sqrt and sq are powers)."""

    @classmethod
    def eval(cls, arg):
        number = ELEMENTWISE_FUNCTIONS[cls.dsl_name].sympy_number
        if arg.is_number and number:  # sigmoid(c): sympy cannot compare an unevaluated number
            return number(sympy, arg)
        return None

    def result_sign(self):
        return ELEMENTWISE[self.dsl_name][1](sign_of(self.args[0]))


class AxisReduction(DSLFunction):
    axis = reducer = ""

    def result_sign(self):
        return reduction_sign(self.reducer, sign_of(self.args[0]))

    def result_shape(self, arg_shape):
        try:
            return AXIS_RESULT[self.axis][arg_shape]
        except KeyError:
            raise Unsupported(f"{self.dsl_name} of a {arg_shape}") from None


class WholeReduction(DSLFunction):
    reducer = ""

    @classmethod
    def eval(cls, arg):
        if arg.is_number:  # of a 0-d tensor: sum(c) = max(c) = c, std(c) = 0, fro(c) = |c|
            return {"std": sympy.S.Zero, "norm": Abs(arg)}.get(cls.reducer, arg)
        return None

    def result_sign(self):
        return reduction_sign(self.reducer, sign_of(self.args[0]))

    def result_shape(self, arg_shape):
        return SCALAR


class Normalizer(DSLFunction):
    @classmethod
    def eval(cls, arg):
        return sympy.S.Zero if arg.is_number else None  # "0 if constant"

    def result_sign(self):
        return NORMALIZERS[self.dsl_name]


class Extremum(DSLFunction):
    """Elementwise max(a, b) / min(a, b). Not sympy's Max/Min: those compare their
    arguments through the assumption system, 10-100 ms per call. Arguments are sorted, so
    max(a, b) == max(b, a); numbers, equal arguments and max(x ≥ 0, c ≤ 0) are folded."""

    nargs = 2

    @classmethod
    def eval(cls, a, b):
        pick = max if cls.dsl_name == "max" else min
        if a == b:
            return a
        if a == -b:  # max(x, -x) = |x|, min(x, -x) = -|x|
            return Abs(a) if cls.dsl_name == "max" else -Abs(a)
        if a.is_Rational and b.is_Rational:
            return pick(a, b)
        if a.is_number and b.is_number:  # min(1, sqrt(2)): compare numerically
            d = (a - b).evalf(30)
            if d.is_Float:
                return a if (d >= 0) == (cls.dsl_name == "max") else b
        for x, c in ((a, b), (b, a)):
            if c.is_Rational and c <= 0 and sign_of(x) != SIGNED:
                return x if cls.dsl_name == "max" else c
        if default_sort_key(b) < default_sort_key(a):
            return cls(b, a)
        return None

    def result_sign(self):
        rule = strongest if self.dsl_name == "max" else weakest
        return rule(*(sign_of(a) for a in self.args))


class StructReduction(DSLFunction):
    """group_sum/group_max/producers/consumers (docs/structures.md): opaque, a per-weight
    argument, Struct result. A numeric factor moves out (Σ c·m = c·Σ m; max only for c > 0),
    so group_sum(2·|W|) and 2·group_sum(|W|) have one form."""

    reducer = ""

    @classmethod
    def eval(cls, arg):
        c, rest = arg.as_coeff_Mul()
        if arg.is_number or c == 1 or not c.is_Rational or (c <= 0 and cls.reducer != "sum"):
            return None
        return c * cls(rest)

    def result_sign(self):
        return sign_of(self.args[0])

    def result_shape(self, arg_shape):
        if arg_shape not in PER_WEIGHT_SHAPES:
            raise Unsupported(f"{self.dsl_name} of a {arg_shape}")
        return STRUCT


class StdNorm(DSLFunction):
    """stdnorm(s) = s / std(s) over the structures, 0 if they tie: invariant under a positive
    factor (stdnorm(2·s) = stdnorm(s)), odd under a negative one."""

    @classmethod
    def eval(cls, arg):
        if arg.is_number:
            return sympy.S.Zero
        c, rest = arg.as_coeff_Mul()
        if c == 1 or not c.is_Rational or c == 0:
            return None
        return cls(rest) if c > 0 else -cls(rest)

    def result_sign(self):
        return stdnorm_sign(sign_of(self.args[0]))


def _latex_op(name: str) -> str:
    return r"\operatorname{" + name.replace("_", r"\_") + "}"


def _make(base, cls_name: str, dsl_name: str, **attrs):
    return type(cls_name, (base,), {"dsl_name": dsl_name, "latex_name": _latex_op(dsl_name), **attrs})


AXIS_CLASSES = {name: _make(AxisReduction, name, name, axis=a, reducer=r)
                for name, (a, r) in AXIS_FUNCTIONS.items()}
WHOLE_CLASSES = {name: _make(WholeReduction, "tensor_" + name, name, reducer=r)
                 for name, r in WHOLE.items()}
NORMALIZER_CLASSES = {name: _make(Normalizer, name, name) for name in NORMALIZERS}
EXTREMA = {name: _make(Extremum, "elementwise_" + name, name, latex_name="\\" + name)
           for name in ("max", "min")}
STRUCT_CLASSES = {**{name: _make(StructReduction, "struct_" + name, name, reducer=r.reducer, latex_name=r.latex)
                     for name, r in STRUCT_REDUCERS.items()},
                  STDNORM: _make(StdNorm, STDNORM, STDNORM)}



@functools.lru_cache(maxsize=None)
def _opaque_class(name: str, latex: str | None):
    return _make(Elementwise, name, name, **({"latex_name": latex} if latex else {}))


def elementwise_sympy(name: str):
    """The sympy constructor of a registered elementwise function (``ELEMENTWISE_FUNCTIONS``):
    sympy's own (``exp``, ``Abs``), a power (``sq``), or an ``Elementwise`` class."""
    f = ELEMENTWISE_FUNCTIONS[name]
    if f.sympy is None:
        return _opaque_class(name, f.latex)
    return getattr(sympy, f.sympy) if isinstance(f.sympy, str) else f.sympy


def sympy_classes() -> dict:
    """sympy function class → DSL name, for the registered functions sympy has a class for
    (``Abs``, ``exp``, ``log``, ``tanh``; not ``sqrt``/``sq``, which sympy makes powers)."""
    out = {}
    for name in ELEMENTWISE_FUNCTIONS:
        c = elementwise_sympy(name)
        if isinstance(c, sympy.FunctionClass) and not issubclass(c, DSLFunction):
            out[c] = name
    return out


def increasing_classes() -> tuple:
    """Strictly increasing elementwise functions as sympy classes (canonical() strips them)."""
    return tuple(elementwise_sympy(n) for n, f in ELEMENTWISE_FUNCTIONS.items() if f.increasing)


# --- signs and shapes ------------------------------------------------------------------------
def _number_sign(e) -> str:
    if e.is_extended_positive:
        return POS
    if e.is_zero or e.is_extended_nonnegative:
        return NONNEG
    return SIGNED


@functools.lru_cache(maxsize=65536)
def sign_of(e) -> str:
    """The checker's sign rules on a sympy expression: ``pos``, ``nonneg`` or ``signed``."""
    if isinstance(e, OperandSymbol):
        return OPERANDS[e.name].type.sign
    if e.is_Number or e.is_NumberSymbol:
        return _number_sign(e)
    if isinstance(e, DSLFunction):
        return e.result_sign()
    if e.is_Add:
        signs = [sign_of(a) for a in e.args]
        if SIGNED in signs:
            return SIGNED
        return POS if POS in signs else NONNEG
    if e.is_Mul:
        return weakest(*(sign_of(a) for a in e.args))
    if e.is_Pow:
        base, k = e.args
        s = sign_of(base)
        if k.is_Integer:
            if k == 0 or s == POS:
                return POS
            return NONNEG if k % 2 == 0 else s
        if k.is_Number:
            return s  # a non-integer power of a nonneg base (signed ones do not type-check)
        return POS if s == POS else SIGNED
    for cls, name in sympy_classes().items():
        if isinstance(e, cls):
            return ELEMENTWISE[name][1](sign_of(e.args[0]))
    if e.is_number:
        return _number_sign(e)
    return SIGNED  # log and anything else


@functools.lru_cache(maxsize=65536)
def shape_of(e) -> str:
    """Shape type (Mat/Row/Col/Scalar) of a sympy expression built by ``to_sympy``."""
    if isinstance(e, OperandSymbol):
        return OPERANDS[e.name].type.shape
    if not e.args or e.is_number:
        return SCALAR
    shapes = [shape_of(a) for a in e.args]
    if isinstance(e, DSLFunction):
        return e.result_shape(*shapes)
    return functools.reduce(broadcast_shape, shapes)


def order_key(e):
    """Factors and terms: the ones on W first, then G, hinv, ‖X‖...; then sympy's order."""
    ranks = [operand_rank(s.name) for s in e.free_symbols if isinstance(s, OperandSymbol)]
    return (min(ranks) if ranks else -1, sympy.default_sort_key(e))
