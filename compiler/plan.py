"""Checked AST → ``Plan``: straight-line SSA code over registers. Knows nothing about torch.

A plan is inert and hashable (like an einops recipe). Registers ``0 .. n_regs-1`` hold
either an input statistic (``Plan.inputs``: ``(key, register)``) or the result of one
instruction. An instruction is ``Instr(op, args, out, text)``: ``args`` are registers
(``int``) or inline constants (``Const``); ``text`` is the DSL text of the sub-formula it
computes (for error messages).

Built in one bottom-up pass with value numbering:
- common subexpressions are computed once (``|W|`` in RIA is one instruction; ``a + b``
  and ``b + a`` too, since IEEE ``+`` and ``*`` are commutative exactly);
- pure-number subtrees are folded to constants, emulating float32 exactly (only ops
  torch computes correctly rounded: ``+ - * /``, ``abs``, ``sq``, ``min``/``max`` and
  the exponents 0, 1, 2, -1; not ``sqrt``: torch's float32 sqrt is off by one ulp for
  about 17% of inputs on CPU, so ``sqrt(2)`` stays an instruction). A fold that
  would turn finite numbers into inf/NaN is left as an instruction, so the error message
  can name it. No algebraic rewrites: ``x * 1`` or ``x - x`` change NaN/-0 behaviour;
- liveness: ``frees[i]`` lists the registers dead after instruction ``i``, and
  ``reuse[i]`` names the argument position whose (temporary, dead, same-shaped) storage
  may receive the result in place (-1: none).

``print(build_plan(prunedsl.parse("ria").expr))`` shows the code.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import NamedTuple, Union

from ..dsl.ast import BinOp, Call, Expr, Name, Neg, Num, Operand
from ..dsl.functions import AXIS_FUNCTIONS, ELEMENTWISE, NORMALIZERS, WHOLE
from ..dsl.operands import OPERANDS
from ..dsl.printer import to_text
from ..dsl.types import SCALAR, broadcast_shape
from ..errors import CompileError


class Const(NamedTuple):
    """An inline constant (a float32 value, except a ``pow`` exponent, kept as written)."""

    value: float


Arg = Union[int, Const]


class Instr(NamedTuple):
    op: str
    args: tuple  # of Arg
    out: int
    text: str  # DSL text of the sub-formula this instruction computes


# op names --------------------------------------------------------------------------
# unary ops: "neg" and every name in dsl.functions.ELEMENTWISE (read live, so a function
# registered later compiles too)
BINARY_OPS = ("add", "sub", "mul", "div", "minimum", "maximum")
AXIS_OPS = tuple(AXIS_FUNCTIONS)           # row_sum ... col_norm
WHOLE_OPS = tuple(WHOLE)                   # sum mean std max min fro
NORMALIZE_OPS = tuple(NORMALIZERS)         # minmax zscore
_ELEMENTWISE_OPS = frozenset(BINARY_OPS + ("pow", "neg") + NORMALIZE_OPS)
COMMUTATIVE = frozenset({"add", "mul"})
_BINOP = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


@dataclass(frozen=True)
class Plan:
    text: str                           # the resolved formula (to_text of the checked tree)
    inputs: tuple[tuple[str, int], ...]  # (statistic key, register)
    instrs: tuple[Instr, ...]
    output: Arg                         # a register, or a Const if the formula is a number
    shape: str                          # result shape type: Mat, Row, Col or Scalar
    n_regs: int
    shapes: tuple[str, ...]             # shape type of every register
    frees: tuple[tuple[int, ...], ...]  # per instruction: registers dead after it
    reuse: tuple[int, ...]              # per instruction: arg position to overwrite, or -1

    @property
    def requires(self) -> frozenset[str]:
        return frozenset(k for k, _ in self.inputs)

    def reg_text(self, reg: int) -> str:
        """DSL text of what register ``reg`` holds."""
        for key, r in self.inputs:
            if r == reg:
                return OPERANDS[key].text
        for ins in self.instrs:
            if ins.out == reg:
                return ins.text
        raise KeyError(reg)

    def arg_text(self, arg: Arg) -> str:
        return _fmt_const(arg.value) if isinstance(arg, Const) else self.reg_text(arg)

    def __str__(self) -> str:
        def show(a):
            return _fmt_const(a.value) if isinstance(a, Const) else f"r{a}"
        lines = [f"r{r} = {OPERANDS[k].text}" for k, r in self.inputs]
        for ins, free, ru in zip(self.instrs, self.frees, self.reuse):
            note = f"   # {ins.text}"
            if ru >= 0:
                note += f"  [in place of r{ins.args[ru]}]"
            if free:
                note += f"  [free {', '.join(f'r{f}' for f in free)}]"
            lines.append(f"r{ins.out} = {ins.op}({', '.join(show(a) for a in ins.args)}){note}")
        lines.append(f"return {show(self.output)}  # {self.shape}")
        return "\n".join(lines)


# --- float32 emulation for constant folding ---------------------------------------------
def f32(x: float) -> float:
    """Round a python float to the nearest float32 (overflow → ±inf)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _minimum(a: float, b: float) -> float:  # torch.minimum: NaN wins; the first on a tie
    return math.nan if math.isnan(a) or math.isnan(b) else (a if a <= b else b)


def _maximum(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else (a if a >= b else b)


_FOLD = {
    "neg": lambda a: -a,
    "abs": abs,
    "sq": lambda a: f32(a * a),
    "add": lambda a, b: f32(a + b),
    "sub": lambda a, b: f32(a - b),
    "mul": lambda a, b: f32(a * b),
    "div": lambda a, b: f32(_div(a, b)),
    "minimum": _minimum,
    "maximum": _maximum,
}
# torch.pow special-cases these exponents (one rounding each); others stay instructions.
_FOLD_POW = {0.0: lambda a: 1.0, 1.0: lambda a: a, 2.0: lambda a: f32(a * a),
             -1.0: lambda a: f32(_div(1.0, a))}


def _fmt_const(v: float) -> str:
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return str(int(v)) if v == int(v) and abs(v) < 1e15 and not (v == 0 and math.copysign(1, v) < 0) \
        else repr(v)


def safe_text(e: Expr) -> str:
    """``to_text``, also for trees holding a non-finite number (from a parameter)."""
    try:
        return to_text(e)
    except ValueError:
        return to_text(_name_nonfinite(e))


def _name_nonfinite(e: Expr) -> Expr:
    if isinstance(e, Num) and not math.isfinite(e.value):
        return Name(_fmt_const(e.value))
    if isinstance(e, Neg):
        return replace(e, operand=_name_nonfinite(e.operand))
    if isinstance(e, BinOp):
        return replace(e, left=_name_nonfinite(e.left), right=_name_nonfinite(e.right))
    if isinstance(e, Call):
        return replace(e, args=tuple(_name_nonfinite(a) for a in e.args))
    return e


# --- the builder ------------------------------------------------------------------------
class _Builder:
    def __init__(self):
        self.inputs: dict[str, int] = {}
        self.instrs: list[Instr] = []
        self.shapes: list[str] = []
        self.memo: dict[tuple, int] = {}   # value numbering: (op, arg keys) -> register

    def reg(self, shape: str) -> int:
        self.shapes.append(shape)
        return len(self.shapes) - 1

    def lower(self, e: Expr) -> Arg:
        if e.type is None or isinstance(e, Name):
            raise CompileError(f"cannot compile an unchecked expression ({safe_text(e)}); "
                               "type-check it first (prunedsl.parse or dsl.checker.check)")
        if isinstance(e, Num):
            return Const(f32(e.value))
        if isinstance(e, Operand):
            if e.key not in self.inputs:
                self.inputs[e.key] = self.reg(OPERANDS[e.key].type.shape)
            return self.inputs[e.key]
        if isinstance(e, Neg):
            return self.emit("neg", (self.lower(e.operand),), e)
        if isinstance(e, BinOp):
            if e.op == "^":
                if not isinstance(e.right, Num):
                    raise CompileError(f"exponent of {safe_text(e)} is not a number")
                return self.emit("pow", (self.lower(e.left), Const(float(e.right.value))), e)
            return self.emit(_BINOP[e.op], (self.lower(e.left), self.lower(e.right)), e)
        if isinstance(e, Call):
            args = tuple(self.lower(a) for a in e.args)
            f = e.func
            if f in ("min", "max") and len(args) == 2:
                op = "minimum" if f == "min" else "maximum"
            elif f in ELEMENTWISE or f in AXIS_FUNCTIONS or f in WHOLE or f in NORMALIZERS:
                op = f
            else:
                raise CompileError(f"cannot compile function {f!r} in {safe_text(e)}")
            return self.emit(op, args, e)
        raise CompileError(f"cannot compile {type(e).__name__} node {safe_text(e)}")

    def emit(self, op: str, args: tuple, e: Expr) -> Arg:
        folded = self.fold(op, args)
        if folded is not None:
            return folded
        keys = tuple(("c", a.value.hex()) if isinstance(a, Const) else ("r", a) for a in args)
        if op in COMMUTATIVE:
            keys = tuple(sorted(keys))
        key = (op,) + keys
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        out = self.reg(e.type.shape if e.type is not None else self.shape_of(op, args))
        self.instrs.append(Instr(op, args, out, safe_text(e)))
        self.memo[key] = out
        return out

    def shape_of(self, op, args):  # pragma: no cover - checked trees always carry types
        shapes = [SCALAR if isinstance(a, Const) else self.shapes[a] for a in args]
        return shapes[0] if len(shapes) == 1 else broadcast_shape(*shapes)

    @staticmethod
    def fold(op: str, args: tuple) -> Const | None:
        if not all(isinstance(a, Const) for a in args):
            return None
        values = [a.value for a in args]
        if op == "pow":
            fn = _FOLD_POW.get(values[1])
            result = fn(values[0]) if fn else None
        else:
            fn = _FOLD.get(op)
            result = fn(*values) if fn else None
        if result is None:
            return None
        if not math.isfinite(result) and all(math.isfinite(v) for v in values):
            return None  # keep it as an instruction so a non-finite error can name it
        return Const(result)


def build_plan(expr: Expr) -> Plan:
    """Lower a checked expression (``prunedsl.parse(text).expr``) to a ``Plan``."""
    b = _Builder()
    try:
        output = b.lower(expr)
    except RecursionError:
        raise CompileError("formula is nested too deeply to compile") from None
    instrs = tuple(b.instrs)
    input_regs = set(b.inputs.values())
    last_use: dict[int, int] = {}
    for i, ins in enumerate(instrs):
        for a in ins.args:
            if not isinstance(a, Const):
                last_use[a] = i
    frees: list[list[int]] = [[] for _ in instrs]
    for r, i in last_use.items():
        if r != output:
            frees[i].append(r)
    reuse = []
    for i, ins in enumerate(instrs):
        pos = -1
        if (ins.op in _ELEMENTWISE_OPS or ins.op in ELEMENTWISE) and b.shapes[ins.out] != SCALAR:
            for p, a in enumerate(ins.args):
                if (not isinstance(a, Const) and a not in input_regs and last_use[a] == i
                        and a != output and b.shapes[a] == b.shapes[ins.out]):
                    pos = p
                    break
        reuse.append(pos)
    return Plan(
        text=safe_text(expr),
        inputs=tuple(sorted(b.inputs.items(), key=lambda kv: kv[1])),
        instrs=instrs,
        output=output,
        shape=expr.type.shape,
        n_regs=len(b.shapes),
        shapes=tuple(b.shapes),
        frees=tuple(tuple(sorted(f)) for f in frees),
        reuse=tuple(reuse),
    )


def count_ops(plan: Plan, op: str) -> int:
    return sum(1 for ins in plan.instrs if ins.op == op)


__all__ = ["Plan", "Instr", "Const", "build_plan", "f32", "safe_text"]
