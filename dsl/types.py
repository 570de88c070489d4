"""Shape and sign types of metric expressions (docs/design.md §1).

Shapes are relative to the layer's weight W (out × in). Signs form a small lattice
``pos ⊂ nonneg ⊂ signed``; a sign is a *guarantee* about every element.
"""
from __future__ import annotations

from dataclasses import dataclass

MAT, ROW, COL, SCALAR = "Mat", "Row", "Col", "Scalar"
# Struct: one value per coupled structure (an MLP channel, a head, a block) of a structure
# score (docs/structures.md); it never mixes with the per-weight shapes above.
STRUCT = "Struct"
SHAPES = (MAT, ROW, COL, SCALAR, STRUCT)
PER_WEIGHT_SHAPES = (MAT, ROW, COL)
SHAPE_DIMS = {MAT: "out × in", ROW: "out × 1", COL: "1 × in", SCALAR: "1"}  # of metrics

SIGNED, NONNEG, POS = "signed", "nonneg", "pos"
SIGNS = (SIGNED, NONNEG, POS)
_SIGN_RANK = {SIGNED: 0, NONNEG: 1, POS: 2}


@dataclass(frozen=True)
class Type:
    shape: str
    sign: str

    def __post_init__(self):
        assert self.shape in SHAPES and self.sign in SIGNS, (self.shape, self.sign)

    def __str__(self) -> str:
        return f"{self.shape}[{self.sign}]"

    @property
    def nonneg(self) -> bool:
        return self.sign in (NONNEG, POS)

    @property
    def pos(self) -> bool:
        return self.sign == POS


def broadcast_shape(a: str, b: str) -> str | None:
    """Typed broadcasting: Scalar ⊕ T → T, Row ⊕ Col → Mat, Mat ⊕ Row|Col → Mat;
    None where the shapes do not combine (Struct with a per-weight shape)."""
    if a == b:
        return a
    if a == SCALAR:
        return b
    if b == SCALAR:
        return a
    if STRUCT in (a, b):
        return None
    return MAT  # Row⊕Col, Mat⊕Row, Mat⊕Col, and symmetric cases


def weakest(*signs: str) -> str:
    """The strongest sign guaranteed for all of ``signs`` (meet in the lattice)."""
    return min(signs, key=_SIGN_RANK.__getitem__)


def strongest(*signs: str) -> str:
    return max(signs, key=_SIGN_RANK.__getitem__)
