"""The reference interpreter: the executable specification of what a metric computes.

A plain recursive walk of the checked AST with torch: no common subexpressions, no
constant folding, nothing in place. The compiled code (``plan.py`` + ``torch_exec.py``)
must agree with it on every formula and every input (tests/test_compiler_props.py).

Values are float32 tensors with keepdim shapes: Mat (out, in), Row (out, 1), Col (1, in),
Scalar 0-d or (1, 1). Numbers are 0-d float32 tensors; ``e ^ c`` is ``torch.pow(e, c)``
with the exponent as written. The result of a Scalar metric is 0-d.
"""
from __future__ import annotations

import torch

from ..dsl.ast import BinOp, Call, Expr, Neg, Num, Operand
from ..dsl.functions import ELEMENTWISE_FUNCTIONS
from ..dsl.types import SCALAR
from ..errors import CompileError
from .torch_exec import elementwise_torch

_F32 = torch.float32


def interpret(expr: Expr, stats: dict) -> torch.Tensor:
    """Evaluate a checked expression on ``stats`` (statistic key → tensor or number)."""
    device = next((v.device for v in stats.values() if isinstance(v, torch.Tensor) and v.dim()), None)
    with torch.no_grad():
        out = _eval(expr, stats, device)
    return out.reshape(()) if expr.type.shape == SCALAR else out


def _stat(stats: dict, key: str, device) -> torch.Tensor:
    if key not in stats:
        raise CompileError(f"missing statistic {key!r}")
    v = stats[key]
    if isinstance(v, torch.Tensor):
        return v.to(device=device, dtype=_F32)
    return torch.tensor(float(v), dtype=_F32, device=device)


def _eval(e: Expr, stats: dict, device) -> torch.Tensor:
    if isinstance(e, Num):
        return torch.tensor(e.value, dtype=_F32, device=device)
    if isinstance(e, Operand):
        return _stat(stats, e.key, device)
    if isinstance(e, Neg):
        return -_eval(e.operand, stats, device)
    if isinstance(e, BinOp):
        a = _eval(e.left, stats, device)
        if e.op == "^":
            return torch.pow(a, e.right.value)
        b = _eval(e.right, stats, device)
        if e.op == "+":
            return a + b
        if e.op == "-":
            return a - b
        if e.op == "*":
            return a * b
        if e.op == "/":
            return a / b
    if isinstance(e, Call):
        args = [_eval(a, stats, device) for a in e.args]
        return _call(e.func, args)
    raise CompileError(f"cannot interpret {e!r}")


def _call(f: str, args: list) -> torch.Tensor:
    if len(args) == 2:  # min(a, b), max(a, b): elementwise, NaN-propagating
        return torch.minimum(*args) if f == "min" else torch.maximum(*args)
    (x,) = args
    if f in ELEMENTWISE_FUNCTIONS:
        return elementwise_torch(f)(x)
    if f.startswith(("row_", "col_")):
        axis, reducer = f.split("_", 1)
        return _reduce(reducer, x, 1 if axis == "row" else 0)
    if f in ("sum", "mean", "std", "max", "min", "fro"):
        return _reduce(f, x, None)
    if f == "minmax":
        lo, hi = torch.amin(x), torch.amax(x)
        rng = hi - lo
        return torch.where(rng == 0, torch.zeros_like(x), (x - lo) / rng)
    if f == "zscore":
        mu, sd = torch.mean(x), torch.std(x, correction=0)
        return torch.where(sd == 0, torch.zeros_like(x), (x - mu) / sd)
    raise CompileError(f"unknown function {f!r}")


def _reduce(reducer: str, x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Along ``dim`` (keepdim) or over the whole tensor (``dim=None`` → 0-d)."""
    kw = {} if dim is None else {"dim": dim, "keepdim": True}
    if reducer == "sum":
        return torch.sum(x, **kw)
    if reducer == "mean":
        return torch.mean(x, **kw)
    if reducer == "max":
        return torch.amax(x, **kw)
    if reducer == "min":
        return torch.amin(x, **kw)
    if reducer == "std":
        return torch.std(x, correction=0, **kw)
    if reducer in ("norm", "fro"):
        return torch.linalg.vector_norm(x, **kw)
    raise CompileError(f"unknown reduction {reducer!r}")
