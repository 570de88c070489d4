"""The built-in functions of the metric language: one registry that every backend reads.

Where an addition goes (see also docs/extending.md):

* **An elementwise function** (one argument, type-preserving in shape): one
  ``register_elementwise(Elementwise(...))`` call, here in ``_BUILTIN`` for a built-in.
  The entry holds everything a backend needs: the typing rule (``needs_nonneg`` and the
  argument-sign → result-sign ``sign`` rule), ``increasing`` (canonical forms strip
  strictly increasing outer functions), the scalar reference math (``scalar``, used by the
  allocation evaluator), the torch implementation as a dotted name (``torch``, resolved
  by the compiler and the interpreter only, so ``dsl/`` never imports torch), the sympy
  constructor (``sympy``: a sympy attribute name, a callable, or ``None`` for an opaque
  function class made by the symbolic layer, with ``sympy_number`` its value on a number),
  the LaTeX name, the doc line and ``searchable`` (whether the search proposes it). The
  checker, the compiler's plan and torch executor, the interpreter, the sympy conversion
  both ways, canonical forms, the allocation evaluator, the search grammar and the
  enumerator all read this table; nothing else needs editing.
* **A statistic (operand)**: one entry in ``dsl/operands.py`` (spellings, type, data source,
  searchable) and, for data computed from the layer input, its torch code in
  ``runtime/stats.py``; everything else (parser, checker, printers, search vocabulary,
  runtime statistic names) is derived. Block statistics of allocation rules live in
  ``dsl/allocation_eval.py``.
* **A reduction** (``row_*``/``col_*``/whole-tensor) or **a normalizer**: ``REDUCERS``,
  ``WHOLE`` or ``NORMALIZERS`` below, plus its torch code in ``compiler/torch_exec.py`` and
  ``compiler/interpret.py`` (reductions have per-axis semantics, not one callable).
* **An operator** (``+ - * / ^``): the grammar (``grammar.lark``), the parser, and each
  backend; these are the language's syntax, not table entries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

from .types import COL, MAT, NONNEG, POS, ROW, SCALAR, SIGNED, strongest, weakest  # noqa: F401


@dataclass(frozen=True)
class Elementwise:
    """One elementwise, type-preserving, one-argument function (see the module docstring)."""
    name: str
    needs_nonneg: bool                     # the checker rejects a signed argument
    sign: Callable[[str], str]             # argument sign → result sign
    scalar: Callable[[float], float]       # reference math on one Python float
    torch: str                             # dotted name of the torch callable
    sympy: Union[str, Callable, None]      # sympy attribute name, constructor, or None (opaque)
    doc: str
    increasing: bool = False               # strictly increasing: canonical forms strip it
    sympy_number: Optional[Callable] = None  # (sympy module, number) → value, for opaque ones
    latex: Optional[str] = None            # LaTeX name; default \operatorname{name}
    searchable: bool = True                # the search grammar and enumerator propose it


def _nonneg_unless_pos(s: str) -> str:
    return POS if s == POS else NONNEG


def _log(v: float) -> float:
    return math.log(v) if v > 0 else -math.inf


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v)) if v > -700 else 0.0


_BUILTIN = (
    Elementwise("abs", False, _nonneg_unless_pos, abs, "torch.abs", "Abs",
                "absolute value, also written |e|"),
    Elementwise("sqrt", True, lambda s: s, math.sqrt, "torch.sqrt", "sqrt",
                "square root (argument must be nonneg)"),
    Elementwise("log", True, lambda s: SIGNED, _log, "torch.log", "log",
                "natural log (argument must be nonneg)", increasing=True, latex=r"\log"),
    # exp and sigmoid are positive in exact arithmetic but underflow to 0 in float32
    # (exp(-104) == 0), so they only guarantee nonneg.
    Elementwise("exp", False, lambda s: NONNEG, math.exp, "torch.exp", "exp",
                "exponential", increasing=True),
    Elementwise("sigmoid", False, lambda s: NONNEG, _sigmoid, "torch.sigmoid", None,
                "logistic function", increasing=True,
                sympy_number=lambda sp, a: 1 / (1 + sp.exp(-a)), latex=r"\sigma"),
    Elementwise("tanh", False, lambda s: s, math.tanh, "torch.tanh", "tanh",
                "hyperbolic tangent", increasing=True, latex=r"\tanh"),
    Elementwise("sq", False, _nonneg_unless_pos, lambda v: v * v, "torch.square",
                lambda a: a ** 2, "square, e²"),
)

# name -> entry, in registration order (the search draws from it in this order).
ELEMENTWISE_FUNCTIONS: dict[str, Elementwise] = {}
# name -> (needs nonneg argument, result sign rule): the checker's view of the same table.
ELEMENTWISE: dict[str, tuple] = {}

# Elementwise, two arguments (broadcasting like arithmetic).
BINARY = {
    "min": lambda a, b: weakest(a, b),
    "max": lambda a, b: strongest(a, b),  # max(a, b) ≥ a and ≥ b
}

# Reductions along an axis. row_* reduce over the input dim (Mat → Row, Col → Scalar);
# col_* over the output dim (Mat → Col, Row → Scalar).
REDUCERS = ("sum", "mean", "max", "min", "std", "norm")
AXIS_RESULT = {
    "row": {MAT: ROW, COL: SCALAR},
    "col": {MAT: COL, ROW: SCALAR},
}
AXIS_FUNCTIONS = {f"{axis}_{r}": (axis, r) for axis in ("row", "col") for r in REDUCERS}

# Whole-tensor reductions → Scalar.
WHOLE = {"sum": "sum", "mean": "mean", "std": "std", "max": "max", "min": "min", "fro": "norm"}

# Whole-tensor normalizations, type-preserving in shape.
NORMALIZERS = {"minmax": NONNEG, "zscore": SIGNED}


def reduction_sign(reducer: str, sign: str) -> str:
    """Sign of a reduction's result given its operand's sign."""
    if reducer in ("std", "norm"):
        return NONNEG
    return sign  # sum/mean/max/min of pos is pos, of nonneg nonneg


# The views below are updated in place by register_elementwise, so modules that imported
# them see a function registered later.
ALL_FUNCTIONS = sorted(set(BINARY) | set(AXIS_FUNCTIONS) | set(WHOLE) | set(NORMALIZERS) | {"norm"})

ARITY: dict[str, tuple[int, int]] = {}
DOCS: dict[str, str] = {}

def register_elementwise(f: Elementwise) -> None:
    """Add an elementwise function to the language and to every backend."""
    if f.name in ALL_FUNCTIONS:
        raise ValueError(f"function {f.name!r} already exists")
    ELEMENTWISE_FUNCTIONS[f.name] = f
    ELEMENTWISE[f.name] = (f.needs_nonneg, f.sign)
    ALL_FUNCTIONS.append(f.name)
    ALL_FUNCTIONS.sort()
    ARITY[f.name] = (1, 1)
    DOCS[f.name] = f.doc


def unregister_elementwise(name: str) -> None:
    """Remove a function added by ``register_elementwise`` (tests that add one)."""
    del ELEMENTWISE_FUNCTIONS[name], ELEMENTWISE[name], ARITY[name], DOCS[name]
    ALL_FUNCTIONS.remove(name)


def searchable_elementwise() -> tuple[str, ...]:
    """The elementwise functions the search proposes, in registration order."""
    return tuple(n for n, f in ELEMENTWISE_FUNCTIONS.items() if f.searchable)


for _f in _BUILTIN:
    register_elementwise(_f)
ARITY.update({**{f: (2, 2) for f in BINARY},
              **{f: (1, 1) for f in AXIS_FUNCTIONS}, **{f: (1, 1) for f in NORMALIZERS},
              "sum": (1, 1), "mean": (1, 1), "std": (1, 1), "fro": (1, 1), "norm": (1, 2)})
# min and max take 1 (whole-tensor) or 2 (elementwise) arguments.
ARITY["min"] = ARITY["max"] = (1, 2)
DOCS.update({
    "min": "min(a, b) elementwise; min(e) over the whole tensor",
    "max": "max(a, b) elementwise; max(e) over the whole tensor",
    "minmax": "(e − min e) / (max e − min e) over the whole tensor (0 if constant)",
    "zscore": "(e − mean e) / std e over the whole tensor (0 if constant)",
    "fro": "Frobenius (L2) norm of the whole tensor",
})
