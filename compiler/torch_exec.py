"""Execute a ``Plan`` with torch ops: a dispatch table op → torch function, and a loop.

``Executable(plan)`` turns the plan into a list of steps once: ``(fn, arg registers, out
register, registers to free)``. Constants live in extra register slots as 0-d float32
tensors on the inputs' device (one register template per device: ``torch.minimum`` does
not accept a CPU scalar tensor next to a CUDA one), except ``pow`` exponents, which are
python floats as in ``torch.pow(x, c)`` (torch itself special-cases 2, 0.5, -1, … with one
rounding). A temporary whose last use is an elementwise op of the same shape receives the
result in place (``out=``); inputs are never written.

Semantics, shared with ``interpret.py`` (the reference): keepdim reductions, ``row_*``
over dim 1 and ``col_*`` over dim 0; population std (correction=0); NaN-propagating
``amax``/``amin``/``minimum``/``maximum``; ``minmax``/``zscore`` are 0 where the tensor
is constant (range or std == 0).
"""
from __future__ import annotations

import functools
import importlib

import torch

from ..dsl.functions import ELEMENTWISE_FUNCTIONS
from .plan import BINARY_OPS, Const, Plan

_F32 = torch.float32

BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "minimum": torch.minimum, "maximum": torch.maximum,
}
assert set(BINARY) == set(BINARY_OPS)


def elementwise_torch(name: str):
    """The torch callable of an elementwise function (``ELEMENTWISE_FUNCTIONS[name].torch``)."""
    return _resolve(ELEMENTWISE_FUNCTIONS[name].torch)


@functools.lru_cache(maxsize=None)
def _resolve(dotted: str):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


_vnorm = torch.linalg.vector_norm


def _axis(dim: int):
    return {
        "sum": lambda x: torch.sum(x, dim, keepdim=True),
        "mean": lambda x: torch.mean(x, dim, keepdim=True),
        "max": lambda x: torch.amax(x, dim, keepdim=True),
        "min": lambda x: torch.amin(x, dim, keepdim=True),
        "std": lambda x: torch.std(x, dim, correction=0, keepdim=True),
        "norm": lambda x: _vnorm(x, 2, dim, keepdim=True),
    }


REDUCE = {**{f"row_{k}": f for k, f in _axis(1).items()},
          **{f"col_{k}": f for k, f in _axis(0).items()},
          "sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin,
          "std": lambda x: torch.std(x, correction=0), "fro": lambda x: _vnorm(x)}


def minmax(x, out=None):
    lo, hi = torch.amin(x), torch.amax(x)
    rng = hi - lo
    r = torch.sub(x, lo, out=out) if out is not None else torch.sub(x, lo)
    r.div_(rng)
    return r.masked_fill_(rng == 0, 0.0)


def zscore(x, out=None):
    mu, sd = torch.mean(x), torch.std(x, correction=0)
    r = torch.sub(x, mu, out=out) if out is not None else torch.sub(x, mu)
    r.div_(sd)
    return r.masked_fill_(sd == 0, 0.0)


NORMALIZE = {"minmax": minmax, "zscore": zscore}


def _pow(c: float, inplace: bool):
    if inplace:
        return lambda x: torch.pow(x, c, out=x)
    return lambda x: torch.pow(x, c)


def _in_place(f, nargs: int, pos: int):
    if nargs == 1:
        return lambda a: f(a, out=a)
    if pos == 0:
        return lambda a, b: f(a, b, out=a)
    return lambda a, b: f(a, b, out=b)


def step_function(op: str, args: tuple, pos: int):
    """The callable for one instruction (``pos``: argument to overwrite, -1 for none)."""
    if op == "pow":
        return _pow(args[1].value, pos == 0)
    if op == "neg" or op in ELEMENTWISE_FUNCTIONS:
        fn = torch.neg if op == "neg" else elementwise_torch(op)
        return _in_place(fn, 1, 0) if pos >= 0 else fn
    if op in BINARY:
        return _in_place(BINARY[op], 2, pos) if pos >= 0 else BINARY[op]
    if op in NORMALIZE:
        return _in_place(NORMALIZE[op], 1, 0) if pos >= 0 else NORMALIZE[op]
    return REDUCE[op]


class Executable:
    """A plan lowered to torch calls. ``run(values)`` takes the input tensors in
    ``plan.inputs`` order (float32, validated by the caller) and returns the result."""

    __slots__ = ("plan", "input_regs", "template", "templates", "steps", "output",
                 "const_output")

    def __init__(self, plan: Plan):
        self.plan = plan
        self.input_regs = tuple(r for _, r in plan.inputs)
        slots: dict[str, int] = {}  # constant (hex) -> register
        template: list = [None] * plan.n_regs

        def slot(a):
            if not isinstance(a, Const):
                return a
            key = a.value.hex()
            if key not in slots:
                slots[key] = len(template)
                template.append(torch.tensor(a.value, dtype=_F32))
            return slots[key]

        steps = []
        for ins, free, pos in zip(plan.instrs, plan.frees, plan.reuse):
            args = ins.args[:1] if ins.op == "pow" else ins.args  # the exponent is baked in
            steps.append((step_function(ins.op, ins.args, pos), tuple(slot(a) for a in args),
                          ins.out, free))
        self.template = template
        self.templates = {torch.device("cpu"): template}  # device -> register template
        self.steps = tuple(steps)
        self.const_output = isinstance(plan.output, Const)
        self.output = plan.output.value if self.const_output else plan.output

    def on(self, device) -> list:
        """The register template with the constants on ``device``."""
        t = self.templates.get(device)
        if t is None:
            t = [v if v is None else v.to(device) for v in self.template]
            self.templates[device] = t
        return t

    def run(self, values: list, device=None) -> torch.Tensor:
        """Consumes ``values`` (the list is emptied, so inputs die at their last use)."""
        if self.const_output:
            return torch.tensor(self.output, dtype=_F32, device=device)
        regs = (self.template if device is None else self.on(device)).copy()
        for r, v in zip(self.input_regs, values):
            regs[r] = v
        values.clear()
        for fn, args, out, free in self.steps:
            regs[out] = fn(*[regs[a] for a in args])
            for f in free:
                regs[f] = None
        return regs[self.output]

    def run_all(self, values, device=None) -> list:
        """Every register's value, out of place and nothing freed (for diagnostics)."""
        regs = (self.template if device is None else self.on(device)).copy()
        for r, v in zip(self.input_regs, values):
            regs[r] = v
        for ins in self.plan.instrs:
            fn = step_function(ins.op, ins.args, -1)
            args = ins.args[:1] if ins.op == "pow" else ins.args
            regs[ins.out] = fn(*[torch.tensor(a.value, dtype=_F32, device=device)
                                 if isinstance(a, Const)
                                 else regs[a] for a in args])
        return regs
