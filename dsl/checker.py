"""Name resolution and type checking.

``check(expr, env)`` returns a new tree in which library metrics are inlined,
parameters are replaced by numbers, and every node carries its ``Type``. Errors point
at the offending span and say what was expected, in the user's spelling.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import DSLNameError, DSLTypeError, Span
from .ast import BinOp, Call, Definition, Expr, Name, Neg, Num, Operand, walk
from .functions import (ALL_FUNCTIONS, ARITY, AXIS_FUNCTIONS, AXIS_RESULT, BINARY, ELEMENTWISE,
                        NORMALIZERS, WHOLE, reduction_sign)
from .operands import NAMED_OPERANDS, OPERANDS, X_NORMS, X_STATISTICS
from .structure_vocab import BLOCK_OPERANDS, STRUCT_NORMALIZERS, STRUCT_REDUCERS, stdnorm_sign
from .types import MAT, NONNEG, PER_WEIGHT_SHAPES, POS, SCALAR, SIGNED, STRUCT, Type, broadcast_shape, weakest

MAX_INLINE_DEPTH = 16


@dataclass(frozen=True)
class Env:
    """What names mean while checking: parameter values and the metric library."""

    params: dict = field(default_factory=dict)          # name -> float
    metrics: dict = field(default_factory=dict)         # name -> Definition
    stack: tuple = ()                                   # definitions being inlined


def check(expr: Expr, env: Env | None = None) -> Expr:
    return _Checker(env or Env()).visit(expr)


def number_type(value: float) -> Type:
    return Type(SCALAR, POS if value > 0 else NONNEG if value == 0 else SIGNED)


def _show(e: Expr) -> str:
    from .printer import to_text  # local: printer imports nothing from here
    return to_text(e)


class _Checker:
    def __init__(self, env: Env):
        self.env = env

    def visit(self, e: Expr) -> Expr:
        method = getattr(self, "visit_" + type(e).__name__)
        return method(e)

    # --- leaves -----------------------------------------------------------------
    def visit_Num(self, e: Num) -> Expr:
        return replace(e, type=number_type(e.value))

    def visit_Hole(self, e) -> Expr:
        raise DSLTypeError(f"?{e.kind} is a hole of a search sketch, not a complete formula",
                           span=e.span, hint="replace it with an expression")

    def visit_Operand(self, e: Operand) -> Expr:
        return replace(e, type=OPERANDS[e.key].type)

    def visit_Name(self, e: Name) -> Expr:
        if e.name in self.env.params:
            return Num(self.env.params[e.name], span=e.span, type=number_type(self.env.params[e.name]))
        if e.name in NAMED_OPERANDS:
            key = NAMED_OPERANDS[e.name]
            return Operand(key, span=e.span, type=OPERANDS[key].type)
        if e.name in self.env.metrics:
            return self.inline(self.env.metrics[e.name], (), (), e.span)
        if e.name in BLOCK_OPERANDS:  # a block statistic: Struct, so only structure scores take it
            key = BLOCK_OPERANDS[e.name]
            return Operand(key, span=e.span, type=OPERANDS[key].type)
        if e.name == "X":
            raise DSLNameError("X on its own has no value", span=e.span,
                               hint="use a statistic of the input: ‖X‖ (norm(X)), norm(X, 1), "
                                    "norm(X, inf), mean(X), std(X), var(X)")
        if e.name in ALL_FUNCTIONS:
            raise DSLNameError(f"{e.name} is a function", span=e.span,
                               hint=f"call it: {e.name}(...)")
        raise DSLNameError(f"unknown name {e.name!r}", span=e.span, hint=self.suggest(e.name))

    def suggest(self, name: str) -> str:
        known = list(self.env.params) + list(NAMED_OPERANDS) + list(self.env.metrics) + ["X"]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if not close and name.lower() in {k.lower() for k in known}:
            close = [k for k in known if k.lower() == name.lower()]
        operands = ", ".join(list(NAMED_OPERANDS) + ["‖X‖"])
        if close:
            return f"did you mean {' or '.join(close)}? (operands: {operands})"
        return f"operands are {operands}; library metrics: {', '.join(sorted(self.env.metrics)) or 'none'}"

    # --- arithmetic -------------------------------------------------------------
    def visit_Neg(self, e: Neg) -> Expr:
        inner = self.visit(e.operand)
        if isinstance(inner, Num):  # fold -(number) so parameters print as numbers
            return Num(-inner.value, span=e.span, type=number_type(-inner.value))
        return replace(e, operand=inner, type=Type(inner.type.shape, SIGNED))

    def visit_BinOp(self, e: BinOp) -> Expr:
        left, right = self.visit(e.left), self.visit(e.right)
        if e.op == "^":
            return self.power(e, left, right)
        shape = _combined_shape(e, left, right)
        a, b = left.type.sign, right.type.sign
        if e.op == "+":
            sign = POS if (POS in (a, b) and SIGNED not in (a, b)) else (NONNEG if SIGNED not in (a, b) else SIGNED)
        elif e.op == "-":
            sign = SIGNED
        else:  # * and /
            sign = weakest(a, b)
            _check_constant_factor(e, left, right)
        return replace(e, left=left, right=right, type=Type(shape, sign))

    def power(self, e: BinOp, base: Expr, exponent: Expr) -> Expr:
        value = constant_value(exponent)
        if value is None:
            raise DSLTypeError("the exponent must be a constant", span=e.right.span,
                               hint="use a number or a parameter, e.g. ‖X‖ ^ 0.5; for e^x use exp(x)")
        if not math.isfinite(value):
            raise DSLTypeError("the exponent is not a finite number", span=e.right.span)
        sign = base.type.sign
        if value == int(value):
            even = int(value) % 2 == 0
            if value == 0:
                sign = POS
            elif even and sign == SIGNED:
                sign = NONNEG
        elif sign == SIGNED:
            raise DSLTypeError(f"{_show(base)} ^ {_fmt(value)} of a possibly negative value",
                               span=e.span,
                               hint=f"{_show(base)} is signed; did you mean |{_show(base)}| ^ {_fmt(value)}?")
        exponent = Num(value, span=e.right.span, type=number_type(value))
        return replace(e, left=base, right=exponent, type=Type(base.type.shape, sign))

    # --- calls ------------------------------------------------------------------
    def visit_Call(self, e: Call) -> Expr:
        f = e.func
        if f in self.env.metrics and f not in ALL_FUNCTIONS:
            return self.inline(self.env.metrics[f], e.args, e.kwargs, e.span)
        if f in X_STATISTICS and len(e.args) == 1 and _is_x(e.args[0]) and not e.kwargs:
            key = X_STATISTICS[f]  # mean(X), std(X), var(X): statistics of the input
            return Operand(key, span=e.span, type=OPERANDS[key].type)
        if f in STRUCT_REDUCERS or f in STRUCT_NORMALIZERS:
            return self.structure_call(e)
        if f == "var":
            raise DSLTypeError("var() takes the input X: var(X)", span=e.span,
                               hint="for the spread of a weight expression use std(e) ^ 2")
        if f not in ALL_FUNCTIONS:
            close = difflib.get_close_matches(f, ALL_FUNCTIONS + sorted(self.env.metrics), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else \
                "functions: " + ", ".join(ALL_FUNCTIONS)
            raise DSLNameError(f"unknown function {f!r}", span=e.name_span, hint=hint)
        if e.kwargs:
            raise DSLTypeError(f"{f}() takes no keyword arguments", span=e.span)
        if f == "norm":
            return self.x_norm(e)
        lo, hi = ARITY[f]
        if not lo <= len(e.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} or {hi}"
            raise DSLTypeError(f"{f}() takes {want} argument{'s' if hi > 1 else ''}, got {len(e.args)}",
                               span=e.span)
        args = tuple(self.visit(a) for a in e.args)
        for a, raw in zip(args, e.args):
            if _is_x(raw):
                raise DSLTypeError(f"{f}(X) is not a statistic", span=raw.span,
                                   hint="statistics of X: ‖X‖, norm(X, 1), norm(X, inf), mean(X), std(X), var(X)")
        if len(args) == 2:  # min(a, b), max(a, b)
            shape = _combined_shape(e, *args)
            return replace(e, args=args, type=Type(shape, BINARY[f](args[0].type.sign, args[1].type.sign)))
        (arg,) = args
        t = arg.type
        if f in ELEMENTWISE:
            needs_nonneg, rule = ELEMENTWISE[f]
            if needs_nonneg and not t.nonneg:
                raise DSLTypeError(f"{f} of a possibly negative value", span=e.span,
                                   hint=f"{_show(arg)} is signed; did you mean {f}(|{_show(arg)}|)?")
            return replace(e, args=args, type=Type(t.shape, rule(t.sign)))
        if f in AXIS_FUNCTIONS:
            axis, reducer = AXIS_FUNCTIONS[f]
            result = AXIS_RESULT[axis].get(t.shape)
            if result is None and t.shape == STRUCT:
                raise DSLTypeError(f"{f} expects Mat or {'Col' if axis == 'row' else 'Row'}, got Struct",
                                   span=e.span, hint="a structure score has no rows or columns; over the "
                                                     f"structures use the whole-tensor {reducer if reducer != 'norm' else 'fro'}(...)")
            if result is None:
                ok = " or ".join(AXIS_RESULT[axis])
                other = "col" if axis == "row" else "row"
                whole = "fro" if reducer == "norm" else reducer
                where = "input" if axis == "row" else "output"
                raise DSLTypeError(f"{f} expects {ok}, got {t.shape}", span=e.span,
                                   hint=f"{f} reduces along the {where} dimension; for a {t.shape} "
                                        f"try {other}_{reducer}(...) or the whole-tensor {whole}(...)")
            return replace(e, args=args, type=Type(result, reduction_sign(reducer, t.sign)))
        if f in WHOLE:
            return replace(e, args=args, type=Type(SCALAR, reduction_sign(WHOLE[f], t.sign)))
        if f in NORMALIZERS:
            return replace(e, args=args, type=Type(t.shape, NORMALIZERS[f]))
        raise AssertionError(f)  # pragma: no cover - the tables above are exhaustive

    def structure_call(self, e: Call) -> Expr:
        """group_sum(m) & co. (a per-weight metric → Struct) and stdnorm(s) (Struct → Struct);
        docs/structures.md."""
        f = e.func
        if e.kwargs or len(e.args) != 1:
            raise DSLTypeError(f"{f}() takes 1 argument, got {len(e.args) + len(e.kwargs)}", span=e.span)
        (arg,) = (self.visit(a) for a in e.args)
        t = arg.type
        if f in STRUCT_NORMALIZERS:
            if t.shape != STRUCT:
                raise DSLTypeError(f"{f} expects a structure score (Struct), got {t.shape}", span=e.span,
                                   hint=f"normalize a reduced score: {f}(group_sum({_show(arg)}))"
                                   if t.shape in PER_WEIGHT_SHAPES else None)
            return replace(e, args=(arg,), type=Type(STRUCT, stdnorm_sign(t.sign)))
        if t.shape not in PER_WEIGHT_SHAPES:
            what = "a structure score" if t.shape == STRUCT else "one value per layer"
            raise DSLTypeError(f"{f} takes a per-weight metric (Mat, Row or Col), got {t.shape} ({what})",
                               span=e.args[0].span,
                               hint=f"{f} reduces a per-weight score over each structure's owned entries"
                                    + ("; combine structure scores outside it" if t.shape == STRUCT else ""))
        return replace(e, args=(arg,), type=Type(STRUCT, t.sign))

    def x_norm(self, e: Call) -> Expr:
        if not e.args or not _is_x(e.args[0]):
            raise DSLTypeError("norm() takes the input X: norm(X), norm(X, 1), norm(X, inf)", span=e.span,
                               hint="for a weight norm use row_norm(e), col_norm(e) or fro(e)")
        if len(e.args) > 2:
            raise DSLTypeError(f"norm() takes 1 or 2 arguments, got {len(e.args)}", span=e.span)
        p = "2"
        if len(e.args) == 2:
            raw = e.args[1]
            p = "inf" if isinstance(raw, Name) and raw.name == "inf" else \
                (_fmt(raw.value) if isinstance(raw, Num) else None)
            if p not in X_NORMS:
                raise DSLTypeError("the order of norm(X, p) must be 1, 2 or inf", span=raw.span)
        key = X_NORMS[p]
        return Operand(key, span=e.span, type=OPERANDS[key].type)

    # --- library metrics ----------------------------------------------------------
    def inline(self, d: Definition, args, kwargs, span: Span) -> Expr:
        if d.name in self.env.stack or len(self.env.stack) >= MAX_INLINE_DEPTH:
            raise DSLTypeError(f"metric {d.name!r} refers to itself", span=span)
        def value_of(pname: str, arg: Expr) -> float:
            value = constant_value(self.visit(arg))
            if value is None:
                raise DSLTypeError(f"parameter {pname!r} of {d.name} must be a number", span=arg.span)
            if not math.isfinite(value):
                raise DSLTypeError(f"parameter {pname!r} of {d.name} is not a finite number",
                                   span=arg.span)
            return value
        values = bind_parameters(d, args, kwargs, span, value_of)
        inner = _Checker(Env(params=values, metrics=self.env.metrics, stack=self.env.stack + (d.name,)))
        try:
            return inner.visit(d.body)
        except (DSLNameError, DSLTypeError) as err:
            if err.source is None and d.source:  # error inside a library definition
                err.with_source(d.source)
            raise


def _combined_shape(e: Expr, left: Expr, right: Expr) -> str:
    shape = broadcast_shape(left.type.shape, right.type.shape)
    if shape is None:  # a per-structure score with a per-weight one
        per_weight = left if right.type.shape == STRUCT else right
        raise DSLTypeError(f"cannot combine {left.type.shape} and {right.type.shape}: a structure score "
                           "(Struct, one value per structure) with a per-weight one", span=e.span,
                           hint=f"reduce the per-weight side over each structure: group_sum({_show(per_weight)})")
    return shape


def _is_x(e: Expr) -> bool:
    return isinstance(e, Name) and e.name == "X"


def _check_constant_factor(e: BinOp, left: Expr, right: Expr) -> None:
    """Reject a product/quotient chain whose constant factors overflow or underflow float32.

    ``|W|·1e30·1e30`` has only finite literals, but the scores (float32) are inf; the
    simplified form multiplies the factors out, so the check folds them the same way.
    """
    factor, node, operands = 1.0, replace(e, left=left, right=right), []
    while isinstance(node, BinOp) and node.op in ("*", "/"):
        operands.append((node.op, node.right))
        node = node.left
    operands.append(("*", node))
    for op, operand in operands:
        value = operand.value if isinstance(operand, Num) else (
            -operand.operand.value if isinstance(operand, Neg) and isinstance(operand.operand, Num) else None)
        if value is None or value == 0:
            continue
        factor = factor * value if op == "*" else factor / value
    from .parser import FLOAT32_MAX, FLOAT32_TINY  # local: the parser imports the checker's types
    if abs(factor) > FLOAT32_MAX or 0 < abs(factor) < FLOAT32_TINY:
        word = "overflows" if abs(factor) > FLOAT32_MAX else "underflows to 0"
        raise DSLTypeError(f"the constant factor of this product ({factor:.3g}) {word} in float32, "
                           "the precision scores are computed in", span=e.span,
                           hint="scale the constants into float32's range (about 1.4e-45 to 3.4e38)")


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def constant_value(e: Expr) -> float | None:
    """The value of a checked expression made of numbers only, else None."""
    if any(isinstance(n, (Operand, Name, Call)) for n in walk(e)):
        return None
    try:
        return _fold(e)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError):
        return math.nan  # callers reject non-finite constants with a span


def _fold(e: Expr) -> float:
    if isinstance(e, Num):
        return e.value
    if isinstance(e, Neg):
        return -_fold(e.operand)
    a, b = _fold(e.left), _fold(e.right)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
            "^": lambda: float(a ** b)}[e.op]()


def bind_parameters(d: Definition, args, kwargs, span: Span,
                    value_of: Callable[[str, Expr], float]) -> dict[str, float]:
    """A library definition's parameter values for a call: defaults, then the positional and
    keyword arguments, each turned into a number by ``value_of(name, argument)``."""
    names = [p.name for p in d.params]
    if len(args) > len(names):
        raise DSLTypeError(f"{d.name} takes {len(names)} parameter{'s' * (len(names) != 1)}"
                           f"{' (' + ', '.join(names) + ')' if names else ''}, got {len(args)}", span=span)
    values = {p.name: p.default for p in d.params}
    seen: set[str] = set()
    for pname, arg in list(zip(names, args)) + list(kwargs):
        if pname not in values:
            raise DSLTypeError(f"{d.name} has no parameter {pname!r}", span=arg.span,
                               hint=f"parameters: {', '.join(names) or 'none'}")
        if pname in seen:
            raise DSLTypeError(f"parameter {pname!r} given twice", span=arg.span)
        seen.add(pname)
        values[pname] = value_of(pname, arg)
    return values
