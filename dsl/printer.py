"""AST → DSL text with minimal parentheses. ``parse_expr(to_text(e)) == e`` for parsed trees."""
from __future__ import annotations

import math

from .ast import BinOp, Call, Expr, Hole, Name, Neg, Num, Operand
from .operands import OPERANDS

# Binding strength; higher binds tighter.
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_NEG, _POW, _ATOM = 3, 4, 5


def format_number(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"cannot print non-finite number {v}")
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"  # -0 and 0 differ under division
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def is_negative_literal(e: Expr) -> bool:
    """A number printed with a leading minus, -0 included: it binds like a unary minus in
    every spelling, so (-0) ^ 2 (= 0) is never printed as -(0 ^ 2) (= -0)."""
    return isinstance(e, Num) and math.copysign(1.0, e.value) < 0


def _prec(e: Expr) -> int:
    if isinstance(e, BinOp):
        return _POW if e.op == "^" else _PREC[e.op]
    if isinstance(e, Neg) or is_negative_literal(e):
        return _NEG
    return _ATOM


def to_text(e: Expr, ascii: bool = False) -> str:
    """DSL text; ``ascii=True`` spells ‖X‖ as norm(X)."""
    if isinstance(e, Num):
        return format_number(e.value)
    if isinstance(e, Name):
        return e.name
    if isinstance(e, Hole):
        return f"?{e.kind}"
    if isinstance(e, Operand):
        info = OPERANDS[e.key]
        return info.ascii if ascii else info.text
    if isinstance(e, Neg):
        inner = to_text(e.operand, ascii)
        return f"-({inner})" if _prec(e.operand) < _NEG else f"-{inner}"
    if isinstance(e, BinOp):
        left, right = to_text(e.left, ascii), to_text(e.right, ascii)
        p = _prec(e)
        if e.op == "^":  # right-associative; the exponent may be a unary minus
            if _prec(e.left) <= _POW:
                left = f"({left})"
            if _prec(e.right) < _NEG:
                right = f"({right})"
            return f"{left} ^ {right}"
        if _prec(e.left) < p:
            left = f"({left})"
        if _prec(e.right) <= p:
            right = f"({right})"
        return f"{left} {e.op} {right}"
    if isinstance(e, Call):
        if e.func == "abs" and len(e.args) == 1 and not e.kwargs:
            return f"|{to_text(e.args[0], ascii)}|"
        args = [to_text(a, ascii) for a in e.args] + [f"{k}={to_text(v, ascii)}" for k, v in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    raise TypeError(f"not an expression: {e!r}")
