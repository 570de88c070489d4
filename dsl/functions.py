"""The built-in functions of the metric language and their typing rules (DESIGN.md §1)."""
from __future__ import annotations

from .types import COL, MAT, NONNEG, POS, ROW, SCALAR, SIGNED, strongest, weakest  # noqa: F401

# Elementwise, type-preserving, one argument: name -> (needs nonneg argument, result sign rule)
#   the rule maps the argument's sign to the result's sign.
ELEMENTWISE = {
    "abs":     (False, lambda s: POS if s == POS else NONNEG),
    "sqrt":    (True,  lambda s: s),
    "log":     (True,  lambda s: SIGNED),
    # exp and sigmoid are positive in exact arithmetic but underflow to 0 in float32
    # (exp(-104) == 0), so they only guarantee nonneg.
    "exp":     (False, lambda s: NONNEG),
    "sigmoid": (False, lambda s: NONNEG),
    "tanh":    (False, lambda s: s),
    "sq":      (False, lambda s: POS if s == POS else NONNEG),
}

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


ALL_FUNCTIONS = sorted(set(ELEMENTWISE) | set(BINARY) | set(AXIS_FUNCTIONS) | set(WHOLE)
                       | set(NORMALIZERS) | {"norm"})

ARITY = {**{f: (1, 1) for f in ELEMENTWISE}, **{f: (2, 2) for f in BINARY},
         **{f: (1, 1) for f in AXIS_FUNCTIONS}, **{f: (1, 1) for f in NORMALIZERS},
         "sum": (1, 1), "mean": (1, 1), "std": (1, 1), "fro": (1, 1), "norm": (1, 2)}
# min and max take 1 (whole-tensor) or 2 (elementwise) arguments.
ARITY["min"] = ARITY["max"] = (1, 2)

DOCS = {
    "abs": "absolute value, also written |e|", "sqrt": "square root (argument must be nonneg)",
    "log": "natural log (argument must be nonneg)", "exp": "exponential",
    "sigmoid": "logistic function", "tanh": "hyperbolic tangent", "sq": "square, e²",
    "min": "min(a, b) elementwise; min(e) over the whole tensor",
    "max": "max(a, b) elementwise; max(e) over the whole tensor",
    "minmax": "(e − min e) / (max e − min e) over the whole tensor (0 if constant)",
    "zscore": "(e − mean e) / std e over the whole tensor (0 if constant)",
    "fro": "Frobenius (L2) norm of the whole tensor",
}
