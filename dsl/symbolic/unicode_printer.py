"""AST → Unicode math on one line: ``|W|·‖X‖``, ``√|W|``, ``W²``, ``‖X‖^0.5``, ``row_sum(|W|)``.

Same precedence rules as ``printer.to_text``; only the spellings differ.
"""
from __future__ import annotations

from ..ast import BinOp, Call, Expr, Hole, Name, Neg, Num, Operand
from ..operands import OPERANDS
from ..printer import format_number, is_negative_literal

_ADD, _MUL, _NEG, _ROOT, _POW, _ATOM = 1, 2, 3, 3.5, 4, 5
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_SUPERSCRIPT_CHARS = set("⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
MINUS = "−"


def _num(v: float) -> str:
    return format_number(v).replace("-", MINUS)


def _prec(e: Expr) -> float:
    if isinstance(e, BinOp):
        return {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "^": _POW}[e.op]
    if isinstance(e, Neg) or is_negative_literal(e):
        return _NEG
    if isinstance(e, Call) and e.func == "sqrt":
        return _ROOT
    return _ATOM


def _wrap(e: Expr, below: float) -> str:
    s = pretty_text(e)
    return f"({s})" if _prec(e) < below else s


def pretty_text(e: Expr) -> str:
    if isinstance(e, Num):
        return _num(e.value)
    if isinstance(e, Operand):
        return OPERANDS[e.key].pretty
    if isinstance(e, Name):
        return e.name
    if isinstance(e, Hole):  # a search sketch: ?Mat, ?c
        return f"?{e.kind}"
    if isinstance(e, Neg):
        return MINUS + _wrap(e.operand, _NEG)
    if isinstance(e, BinOp):
        if e.op == "^":
            return _power(e)
        p = _prec(e)
        left, right = _wrap(e.left, p), _wrap(e.right, p + 1)
        sep = {"+": " + ", "-": f" {MINUS} ", "*": "·", "/": "/"}[e.op]
        return f"{left}{sep}{right}"
    if isinstance(e, Call):
        if e.func == "abs" and len(e.args) == 1:
            return f"|{pretty_text(e.args[0])}|"
        if e.func == "sqrt" and len(e.args) == 1:
            return "√" + _wrap(e.args[0], _ATOM)
        return f"{e.func}({', '.join(pretty_text(a) for a in e.args)})"
    raise TypeError(f"not an expression: {e!r}")


def _power(e: BinOp) -> str:
    base = pretty_text(e.left)
    if _prec(e.left) <= _POW or _SUPERSCRIPT_CHARS & set(base) or \
            (isinstance(e.left, Num) and "e" in base):
        base = f"({base})"
    k = e.right
    if isinstance(k, Num) and k.value == int(k.value) and abs(k.value) < 1e15:
        return base + str(int(k.value)).translate(_SUPERSCRIPT)
    return f"{base}^{_wrap(k, _ATOM)}"
