"""Compile a checked structure score to ``score_fn(members, block) -> (n_struct,)``.

    >>> from prunedsl.api import parse_structure_metric
    >>> fn = parse_structure_metric("taylor").compile()
    >>> scores = fn(members, block={})          # members: compiler.structure_exec.Member

Each reducer's per-weight metric is compiled once by the metric compiler
(``compile_expr``) and run on every member's statistics, broadcast to the member's
weight (a Row or Col metric scores every weight of its row or column), and reduced over
each structure's owned entries (``structure_exec.reduce_member``), summed (max'ed) over
the members the reducer reads. The structure-level formula around the reducers is turned
into nested closures once. ``structure_interpret.interpret_structure`` is the reference
(a loop over structures) the compiled form is tested against.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..dsl.ast import BinOp, Call, Expr, Neg, Num, Operand, walk
from ..dsl.printer import to_text
from ..dsl.structure_vocab import STDNORM, STRUCT_REDUCERS
from ..dsl.types import STRUCT
from ..errors import CompileError, NonFiniteScoreError
from . import compile_expr
from .interpret import _call as call_on_tensors
from .structure_exec import Member, check_members, reduce_member

_F32 = torch.float32
Context = dict  # reducer key -> (n,) tensor, plus "block" -> the block statistics


class CompiledStructure:
    """A structure score ready to run: ``scores = fn(members, block)``."""

    def __init__(self, expr: Expr):
        if getattr(expr, "type", None) is None or expr.type.shape != STRUCT:
            raise CompileError("compile_structure takes a checked structure score (type Struct)")
        self.text = to_text(expr)
        # one compiled metric per distinct (reducer, metric text): saap's two criteria share nothing,
        # taylor + group_max(|W| * G) share the metric's compilation
        self.reducers: dict[str, tuple[str, object]] = {}
        for node in walk(expr):
            if isinstance(node, Call) and node.func in STRUCT_REDUCERS:
                self.reducers.setdefault(reducer_key(node), (node.func, compile_expr(node.args[0])))
        self.block_keys = block_keys(expr)
        self._run = _closure(expr)

    def __repr__(self) -> str:
        return f"CompiledStructure({self.text!r})"

    def __call__(self, members: Sequence[Member], block: Mapping[str, torch.Tensor] | None = None, *,
                 on_nonfinite: str = "error") -> torch.Tensor:
        if on_nonfinite not in ("error", "allow"):
            raise CompileError(f"on_nonfinite must be 'error' or 'allow', got {on_nonfinite!r}")
        n = check_members(members) if self.reducers else 1
        ctx: Context = {"block": _block_values(block or {}, self.block_keys), "device": _device(members)}
        with torch.no_grad():
            for key, (func, metric) in self.reducers.items():
                ctx[key] = reduce_members(func, metric, members, on_nonfinite)
            out = self._run(ctx).to(_F32).expand(n).contiguous()
        nan = torch.isnan(out)
        if nan.any():
            if on_nonfinite == "allow":
                return out.masked_fill_(nan, float("-inf"))  # as metrics do: NaN ranks lowest
            raise NonFiniteScoreError(f"structure score {self.text} is NaN for {int(nan.sum())} of {n} "
                                      f"structures (members: {', '.join(m.name for m in members)})",
                                      hint="0/0 or inf - inf in the structure-level formula; call with "
                                           "on_nonfinite='allow' to rank NaN lowest")
        return out


def compile_structure(expr: Expr) -> CompiledStructure:
    """Compile a checked structure score (``parse_structure_metric(text).expr``)."""
    return CompiledStructure(expr)


def block_keys(expr: Expr) -> frozenset[str]:
    """The block statistics a structure score reads: operands outside the reducers."""
    out, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Operand):
            out.add(e.key)
        elif isinstance(e, Call) and e.func not in STRUCT_REDUCERS:
            stack.extend(e.args)
        elif isinstance(e, BinOp):
            stack.extend((e.left, e.right))
        elif isinstance(e, Neg):
            stack.append(e.operand)
    return frozenset(out)


def reducer_key(node: Call) -> str:
    return f"{node.func}({to_text(node.args[0])})"


def reduce_members(func: str, metric, members: Sequence[Member], on_nonfinite: str) -> torch.Tensor:
    """The reducer ``func`` of the compiled per-weight ``metric`` over ``members``: (n,)."""
    spec = STRUCT_REDUCERS[func]
    used = [m for m in members if m.role in spec.roles]
    if not used:
        raise CompileError(f"{func}(…) reads {' and '.join(spec.roles)} members, but the structure has only "
                           f"{', '.join(sorted({m.role for m in members}))} members",
                           hint=f"{func} is valid for {', '.join(sorted(spec.kinds))}")
    total = None
    for m in used:
        scores = metric(m.stats, layer=m.name, on_nonfinite=on_nonfinite)
        part = reduce_member(per_weight(scores, m), m, spec.reducer)
        total = part if total is None else (total + part if spec.reducer == "sum" else torch.maximum(total, part))
    return total


def per_weight(scores: torch.Tensor, member: Member) -> torch.Tensor:
    """Scores broadcast to the member's weight (out, in): a Row/Col metric scores every weight."""
    w = member.stats.get("W") if hasattr(member.stats, "get") else None
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise CompileError(f"member {member.name} has no weight W (out, in) in its statistics")
    return scores.expand(tuple(w.shape))


def _device(members: Sequence[Member]):
    for m in members:
        w = m.stats.get("W") if hasattr(m.stats, "get") else None
        if isinstance(w, torch.Tensor):
            return w.device
    return None


def _block_values(block, keys) -> dict:
    out = {}
    for k in keys:
        if k not in block:
            raise CompileError(f"missing block statistic {k}", hint="the runtime computes what the formula's "
                                                                    "requires names")
        v = block[k]
        t = v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
        if t.numel() != 1:
            raise CompileError(f"block statistic {k} must be one number per block, got shape {tuple(t.shape)}")
        out[k] = t.reshape(1).to(_F32)
    return out


# --- the structure-level formula as closures ---------------------------------------------------
def _closure(e: Expr) -> Callable[[Context], torch.Tensor]:
    if isinstance(e, Num):
        value = e.value
        return lambda ctx: torch.tensor(value, dtype=_F32, device=ctx["device"])
    if isinstance(e, Operand):
        key = e.key
        return lambda ctx: ctx["block"][key].to(ctx["device"])
    if isinstance(e, Neg):
        inner = _closure(e.operand)
        return lambda ctx: -inner(ctx)
    if isinstance(e, BinOp):
        left = _closure(e.left)
        if e.op == "^":
            k = e.right.value
            return lambda ctx: torch.pow(left(ctx), k)
        right = _closure(e.right)
        op = {"+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.div}[e.op]
        return lambda ctx: op(left(ctx), right(ctx))
    if isinstance(e, Call):
        if e.func in STRUCT_REDUCERS:
            key = reducer_key(e)
            return lambda ctx: ctx[key]
        args = [_closure(a) for a in e.args]
        if e.func == STDNORM:
            return lambda ctx: stdnorm(args[0](ctx))
        f = e.func
        return lambda ctx: call_on_tensors(f, [a(ctx) for a in args])
    raise CompileError(f"cannot compile {type(e).__name__} in a structure score")


def stdnorm(s: torch.Tensor) -> torch.Tensor:
    """s / std(s) (population) over the structures; 0 where std is 0 (every structure ties)."""
    sd = torch.std(s, correction=0)
    return torch.where(sd == 0, torch.zeros_like(s), s / sd)


__all__ = ["compile_structure", "CompiledStructure", "Member", "reduce_members", "stdnorm"]
