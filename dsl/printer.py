"""AST → text in three spellings: DSL text (``to_text``), Unicode math (``pretty_text``) and
LaTeX (``latex_text``). One walker decides precedence and parentheses; each spelling only
says how numbers, operands, operators and calls are written and where it binds differently
(√x and \\frac are blocks of their own). ``parse_expr(to_text(e)) == e`` for parsed trees.
"""
from __future__ import annotations

import math

from .ast import BinOp, Call, Expr, Hole, Name, Neg, Num, Operand
from .functions import ELEMENTWISE_FUNCTIONS
from .operands import OPERANDS
from .structure_vocab import STRUCT_REDUCERS

# Binding strength; higher binds tighter. _ROOT: Unicode's √x binds above a unary minus
# and below a power, so (√x)² keeps its parentheses.
_ADD, _MUL, _NEG, _ROOT, _POW, _ATOM = 1, 2, 3, 3.5, 4, 5
_BINARY = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "^": _POW}


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


class _Spelling:
    """The walker, spelled as DSL text; the other spellings override the leaf methods."""

    open, close, minus = "(", ")", "-"

    def __init__(self, ascii: bool = False):
        self.ascii = ascii

    def prec(self, e: Expr) -> float:
        if isinstance(e, BinOp):
            return _BINARY[e.op]
        if isinstance(e, Neg) or is_negative_literal(e):
            return _NEG
        return _ATOM

    def wrap(self, e: Expr, below: float) -> str:
        s = self.text(e)
        return f"{self.open}{s}{self.close}" if self.prec(e) < below else s

    def text(self, e: Expr) -> str:
        if isinstance(e, Num):
            return self.number(e.value)
        if isinstance(e, Name):
            return e.name
        if isinstance(e, Hole):  # a search sketch: ?Mat, ?c
            return f"?{e.kind}"
        if isinstance(e, Operand):
            return self.operand(e.key)
        if isinstance(e, Neg):
            return self.minus + self.wrap(e.operand, _NEG)
        if isinstance(e, BinOp):
            return self.power(e) if e.op == "^" else self.binary(e)
        if isinstance(e, Call):
            return self.call(e)
        raise TypeError(f"not an expression: {e!r}")

    def number(self, v: float) -> str:
        return format_number(v)

    def operand(self, key: str) -> str:
        info = OPERANDS[key]
        return info.ascii if self.ascii else info.text

    def binary(self, e: BinOp) -> str:
        p = self.prec(e)
        return f"{self.wrap(e.left, p)} {e.op} {self.wrap(e.right, p + 1)}"

    def power(self, e: BinOp) -> str:  # right-associative; the exponent may be a unary minus
        return f"{self.wrap(e.left, _POW + 1)} ^ {self.wrap(e.right, _NEG)}"

    def call(self, e: Call) -> str:
        if e.func == "abs" and len(e.args) == 1 and not e.kwargs:
            return f"|{self.text(e.args[0])}|"
        args = [self.text(a) for a in e.args] + [f"{k}={self.text(v)}" for k, v in e.kwargs]
        return f"{e.func}({', '.join(args)})"


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_SUPERSCRIPT_CHARS = set("⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
MINUS = "−"


class _Unicode(_Spelling):
    """``|W|·‖X‖``, ``√|W|``, ``W²``, ``‖X‖^0.5``, ``row_sum(|W|)``."""

    minus = MINUS

    def prec(self, e: Expr) -> float:
        if isinstance(e, Call) and e.func == "sqrt":
            return _ROOT
        return super().prec(e)

    def number(self, v: float) -> str:
        return format_number(v).replace("-", MINUS)

    def operand(self, key: str) -> str:
        return OPERANDS[key].pretty

    def binary(self, e: BinOp) -> str:
        p = self.prec(e)
        sep = {"+": " + ", "-": f" {MINUS} ", "*": "·", "/": "/"}[e.op]
        return f"{self.wrap(e.left, p)}{sep}{self.wrap(e.right, p + 1)}"

    def power(self, e: BinOp) -> str:
        base = self.text(e.left)
        if self.prec(e.left) <= _POW or _SUPERSCRIPT_CHARS & set(base) or \
                (isinstance(e.left, Num) and "e" in base):
            base = f"({base})"
        k = e.right
        if isinstance(k, Num) and k.value == int(k.value) and abs(k.value) < 1e15:
            return base + str(int(k.value)).translate(_SUPERSCRIPT)
        return f"{base}^{self.wrap(k, _ATOM)}"

    def call(self, e: Call) -> str:
        if e.func == "abs" and len(e.args) == 1:
            return f"|{self.text(e.args[0])}|"
        if e.func == "sqrt" and len(e.args) == 1:
            return "√" + self.wrap(e.args[0], _ATOM)
        return f"{e.func}({', '.join(self.text(a) for a in e.args)})"


_LATEX_NAMED = {"min": r"\min", "max": r"\max"}  # elementwise functions: their registry entry's latex
_LATEX_NAMED.update({name: r.latex for name, r in STRUCT_REDUCERS.items()})  # \Sigma_{\mathrm{group}}


class _Latex(_Spelling):
    r"""``\left|W\right| \left\|X\right\|``, ``\sqrt{\left|W\right|}``,
    ``\operatorname{row\_sum}\left(\left|W\right|\right)``, ``\frac{W^{2}}{\left[H^{-1}\right]^{2}}``."""

    open, close = r"\left(", r"\right)"

    def prec(self, e: Expr) -> float:
        if isinstance(e, BinOp) and e.op == "/":
            return _NEG  # \frac is a block
        if isinstance(e, Call) and e.func in ("sqrt", "exp"):
            return _NEG  # \sqrt{x}^{2} and e^{x}^{2} need parentheses
        return super().prec(e)

    def operand(self, key: str) -> str:
        return OPERANDS[key].latex

    def binary(self, e: BinOp) -> str:
        if e.op == "/":
            return rf"\frac{{{self.text(e.left)}}}{{{self.text(e.right)}}}"
        if e.op == "*":
            left, right = self.wrap(e.left, _MUL), self.wrap(e.right, _MUL + 1)
            sep = r" \cdot " if right[:1].isdigit() or right[:1] == "-" else " "
            return f"{left}{sep}{right}"
        return f"{self.wrap(e.left, _ADD)} {e.op} {self.wrap(e.right, _ADD + 1)}"

    def power(self, e: BinOp) -> str:
        return rf"{self.wrap(e.left, _POW + 1)}^{{{self.text(e.right)}}}"

    def call(self, e: Call) -> str:
        args = [self.text(a) for a in e.args]
        if e.func == "abs" and len(args) == 1:
            return rf"\left|{args[0]}\right|"
        if e.func == "sqrt" and len(args) == 1:
            return rf"\sqrt{{{args[0]}}}"
        if e.func == "exp" and len(args) == 1:
            return rf"e^{{{args[0]}}}"
        entry = ELEMENTWISE_FUNCTIONS.get(e.func)
        name = ((entry and entry.latex) or _LATEX_NAMED.get(e.func)
                or r"\operatorname{" + e.func.replace("_", r"\_") + "}")
        return rf"{name}\left({', '.join(args)}\right)"


_DSL, _DSL_ASCII, _UNICODE, _LATEX = _Spelling(), _Spelling(ascii=True), _Unicode(), _Latex()


def to_text(e: Expr, ascii: bool = False) -> str:
    """DSL text; ``ascii=True`` spells ‖X‖ as norm(X)."""
    return (_DSL_ASCII if ascii else _DSL).text(e)


def pretty_text(e: Expr) -> str:
    """The same formula in Unicode math on one line."""
    return _UNICODE.text(e)


def latex_text(e: Expr) -> str:
    """The same formula in LaTeX."""
    return _LATEX.text(e)
