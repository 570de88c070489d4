"""The operands a metric can read, and the statistic names shared with the runtime.

``Metric.requires`` is a frozenset of the keys below; the runtime collects exactly
those and passes them to the compiled metric as a ``dict[str, Tensor]`` with these
shapes (relative to the layer's weight ``W`` of shape ``(out, in)``):

==============  ===========  ==================================================
key             shape        meaning
==============  ===========  ==================================================
``W``           (out, in)    the weight (signed)
``G``           (out, in)    L2 over calibration samples of dloss/dW
``hinv``        (1, in)      diag((XᵀX + λ·mean(diag XᵀX)·I)⁻¹), λ = 0.01
``x_norm2``     (1, in)      sqrt(Σ_tokens x²) per input channel  (‖X‖, ‖X‖₂)
``x_norm1``     (1, in)      Σ_tokens |x|                          (‖X‖₁)
``x_norminf``   (1, in)      max_tokens |x|                        (‖X‖∞)
``x_mean``      (1, in)      mean over tokens                      (mean(X))
``x_std``       (1, in)      population std over tokens            (std(X))
``x_var``       (1, in)      population variance over tokens       (var(X))
``n_in``        scalar       in_features  (python float or 0-d tensor)
``n_out``       scalar       out_features
==============  ===========  ==================================================

``block_influence`` (0-d, per decoder block: 1 − mean over tokens of cos(x_in, x_out), ShortGPT)
is a block statistic of structure scores only (``dsl/structure_vocab.py``); its type is Struct.
"""
from __future__ import annotations

from dataclasses import dataclass

from .types import COL, MAT, NONNEG, POS, SCALAR, SIGNED, STRUCT, Type


@dataclass(frozen=True)
class OperandInfo:
    key: str        # statistic name (what the runtime provides)
    text: str       # DSL spelling, as the printer writes it
    ascii: str      # ASCII DSL spelling (also accepted by the parser)
    pretty: str     # Unicode math
    latex: str
    type: Type
    doc: str


OPERANDS: dict[str, OperandInfo] = {o.key: o for o in [
    OperandInfo("W", "W", "W", "W", "W", Type(MAT, SIGNED), "the weight"),
    OperandInfo("G", "G", "G", "G", "G", Type(MAT, NONNEG),
                "gradient magnitude: L2 over calibration samples of dloss/dW"),
    OperandInfo("hinv", "hinv", "hinv", "h⁻¹", r"\left[H^{-1}\right]",
                Type(COL, POS), "diag of the damped inverse Gram matrix (SparseGPT)"),
    OperandInfo("x_norm2", "‖X‖", "norm(X)", "‖X‖", r"\left\|X\right\|",
                Type(COL, NONNEG), "L2 norm of the layer input per input channel"),
    OperandInfo("x_norm1", "‖X‖₁", "norm(X, 1)", "‖X‖₁", r"\left\|X\right\|_1",
                Type(COL, NONNEG), "L1 norm of the layer input per input channel"),
    OperandInfo("x_norminf", "‖X‖∞", "norm(X, inf)", "‖X‖∞", r"\left\|X\right\|_\infty",
                Type(COL, NONNEG), "max |x| of the layer input per input channel"),
    OperandInfo("x_mean", "mean(X)", "mean(X)", "mean(X)", r"\operatorname{mean}(X)",
                Type(COL, SIGNED), "mean of the layer input per input channel"),
    OperandInfo("x_std", "std(X)", "std(X)", "std(X)", r"\operatorname{std}(X)",
                Type(COL, NONNEG), "standard deviation of the layer input per input channel"),
    OperandInfo("x_var", "var(X)", "var(X)", "var(X)", r"\operatorname{var}(X)",
                Type(COL, NONNEG), "variance of the layer input per input channel"),
    OperandInfo("n_in", "n_in", "n_in", "n_in", r"n_{\mathrm{in}}", Type(SCALAR, POS),
                "number of input features of the layer"),
    OperandInfo("n_out", "n_out", "n_out", "n_out", r"n_{\mathrm{out}}", Type(SCALAR, POS),
                "number of output features of the layer"),
    OperandInfo("block_influence", "block_influence", "block_influence", "BI", r"\mathrm{BI}",
                Type(STRUCT, NONNEG), "ShortGPT block influence 1 - cos(x_in, x_out) (structure scores, blocks)"),
]}

# Bare names that denote an operand.
NAMED_OPERANDS = {"W": "W", "G": "G", "hinv": "hinv", "n_in": "n_in", "n_out": "n_out"}
# Functions of X that denote an input statistic: name -> key.
X_STATISTICS = {"mean": "x_mean", "std": "x_std", "var": "x_var"}
# norm(X), norm(X, 2), norm(X, 1), norm(X, inf) -> key.
X_NORMS = {"2": "x_norm2", "1": "x_norm1", "inf": "x_norminf"}
