"""The vocabulary of structure scores (docs/structures.md): what the checker, the printer,
the sympy layer and the compiler read about the structure-only functions and operands.

A structure score is a formula of shape ``Struct`` (one value per coupled structure: an
MLP channel, an attention head or KV group, a decoder block). It is built from

* **structure reducers**, taking a per-weight metric (``Mat``/``Row``/``Col``, broadcast to
  the member's weight) and reducing it, for each structure, over the entries the structure
  owns in each member layer (a producer's owned rows, a consumer's owned columns, all of a
  "whole" member), then over the members:

  ==============  ================  ===============================================
  name            members           reduction
  ==============  ================  ===============================================
  group_sum(m)    every member      sum
  group_max(m)    every member      max
  producers(m)    producers only    sum (rows of gate/up, q/k/v)
  consumers(m)    consumers only    sum (columns of down, o)
  ==============  ================  ===============================================

* ``stdnorm(s)``: ``s / std(s)``, the standard deviation (population) over the structures
  of one call (one layer's structures); 0 where that is 0 (every structure ties);
* block statistics (``block_influence``: ShortGPT's 1 − mean cos(x_in, x_out) of the block);
* numbers, arithmetic, the elementwise functions, ``min``/``max``, and the whole-tensor
  reductions and normalizers of the metric language over the structures (``std(s)``,
  ``zscore(s)``).

These are deliberately *not* in ``dsl.functions.ALL_FUNCTIONS``/``NAMED_OPERANDS``: the
metric search (its prompt, its grammar-constrained decoding) must not offer them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .types import NONNEG, POS

KINDS = ("channels", "heads", "blocks")
WIDTH_KINDS = frozenset({"channels", "heads"})   # members are producers and consumers
BLOCK_KINDS = frozenset({"blocks"})              # members are "whole", one structure per call
PRODUCER, CONSUMER, WHOLE_MEMBER = "producer", "consumer", "whole"
ROLES = (PRODUCER, CONSUMER, WHOLE_MEMBER)


@dataclass(frozen=True)
class StructReducer:
    name: str
    roles: tuple[str, ...]     # member roles it reads
    reducer: str               # "sum" or "max"
    kinds: frozenset[str]      # structure kinds it is valid for
    latex: str
    doc: str


STRUCT_REDUCERS: dict[str, StructReducer] = {r.name: r for r in (
    StructReducer("group_sum", ROLES, "sum", frozenset(KINDS), r"\Sigma_{\mathrm{group}}",
                  "sum over every member's owned entries (rows of producers, columns of consumers)"),
    StructReducer("group_max", ROLES, "max", frozenset(KINDS), r"\max_{\mathrm{group}}",
                  "max over every member's owned entries"),
    StructReducer("producers", (PRODUCER,), "sum", WIDTH_KINDS, r"\Sigma_{\mathrm{prod}}",
                  "sum over the owned rows of the producers only (gate/up, q/k/v)"),
    StructReducer("consumers", (CONSUMER,), "sum", WIDTH_KINDS, r"\Sigma_{\mathrm{cons}}",
                  "sum over the owned columns of the consumers only (down, o)"),
)}

# Normalizations over the structures of one call; not valid for blocks (one structure a call).
STDNORM = "stdnorm"
STRUCT_NORMALIZERS = {STDNORM: "s / std(s) over the structures of the layer (0 if they all tie)"}
ACROSS_STRUCTURES_KINDS = WIDTH_KINDS

# Block-level statistics: bare name -> runtime key (an entry of dsl.operands.OPERANDS).
BLOCK_OPERANDS = {"block_influence": "block_influence"}

STRUCT_FUNCTIONS = tuple(STRUCT_REDUCERS) + tuple(STRUCT_NORMALIZERS)


def stdnorm_sign(sign: str) -> str:
    return NONNEG if sign == POS else sign  # 0 where every structure ties
