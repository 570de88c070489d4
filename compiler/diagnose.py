"""Why are some scores NaN/inf? Only run on the error path.

Re-runs the plan keeping every register, then walks back from the output along
non-finite values to the first instruction that produced a non-finite value from
finite arguments (or to an input statistic that was non-finite already), and builds a
``NonFiniteScoreError`` naming the layer, that sub-formula, the number of entries and a
hint.
"""
from __future__ import annotations

import torch

from ..errors import NonFiniteScoreError
from .plan import Const, Plan
from .torch_exec import Executable

ALLOW_HINT = ("or call the metric with on_nonfinite='allow' (CLI: --allow-nonfinite) to rank "
              "NaN lowest: NaN scores become -inf and are pruned first")


def describe(t: torch.Tensor) -> tuple[int, str]:
    """(number of non-finite entries, "3 NaN, 2 -inf")."""
    nan = int(torch.isnan(t).sum())
    pinf = int(torch.isposinf(t).sum())
    ninf = int(torch.isneginf(t).sum())
    parts = [f"{n} {name}" for n, name in ((nan, "NaN"), (pinf, "+inf"), (ninf, "-inf")) if n]
    return nan + pinf + ninf, ", ".join(parts)


def _finite(v) -> bool:
    if isinstance(v, Const):
        return v.value == v.value and abs(v.value) != float("inf")
    return bool(torch.isfinite(v).all())


def _paren(text: str) -> str:
    return text if (text.isidentifier() or " " not in text) else f"({text})"


def culprit(plan: Plan, regs: list) -> tuple[str, str, str]:
    """(sub-formula text, what it did, hint) for the first non-finite value on the way to
    the output."""
    producer = {ins.out: ins for ins in plan.instrs}
    inputs = {r: k for k, r in plan.inputs}
    reg = plan.output
    while True:
        if reg in inputs:
            text = plan.reg_text(reg)
            t = regs[reg]
            n, what = describe(t)
            return (text, f"the statistic {text} ({inputs[reg]}) is not finite at {n} of "
                          f"{t.numel()} entries ({what})",
                    "check the calibration statistics (overflow in float16? a dead input channel?)")
        ins = producer[reg]
        bad = [a for a in ins.args if not _finite(a if isinstance(a, Const) else regs[a])]
        if not bad:
            break
        if isinstance(bad[0], Const):
            return (ins.text, f"{ins.text} uses the non-finite constant {bad[0].value}",
                    "check the metric's parameters")
        reg = bad[0]
    t = regs[ins.out]
    n, what = describe(t)
    return (ins.text, f"{ins.text} is not finite at {n} of {t.numel()} entries ({what}) "
                      f"although its arguments are finite", _hint(plan, ins, what))


def _hint(plan: Plan, ins, what: str) -> str:
    arg = [plan.arg_text(a) for a in ins.args]
    if ins.op == "log":
        return (f"log({arg[0]}) is -inf where {arg[0]} == 0: add a small constant, "
                f"log({arg[0]} + 1e-8)")
    if ins.op == "div":
        return (f"{ins.text} is inf or NaN where {arg[1]} == 0: add a small constant to the "
                f"denominator, {_paren(arg[0])} / ({arg[1]} + 1e-8)")
    if ins.op == "pow" and ins.args[1].value < 0:
        return (f"{ins.text} is inf where {arg[0]} == 0: add a small constant, "
                f"({arg[0]} + 1e-8) ^ {arg[1]}")
    if ins.op == "exp":
        return (f"exp overflows float32 where {arg[0]} > 88.7: bound its argument, e.g. "
                f"exp(tanh({arg[0]})), or use sigmoid({arg[0]})")
    if ins.op in ("sqrt", "pow") and "NaN" in what:
        return f"{ins.text} is NaN where {arg[0]} < 0: take |{arg[0]}| first"
    return f"{ins.text} overflows float32 (|x| > 3.4e38): scale it down, or use log or sqrt"


def nonfinite_error(exe: Executable, values: list, device, scores: torch.Tensor,
                    layer: str | None) -> NonFiniteScoreError:
    plan = exe.plan
    n, what = describe(scores)
    with torch.no_grad():
        regs = exe.run_all(values, device) if not exe.const_output else None
    where = f" on layer {layer}" if layer else ""
    if regs is None:
        story, hint = f"the formula is the constant {exe.output}", ALLOW_HINT
    else:
        _, story, hint = culprit(plan, regs)
        hint = f"{hint}; {ALLOW_HINT}"
    return NonFiniteScoreError(
        f"{n} of {scores.numel()} scores of {plan.text}{where} are not finite ({what}); "
        f"it starts where {story}", hint=hint)
