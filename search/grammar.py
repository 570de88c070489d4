"""The productions the ``evolve`` and ``enumerate`` proposers build formulas from.

Trees are built from the AST nodes of ``dsl.ast`` (``Operand``, ``Num``, ``Neg``,
``BinOp``, ``Call``) and typed by the language's own checker (``dsl.checker.check``), so
what the proposers consider well-typed is exactly what ``prunedsl.parse`` accepts.
Paths address nodes: a tuple of child indices from the root (``ast.children`` order).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Iterator

from ..dsl.ast import BinOp, Call, Expr, Neg, Num, Operand, children
from ..dsl.checker import Env, check
from ..dsl.functions import ELEMENTWISE_FUNCTIONS, searchable_elementwise
from ..dsl.operands import GRADIENT, OPERANDS, search_operands
from ..dsl.types import COL, MAT, ROW, SCALAR, SIGNED
from ..errors import PruneDSLError

ARITH = ("+", "-", "*", "/")
PAIRWISE = ("min", "max")
REDUCERS = ("sum", "mean", "max", "min", "std", "norm")
WHOLE = ("sum", "mean", "std", "max", "min", "fro")
NORMALIZERS = ("minmax", "zscore")
EXPONENTS = (2.0, 0.5, -1.0, 3.0, 0.25, 1.5, -0.5)
CONSTANTS = (1.0, 2.0, 0.5, 0.1, 1e-3, 10.0)


def _default(shape: str):
    """The searchable operands of ``shape`` (those needing gradients only when asked for),
    read from the operand table when a vocabulary is made."""
    return field(default_factory=lambda: tuple(
        k for k in search_operands(shape) if OPERANDS[k].source != GRADIENT))


@dataclass(frozen=True)
class Vocabulary:
    """Which operands a search may use (G only when gradients are collected)."""

    mat: tuple[str, ...] = _default(MAT)
    col: tuple[str, ...] = _default(COL)
    scalar: tuple[str, ...] = _default(SCALAR)

    @classmethod
    def from_available(cls, available) -> "Vocabulary":
        return cls(*(tuple(k for k in search_operands(shape) if k in available)
                     for shape in (MAT, COL, SCALAR)))


def _signed(key: str) -> bool:
    return OPERANDS[key].type.sign == SIGNED


def typecheck(tree: Expr) -> Expr | None:
    """The checked tree, or None if the language rejects it."""
    try:
        return check(tree, Env())
    except PruneDSLError:
        return None


def number(c: float) -> Expr:
    return Num(c) if c >= 0 else Neg(Num(-c))


# --- paths ------------------------------------------------------------------------------
def nodes(e: Expr, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Expr]]:
    """Every (path, node), pre-order."""
    yield path, e
    for i, c in enumerate(children(e)):
        yield from nodes(c, path + (i,))


def get_at(e: Expr, path: tuple[int, ...]) -> Expr:
    for i in path:
        e = children(e)[i]
    return e


def replace_at(e: Expr, path: tuple[int, ...], new: Expr) -> Expr:
    """``e`` with the node at ``path`` replaced by ``new`` (types dropped: re-check it)."""
    if not path:
        return new
    i, rest = path[0], path[1:]
    if isinstance(e, Neg):
        return replace(e, operand=replace_at(e.operand, rest, new), type=None)
    if isinstance(e, BinOp):
        if i == 0:
            return replace(e, left=replace_at(e.left, rest, new), type=None)
        return replace(e, right=replace_at(e.right, rest, new), type=None)
    if isinstance(e, Call):
        args = list(e.args)
        args[i] = replace_at(args[i], rest, new)
        return replace(e, args=tuple(args), type=None)
    raise IndexError(f"no child {i} in {type(e).__name__}")


def is_exponent(e: Expr, path: tuple[int, ...]) -> bool:
    """The node at ``path`` is the constant exponent of a power (not a free subtree)."""
    if not path:
        return False
    parent = get_at(e, path[:-1])
    return isinstance(parent, BinOp) and parent.op == "^" and path[-1] == 1


# --- random typed trees -----------------------------------------------------------------
def pairs(shape: str) -> tuple[tuple[str, str], ...]:
    """(left, right) shapes whose typed broadcast is ``shape``."""
    if shape == MAT:
        return ((MAT, MAT), (MAT, COL), (COL, MAT), (MAT, SCALAR), (SCALAR, MAT), (MAT, ROW),
                (ROW, MAT), (ROW, COL))
    if shape == SCALAR:
        return ((SCALAR, SCALAR),)
    return ((shape, shape), (shape, SCALAR), (SCALAR, shape))


class Grower:
    """Random well-typed subtrees of a given shape (Koza's grow method, typed)."""

    def __init__(self, rng: random.Random, vocab: Vocabulary):
        self.rng, self.vocab = rng, vocab

    def leaf(self, shape: str, nonneg: bool = False) -> Expr:
        r, v = self.rng, self.vocab
        if shape == MAT:
            options = [Operand(k) for k in v.mat if not (nonneg and _signed(k))]
            if "W" in v.mat:
                options += [Call("abs", (Operand("W"),))] * 2  # |W| is the usual building block
            return r.choice(options)
        if shape == COL:
            return Operand(r.choice([k for k in v.col if not (nonneg and _signed(k))]))
        if shape == ROW:
            red = r.choice(REDUCERS)
            return Call(f"row_{red}", (self.leaf(MAT, nonneg=True),))
        if v.scalar and r.random() < 0.25:
            return Operand(r.choice(v.scalar))
        return Num(r.choice(CONSTANTS))

    def grow(self, shape: str, depth: int, nonneg: bool = False) -> Expr:
        """A tree of ``shape`` at most ``depth`` operators deep (typed by ``check`` later)."""
        r = self.rng
        if depth <= 0 or r.random() < 0.3:
            return self.leaf(shape, nonneg)
        kinds = ["unary", "arith", "arith", "pow", "pairwise"]
        if shape in (ROW, COL, SCALAR):
            kinds += ["reduce", "reduce"]
        if not nonneg:
            kinds.append("neg")
        if shape != SCALAR and r.random() < 0.1:
            kinds.append("normalize")
        kind = r.choice(kinds)
        sub = depth - 1
        if kind == "unary":
            f = r.choice(searchable_elementwise())
            return Call(f, (self.grow(shape, sub, nonneg=ELEMENTWISE_FUNCTIONS[f].needs_nonneg),))
        if kind == "neg":
            return Neg(self.grow(shape, sub))
        if kind == "arith":
            a, b = r.choice(pairs(shape))
            op = r.choice(("+", "*", "/") if nonneg else ARITH)
            return BinOp(op, self.grow(a, sub, nonneg), self.grow(b, sub, nonneg))
        if kind == "pow":
            c = r.choice(EXPONENTS)
            return BinOp("^", self.grow(shape, sub, nonneg=c != int(c) or nonneg), number(c))
        if kind == "pairwise":
            a, b = r.choice(pairs(shape))
            return Call(r.choice(PAIRWISE), (self.grow(a, sub, nonneg), self.grow(b, sub, nonneg)))
        if kind == "reduce":
            return self.reduction(shape, sub, nonneg)
        return Call("minmax" if nonneg else r.choice(NORMALIZERS), (self.grow(shape, sub),))

    def reduction(self, shape: str, depth: int, nonneg: bool) -> Expr:
        r = self.rng
        red = r.choice(REDUCERS)
        inner_nonneg = nonneg and red not in ("std", "norm")
        if shape == ROW:
            return Call(f"row_{red}", (self.grow(MAT, depth, inner_nonneg),))
        if shape == COL:
            return Call(f"col_{red}", (self.grow(MAT, depth, inner_nonneg),))
        which = r.randrange(3)  # Scalar: whole-tensor, or an axis reduction of a Col/Row
        if which == 0:
            w = r.choice(WHOLE)
            return Call(w, (self.grow(r.choice((MAT, COL)), depth, nonneg and w not in ("std", "fro")),))
        if which == 1:
            return Call(f"row_{red}", (self.grow(COL, depth, inner_nonneg),))
        return Call(f"col_{red}", (self.grow(ROW, depth, inner_nonneg),))

    def formula(self, depth: int, shape: str = MAT, tries: int = 50) -> Expr | None:
        """A random checked formula of ``shape`` that reads at least one Mat operand."""
        for _ in range(tries):
            tree = typecheck(self.grow(shape, depth))
            if tree is not None and tree.type.shape == shape and reads_weights(tree):
                return tree
        return None


def reads_weights(e: Expr) -> bool:
    """Does ``e`` read a Mat operand (W, G)?"""
    return any(isinstance(n, Operand) and OPERANDS[n.key].type.shape == MAT for _, n in nodes(e))
