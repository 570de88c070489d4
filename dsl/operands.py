"""The operands a metric can read: one table that the language, the runtime and the search read.

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

Each ``OperandInfo`` says how the operand is spelled (``text`` for the printer, ``ascii``,
and other accepted ``aliases``), its type, its doc line, where the runtime gets its data
(``source``), whether the search proposes it (``searchable``) and whether an allocation
rule may name it (``allocation``). A spelling is a bare name (``W``), a function of the
input (``mean(X)``), ``norm(X)``/``norm(X, p)`` or one of the ``‖X‖`` tokens of
``grammar.lark``; the views below (``NAMED_OPERANDS``, ``X_STATISTICS``, ``X_NORMS``,
``X_NORM_TOKENS``) are derived from the spellings and updated in place by
``register_operand``, so modules that imported them see an operand registered later.

Adding a statistic of the input X: ``register_operand(OperandInfo(..., source=INPUT))``
here (or an entry in ``_BUILTIN``) and its torch code in ``runtime/stats.py``
(``register_statistic``); see docs/extending.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .types import COL, MAT, NONNEG, POS, SCALAR, SIGNED, STRUCT, Type

# Where the runtime gets an operand's data.
LAYER = "layer"        # read off the linear layer itself (W, n_in, n_out)
INPUT = "input"        # a statistic of the layer input X (tokens, in): runtime/stats.py
GRADIENT = "gradient"  # backward passes over the calibration batch (runtime/gradients.py)
GRAM = "gram"          # derived from the Gram matrix XᵀX (runtime/stats.py)
BLOCK = "block"        # a statistic of a whole decoder block (structure scores only)
SOURCES = (LAYER, INPUT, GRADIENT, GRAM, BLOCK)


@dataclass(frozen=True)
class OperandInfo:
    key: str        # statistic name (what the runtime provides)
    text: str       # DSL spelling, as the printer writes it
    ascii: str      # ASCII DSL spelling (also accepted by the parser)
    pretty: str     # Unicode math
    latex: str
    type: Type
    doc: str
    source: str                      # LAYER, INPUT, GRADIENT or GRAM
    aliases: tuple[str, ...] = ()    # other spellings the language accepts
    searchable: bool = True          # the search grammar, mutations and enumerator use it
    allocation: bool = False         # an allocation rule may name it (W: in alpha_hill(W))

    @property
    def spellings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.text, self.ascii, *self.aliases)))


_BUILTIN = (
    OperandInfo("W", "W", "W", "W", "W", Type(MAT, SIGNED), "the weight", LAYER, allocation=True),
    OperandInfo("G", "G", "G", "G", "G", Type(MAT, NONNEG),
                "gradient magnitude: L2 over calibration samples of dloss/dW", GRADIENT),
    OperandInfo("hinv", "hinv", "hinv", "h⁻¹", r"\left[H^{-1}\right]",
                Type(COL, POS), "diag of the damped inverse Gram matrix (SparseGPT)", GRAM),
    OperandInfo("x_norm2", "‖X‖", "norm(X)", "‖X‖", r"\left\|X\right\|",
                Type(COL, NONNEG), "L2 norm of the layer input per input channel", INPUT,
                aliases=("norm(X, 2)", "‖X‖₂")),
    OperandInfo("x_norm1", "‖X‖₁", "norm(X, 1)", "‖X‖₁", r"\left\|X\right\|_1",
                Type(COL, NONNEG), "L1 norm of the layer input per input channel", INPUT),
    OperandInfo("x_norminf", "‖X‖∞", "norm(X, inf)", "‖X‖∞", r"\left\|X\right\|_\infty",
                Type(COL, NONNEG), "max |x| of the layer input per input channel", INPUT),
    OperandInfo("x_mean", "mean(X)", "mean(X)", "mean(X)", r"\operatorname{mean}(X)",
                Type(COL, SIGNED), "mean of the layer input per input channel", INPUT),
    OperandInfo("x_std", "std(X)", "std(X)", "std(X)", r"\operatorname{std}(X)",
                Type(COL, NONNEG), "standard deviation of the layer input per input channel", INPUT),
    OperandInfo("x_var", "var(X)", "var(X)", "var(X)", r"\operatorname{var}(X)",
                Type(COL, NONNEG), "variance of the layer input per input channel", INPUT),
    OperandInfo("n_in", "n_in", "n_in", "n_in", r"n_{\mathrm{in}}", Type(SCALAR, POS),
                "number of input features of the layer", LAYER),
    OperandInfo("n_out", "n_out", "n_out", "n_out", r"n_{\mathrm{out}}", Type(SCALAR, POS),
                "number of output features of the layer", LAYER),
)
# The order the search has always drawn the built-in operands in (its seeded output stays
# the same); operands registered later come after them, in registration order. The table's
# own order (``OPERANDS``) is the printing order of canonical forms (W first).
SEARCH_ORDER = ("W", "G", "x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std", "x_var", "hinv",
                "n_in", "n_out")

# key -> entry, in registration order.
OPERANDS: dict[str, OperandInfo] = {}
# Bare names that denote an operand: name -> key.
NAMED_OPERANDS: dict[str, str] = {}
# Functions of X that denote an input statistic: name -> key (mean(X) -> x_mean).
X_STATISTICS: dict[str, str] = {}
# norm(X), norm(X, 2), norm(X, 1), norm(X, inf): order -> key.
X_NORMS: dict[str, str] = {}
# The ‖X‖ tokens of grammar.lark -> key.
X_NORM_TOKENS: dict[str, str] = {}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_FUNCTION_OF_X = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)\(X\)")
_NORM_OF_X = re.compile(r"norm\(X(?:, (1|2|inf))?\)")
_NORM_TOKEN = re.compile(r"‖X‖(₁|₂|∞)?")  # XNORM in grammar.lark


def _view(spelling: str) -> tuple[dict[str, str], str]:
    """The view a spelling belongs to and its name there; ValueError if the language has
    no such spelling form."""
    if (m := _NORM_OF_X.fullmatch(spelling)):
        return X_NORMS, m.group(1) or "2"
    if (m := _FUNCTION_OF_X.fullmatch(spelling)):
        return X_STATISTICS, m.group(1)
    if _NORM_TOKEN.fullmatch(spelling):
        return X_NORM_TOKENS, spelling
    if _IDENTIFIER.fullmatch(spelling) and spelling != "X":
        return NAMED_OPERANDS, spelling
    raise ValueError(f"operand spelling {spelling!r} is not a name, f(X), norm(X, p) or ‖X‖")


def register_operand(o: OperandInfo) -> None:
    """Add an operand to the language (its data: ``runtime.stats.register_statistic``)."""
    if o.key in OPERANDS:
        raise ValueError(f"operand {o.key!r} already exists")
    if o.source not in SOURCES:
        raise ValueError(f"operand {o.key!r}: source must be one of {SOURCES}, got {o.source!r}")
    places = [(*_view(s), s) for s in o.spellings]  # norm(X) and norm(X, 2) share a place
    for view, name, spelling in places:
        if name in view:
            raise ValueError(f"operand spelling {spelling!r} already means {view[name]!r}")
    OPERANDS[o.key] = o
    for view, name, _ in places:
        view[name] = o.key


def unregister_operand(key: str) -> None:
    """Remove an operand added by ``register_operand`` (tests that add one)."""
    o = OPERANDS.pop(key)
    for spelling in o.spellings:
        view, name = _view(spelling)
        view.pop(name, None)


def search_operands(shape: str | None = None) -> tuple[str, ...]:
    """The searchable operands (of ``shape``, if given) in the search's order."""
    last = len(SEARCH_ORDER)
    keys = sorted(OPERANDS, key=lambda k: SEARCH_ORDER.index(k) if k in SEARCH_ORDER else last)
    return tuple(k for k in keys if OPERANDS[k].searchable
                 and (shape is None or OPERANDS[k].type.shape == shape))


def operands_from(*sources: str) -> frozenset[str]:
    """The keys whose data comes from one of ``sources`` (LAYER, INPUT, GRADIENT, GRAM)."""
    return frozenset(k for k, o in OPERANDS.items() if o.source in sources)


for _o in _BUILTIN:
    register_operand(_o)

# ``block_influence`` (0-d per decoder block: 1 − mean over tokens of cos(x_in, x_out),
# ShortGPT) is a block statistic of structure scores only: it has an entry for its type and
# spellings, but no place in the metric views (``dsl/structure_vocab.py`` names it).
OPERANDS["block_influence"] = OperandInfo(
    "block_influence", "block_influence", "block_influence", "BI", r"\mathrm{BI}", Type(STRUCT, NONNEG),
    "ShortGPT block influence 1 - cos(x_in, x_out) (structure scores, blocks)", BLOCK, searchable=False)
