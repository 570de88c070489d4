"""Frozen AST nodes of the metric language.

Parsed trees contain ``Num``, ``Name``, ``Operand``, ``Neg``, ``BinOp`` and ``Call``.
The checker (``dsl.checker``) resolves names, inlines library metrics and substitutes
parameters, and returns a tree of ``Num``/``Operand``/``Neg``/``BinOp``/``Call`` whose
nodes carry their ``type``. Spans and types are ignored by ``==`` and ``hash`` so that
round-trip tests compare structure only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

from ..errors import Span
from .types import Type

NOSPAN = Span(0, 0)


def _span():
    return field(default=NOSPAN, compare=False, repr=False)


def _type():
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Num:
    value: float
    span: Span = _span()
    type: Type | None = _type()


@dataclass(frozen=True)
class Name:
    """An identifier not yet resolved: a parameter, a library metric, or an operand."""

    name: str
    span: Span = _span()
    type: Type | None = _type()


@dataclass(frozen=True)
class Operand:
    """A statistic the runtime provides; ``key`` is one of ``dsl.operands.OPERANDS``."""

    key: str
    span: Span = _span()
    type: Type | None = _type()


@dataclass(frozen=True)
class Hole:
    """A typed hole ``?Mat``/``?Row``/``?Col``/``?Scalar``/``?c`` in a search sketch.

    Holes parse everywhere but only the search's sketch checker accepts them."""

    kind: str
    span: Span = _span()
    type: Type | None = _type()


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span = _span()
    type: Type | None = _type()


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ^
    left: "Expr"
    right: "Expr"
    span: Span = _span()
    type: Type | None = _type()


@dataclass(frozen=True)
class Call:
    """A function call. Before checking ``func`` may also name a library metric."""

    func: str
    args: tuple["Expr", ...] = ()
    kwargs: tuple[tuple[str, "Expr"], ...] = ()
    span: Span = _span()
    type: Type | None = _type()
    name_span: Span = _span()  # span of the function name, for error carets


Expr = Union[Num, Name, Operand, Hole, Neg, BinOp, Call]


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    span: Span = _span()


@dataclass(frozen=True)
class Definition:
    kind: str  # "metric" or "allocation"
    name: str
    params: tuple[Param, ...]
    body: Expr
    doc: str = field(default="", compare=False)
    span: Span = _span()
    source: str = field(default="", compare=False, repr=False)  # the text it was parsed from


@dataclass(frozen=True)
class Program:
    definitions: tuple[Definition, ...]


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Neg):
        return (e.operand,)
    if isinstance(e, BinOp):
        return (e.left, e.right)
    if isinstance(e, Call):
        return e.args + tuple(v for _, v in e.kwargs)
    return ()


def walk(e: Expr) -> Iterator[Expr]:
    """Pre-order traversal."""
    yield e
    for c in children(e):
        yield from walk(c)


def size(e: Expr) -> int:
    """Number of nodes: the complexity measure used by the search."""
    return sum(1 for _ in walk(e))
