"""Compile checked metric formulas to torch: ``compile_expr(expr) -> CompiledMetric``.

Parse → plan → execute (like einops): ``plan.build_plan`` turns the checked AST into an
inert, hashable ``Plan`` (SSA, common subexpressions once, constants folded, liveness);
``torch_exec.Executable`` runs it with torch ops; ``interpret.interpret`` is the plain
reference the compiled code is tested against.

    >>> import prunedsl, torch
    >>> m = prunedsl.parse("wanda").compile()
    >>> sorted(m.requires)
    ['W', 'x_norm2']
    >>> m({"W": torch.ones(2, 3), "x_norm2": torch.ones(1, 3)}).shape
    torch.Size([2, 3])

Scores are float32 with the metric's shape: Mat (out, in), Row (out, 1), Col (1, in),
Scalar 0-d. Non-finite scores raise ``NonFiniteScoreError`` naming the layer and the
sub-formula that produced them; with ``on_nonfinite="allow"`` NaN becomes -inf (pruned
first) and ±inf stay as they are. The error carries the scores as computed, NaN included,
as ``error.scores``: for a caller that uses only part of them and checks that part (OBS
reconstruction re-scores a partly pruned weight and uses one block of columns).
"""
from __future__ import annotations

import math

import torch

from ..dsl.ast import Expr, Num, walk
from ..dsl.operands import OPERANDS
from ..dsl.types import MAT, SCALAR
from ..errors import CompileError
from .diagnose import nonfinite_error
from .interpret import interpret
from .plan import Plan, build_plan, safe_text
from .torch_exec import Executable

__all__ = ["compile_expr", "CompiledMetric", "Plan", "build_plan", "interpret", "clear_cache"]

_F32 = torch.float32
_NEG_INF = float("-inf")
_MODES = ("error", "allow")


class CompiledMetric:
    """A metric ready to score layers: ``scores = m(stats, layer="...")``."""

    __slots__ = ("plan", "text", "requires", "shape", "_exe", "_specs", "_ref_keys", "_bare")

    def __init__(self, plan: Plan):
        self.plan = plan
        self.text = plan.text
        self.requires: frozenset[str] = plan.requires   # exactly the statistics used
        self.shape = plan.shape
        self._exe = Executable(plan)
        self._bare = plan.output in {r for _, r in plan.inputs}
        # (key, shape type) in plan.inputs order; W (if given), else a Mat input, fixes (out, in)
        self._specs = tuple((k, OPERANDS[k].type.shape) for k, _ in plan.inputs)
        self._ref_keys = ("W",) + tuple(k for k, s in self._specs if s == MAT and k != "W")

    def __repr__(self) -> str:
        return f"CompiledMetric({self.text!r}, shape={self.shape})"

    def __call__(self, stats, *, layer: str | None = None, on_nonfinite: str = "error") -> torch.Tensor:
        """Scores of one layer. ``stats`` maps statistic keys (``self.requires``) to tensors
        (``n_in``/``n_out`` may be python numbers). Raises ``CompileError`` for missing or
        wrong-shaped statistics and ``NonFiniteScoreError`` for NaN/inf scores unless
        ``on_nonfinite="allow"`` (then NaN → -inf, pruned first; ±inf kept)."""
        if on_nonfinite not in _MODES:
            raise CompileError(f"on_nonfinite must be 'error' or 'allow', got {on_nonfinite!r}")
        with torch.no_grad():
            values, device = self._load(stats, layer)
            out = self._exe.run(values, device)  # run() empties `values`: inputs die early
            if self._bare:  # the formula is a bare statistic: never hand out the input
                out = out.clone()
            if self.shape == SCALAR:
                out = out.reshape(())
            # one cheap pass: the sum is finite iff every score is (or it overflowed)
            if not math.isfinite(out.sum().item()) and not bool(torch.isfinite(out).all()):
                if on_nonfinite == "allow":
                    out.masked_fill_(torch.isnan(out), _NEG_INF)
                else:
                    error = nonfinite_error(self._exe, *self._load(stats, layer), out, layer)
                    error.scores = out  # as computed: a caller may use only a finite part
                    raise error from None
        return out

    # --- inputs -----------------------------------------------------------------------
    def _load(self, stats, layer) -> tuple[list, torch.device | None]:
        """The inputs as float32 tensors in plan order, and their device."""
        where = f" on layer {layer}" if layer else ""
        try:
            raw = [stats[k] for k, _ in self._specs]
        except (KeyError, TypeError):
            missing = [k for k, _ in self._specs if not _has(stats, k)]
            raise CompileError(
                f"missing statistic{'s' * (len(missing) != 1)} {', '.join(missing)}{where} "
                f"for {self.text}",
                hint=f"the metric needs {', '.join(sorted(self.requires))}") from None
        device = None  # of the first tensor statistic; numbers are put there too
        for v in raw:
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                device = v.device
                break
        dims = (None, None)  # (out, in), from W if given, else from the first statistic
        for k in self._ref_keys:
            ref = stats.get(k) if hasattr(stats, "get") else None
            if isinstance(ref, torch.Tensor) and ref.dim() == 2:
                dims = tuple(ref.shape)
                break
        values = []
        for (key, shape), v in zip(self._specs, raw):
            if shape == SCALAR:
                values.append(_scalar(key, v, where, device))
                continue
            if not isinstance(v, torch.Tensor):
                raise CompileError(f"statistic {key}{where} must be a tensor, got {type(v).__name__}")
            want = dims if shape == MAT else (1, dims[1])  # statistics are Mat or Col
            got = tuple(v.shape)
            if len(got) != 2 or any(w is not None and g != w for g, w in zip(got, want)):
                sym = "(out, in)" if shape == MAT else "(1, in)"
                shown = tuple(n if w is None else w for n, w in zip(("out", "in"), want))
                of_w = f" for a layer with W of shape {dims}" if None not in dims else ""
                raise CompileError(f"statistic {key}{where} has shape {got}, expected {sym} = "
                                   f"({', '.join(map(str, shown))}){of_w}")
            dims = got if shape == MAT else (dims[0], got[1])
            values.append(v if v.dtype == _F32 else v.to(_F32))
        return values, device


def _has(stats, key) -> bool:
    try:
        stats[key]
    except (KeyError, TypeError):
        return False
    return True


def _scalar(key: str, v, where: str, device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.dim() > 2:
            raise CompileError(f"statistic {key}{where} must be a number or a 0-d tensor, "
                               f"got shape {tuple(v.shape)}")
        return v.reshape(()).to(device=device, dtype=_F32)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return torch.tensor(float(v), dtype=_F32, device=device)
    raise CompileError(f"statistic {key}{where} must be a number, got {type(v).__name__}")


# --- the cache ---------------------------------------------------------------------------
# Keyed by the exact resolved formula text (to_text of the checked tree), NOT by the
# rank-equivalence canonical form: `sqrt(|W| * ‖X‖)` and `|W| * ‖X‖` rank weights the same
# but have different values (and different NaN/inf behaviour), so they compile separately.
_CACHE: dict = {}
CACHE_SIZE = 65536


def _cache_key(expr: Expr):
    text = safe_text(expr)
    # to_text prints -0.0 as "0" (and non-finite constants by name): add the exact values
    odd = [float(n.value).hex() for n in walk(expr) if isinstance(n, Num) and
           (not math.isfinite(n.value) or (n.value == 0 and math.copysign(1, n.value) < 0))]
    return (text, tuple(odd)) if odd else text


def compile_expr(expr: Expr) -> CompiledMetric:
    """Compile a checked expression (``prunedsl.parse(text).expr``); cached by its text."""
    if getattr(expr, "type", None) is None:
        raise CompileError("cannot compile an unchecked expression; type-check it first "
                           "(prunedsl.parse or dsl.checker.check)")
    key = _cache_key(expr)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    compiled = CompiledMetric(build_plan(expr))
    if len(_CACHE) >= CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))  # oldest first
    _CACHE[key] = compiled
    return compiled


def clear_cache() -> None:
    _CACHE.clear()
