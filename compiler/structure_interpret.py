"""The reference for structure scores: what ``compile_structure`` must compute, written
as plainly as possible (a loop over structures and members, the metric reference
interpreter for the per-weight scores, no gathers, nothing cached).
tests/test_structure_exec.py checks compiled = interpreted on random members.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..dsl.ast import BinOp, Call, Expr, Neg, Num, Operand, walk
from ..dsl.structure_vocab import CONSUMER, PRODUCER, STDNORM, STRUCT_REDUCERS
from ..errors import CompileError
from .interpret import _call as call_on_tensors
from .interpret import interpret
from .structure_exec import Member, check_members

_F32 = torch.float32


def interpret_structure(expr: Expr, members: Sequence[Member], block: Mapping | None = None) -> torch.Tensor:
    """Scores (n_struct,) of a checked structure score on ``members`` and ``block``."""
    uses_members = any(isinstance(n, Call) and n.func in STRUCT_REDUCERS for n in walk(expr))
    n = check_members(members) if uses_members else 1
    with torch.no_grad():
        out = _eval(expr, members, block or {}, n)
    return out.to(_F32).expand(n).clone()


def _eval(e: Expr, members, block, n: int) -> torch.Tensor:
    if isinstance(e, Num):
        return torch.tensor(e.value, dtype=_F32)
    if isinstance(e, Operand):
        if e.key not in block:
            raise CompileError(f"missing block statistic {e.key}")
        return torch.as_tensor(block[e.key], dtype=_F32).reshape(1)
    if isinstance(e, Neg):
        return -_eval(e.operand, members, block, n)
    if isinstance(e, BinOp):
        a = _eval(e.left, members, block, n)
        if e.op == "^":
            return torch.pow(a, e.right.value)
        b = _eval(e.right, members, block, n)
        return {"+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.div}[e.op](a, b)
    if isinstance(e, Call):
        if e.func in STRUCT_REDUCERS:
            return _reduce(e, members, n)
        args = [_eval(a, members, block, n) for a in e.args]
        if e.func == STDNORM:
            s = args[0]
            sd = torch.sqrt(torch.mean((s - torch.mean(s)) ** 2))
            return torch.zeros_like(s) if float(sd) == 0 else s / sd
        return call_on_tensors(e.func, args)
    raise CompileError(f"cannot interpret {type(e).__name__} in a structure score")


def _reduce(e: Call, members, n: int) -> torch.Tensor:
    spec = STRUCT_REDUCERS[e.func]
    used = [m for m in members if m.role in spec.roles]
    if not used:
        raise CompileError(f"{e.func}(…) has no {' or '.join(spec.roles)} members")
    out = []
    for s in range(n):
        values = []  # every owned entry of structure s, across the members
        for m in used:
            w = m.stats["W"]
            scores = interpret(e.args[0], dict(m.stats)).expand(tuple(w.shape))
            if m.role == PRODUCER:
                values += [scores[int(r), :] for r in m.index[s]]
            elif m.role == CONSUMER:
                values += [scores[:, int(c)] for c in m.index[s]]
            else:
                values.append(scores.reshape(-1))
        flat = torch.cat([v.reshape(-1) for v in values]).to(torch.float64)
        out.append(flat.sum() if spec.reducer == "sum" else flat.max())
    return torch.stack(out).to(_F32)
