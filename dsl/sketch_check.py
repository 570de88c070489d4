"""Type checking of sketches: formulas with typed holes (``?Mat ?Row ?Col ?Scalar ?c``).

``check_sketch`` types a sketch with the checker's own rules (a subclass of
``dsl.checker._Checker``) and a hole typed as its shape with sign ``pos``, the most
permissive sign: a sketch type-checks when *some* filling of its holes could
(``sqrt(?Mat)`` is fine, ``sqrt(W)`` is not). Used by the search's GCoT graph
(``dsl/sketch.py``) and by the server's reply check (``serve/replies.py``).
"""
from __future__ import annotations

from dataclasses import replace

from .ast import BinOp, Expr, Hole, walk
from .checker import Env, _Checker
from .library import BUILTIN, Library
from .parser import parse_expr
from .types import COL, MAT, NONNEG, POS, ROW, SCALAR, Type
from ..errors import DSLTypeError, PruneDSLError

# Hole kind (as written after "?") -> shape of the expressions that may fill it.
HOLE_SHAPES = {"Mat": MAT, "Row": ROW, "Col": COL, "Scalar": SCALAR, "c": SCALAR}


def has_holes(e: Expr) -> bool:
    return any(isinstance(n, Hole) for n in walk(e))


def holes(e: Expr) -> list[Hole]:
    return [n for n in walk(e) if isinstance(n, Hole)]


class _SketchChecker(_Checker):
    """The checker's rules, plus typed holes."""

    def visit_Hole(self, e: Hole) -> Expr:
        return replace(e, type=Type(HOLE_SHAPES[e.kind], POS))

    def power(self, e: BinOp, base: Expr, exponent: Expr) -> Expr:
        if not has_holes(exponent):
            return super().power(e, base, exponent)
        if isinstance(exponent, Hole) and exponent.kind == "c":
            # some number works for any base (an even integer for a signed one)
            sign = base.type.sign if base.type.nonneg else NONNEG
            return replace(e, left=base, right=exponent, type=Type(base.type.shape, sign))
        raise DSLTypeError("the exponent must be a constant", span=e.right.span,
                           hint="leave the exponent open as ?c (it may be negative), e.g. ‖X‖ ^ ?c")

    def inline(self, d, args, kwargs, span):
        for a in list(args) + [v for _, v in kwargs]:
            if has_holes(a):
                raise DSLTypeError(f"the parameters of {d.name} must be numbers, not holes",
                                   span=a.span, hint=f"write the formula of {d.name} out to leave "
                                                     "a hole in it")
        return super().inline(d, args, kwargs, span)


def check_sketch(expr: Expr, source: str | None = None, library: Library = BUILTIN) -> Expr:
    """The resolved, typed tree of a sketch (holes keep their place and get a type)."""
    try:
        return _SketchChecker(Env(metrics=library.of_kind("metric"))).visit(expr)
    except PruneDSLError as err:
        raise (err.with_source(source) if source is not None else err) from None


def parse_sketch(text: str, library: Library = BUILTIN) -> Expr:
    """Text (untrusted; only lark reads it) -> resolved typed sketch. Raises PruneDSLError."""
    return check_sketch(parse_expr(text), text, library)
