r"""AST → LaTeX: ``\left|W\right| \left\|X\right\|``, ``\sqrt{\left|W\right|}``,
``\operatorname{row\_sum}\left(\left|W\right|\right)``, ``\frac{W^{2}}{\left[H^{-1}\right]^{2}}``.
"""
from __future__ import annotations

from .ast import BinOp, Call, Expr, Hole, Name, Neg, Num, Operand
from .functions import ELEMENTWISE_FUNCTIONS
from .operands import OPERANDS
from .printer import format_number

_ADD, _MUL, _NEG, _POW, _ATOM = 1, 2, 3, 4, 5
_NAMED = {"min": r"\min", "max": r"\max"}


def _op(name: str) -> str:
    f = ELEMENTWISE_FUNCTIONS.get(name)
    return (f and f.latex) or _NAMED.get(name) or r"\operatorname{" + name.replace("_", r"\_") + "}"


def _prec(e: Expr) -> int:
    if isinstance(e, BinOp):
        return {"+": _ADD, "-": _ADD, "*": _MUL, "/": _NEG, "^": _POW}[e.op]  # \frac is a block
    if isinstance(e, Neg) or (isinstance(e, Num) and e.value < 0):
        return _NEG
    if isinstance(e, Call) and e.func in ("sqrt", "exp"):
        return _NEG  # \sqrt{x}^{2} and e^{x}^{2} need parentheses
    return _ATOM


def _wrap(e: Expr, below: int) -> str:
    s = latex_text(e)
    return rf"\left({s}\right)" if _prec(e) < below else s


def latex_text(e: Expr) -> str:
    if isinstance(e, Num):
        return format_number(e.value)
    if isinstance(e, Operand):
        return OPERANDS[e.key].latex
    if isinstance(e, Name):
        return e.name
    if isinstance(e, Hole):  # a search sketch: ?Mat, ?c
        return f"?{e.kind}"
    if isinstance(e, Neg):
        return "-" + _wrap(e.operand, _NEG)
    if isinstance(e, BinOp):
        if e.op == "/":
            return rf"\frac{{{latex_text(e.left)}}}{{{latex_text(e.right)}}}"
        if e.op == "^":
            return rf"{_wrap(e.left, _POW + 1)}^{{{latex_text(e.right)}}}"
        if e.op == "*":
            left, right = _wrap(e.left, _MUL), _wrap(e.right, _MUL + 1)
            sep = r" \cdot " if right[:1].isdigit() or right[:1] == "-" else " "
            return f"{left}{sep}{right}"
        return f"{_wrap(e.left, _ADD)} {e.op} {_wrap(e.right, _ADD + 1)}"
    if isinstance(e, Call):
        args = [latex_text(a) for a in e.args]
        if e.func == "abs" and len(args) == 1:
            return rf"\left|{args[0]}\right|"
        if e.func == "sqrt" and len(args) == 1:
            return rf"\sqrt{{{args[0]}}}"
        if e.func == "exp" and len(args) == 1:
            return rf"e^{{{args[0]}}}"
        return rf"{_op(e.func)}\left({', '.join(args)}\right)"
    raise TypeError(f"not an expression: {e!r}")
