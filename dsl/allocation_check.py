"""The checker of allocation rules (the language: ``dsl/allocation.py``): inlines library
rules, types block-level expressions (``Scalar`` with a sign, as in the metric checker)
and rejects what has no per-block value (a layer's operands, tensor functions, holes).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import replace
from typing import Mapping

from ..errors import DSLNameError, DSLTypeError, Span
from .allocation_eval import (BLOCK_NAMES, SCORE_STATISTICS, STAT_USAGE as _STAT_USAGE, WEIGHT_STATISTICS,
                              scalar_functions)
from .ast import BinOp, Call, Definition, Expr, Hole, Name, Neg, Num, Operand, walk
from .checker import bind_parameters, constant_value, number_type
from .functions import ALL_FUNCTIONS, BINARY, ELEMENTWISE
from .operands import NAMED_OPERANDS, OPERANDS
from .printer import format_number, to_text
from .types import NONNEG, POS, SCALAR, SIGNED, Type, weakest

MAX_INLINE_DEPTH = 16
_SPREAD_USAGE = "spread(importance, lam)"


def check_allocation(d: Definition | Expr, allocations: Mapping[str, Definition],
                     params: Mapping[str, float] | None = None, stack: tuple[str, ...] = ()) -> Expr:
    """The checked body of a rule: ``spread(importance, Num(lam))`` or ``Num(c)``."""
    return _Checker(dict(params or {}), allocations, stack).top(d)


def is_allocation_tree(tree, allocations: Mapping[str, Definition], metrics: Mapping) -> bool:
    """Does a parsed text look like an allocation rule (for ``prunedsl check``)?"""
    if hasattr(tree, "definitions"):
        return any(d.kind == "allocation" for d in tree.definitions)
    head = tree.func if isinstance(tree, Call) else tree.name if isinstance(tree, Name) else None
    if head == "spread" or (head in allocations and head not in metrics):
        return True
    return any((isinstance(n, Name) and n.name in (*BLOCK_NAMES, "score")) or
               (isinstance(n, Call) and (n.func in SCORE_STATISTICS or n.func in WEIGHT_STATISTICS))
               for n in walk(tree))


class _Checker:
    def __init__(self, params: dict, allocations: Mapping[str, Definition], stack: tuple[str, ...]):
        self.params, self.allocations, self.stack = params, allocations, stack

    # --- the top of a rule ------------------------------------------------------------
    def top(self, e: Expr) -> Expr:
        head = e.func if isinstance(e, Call) else e.name if isinstance(e, Name) else None
        if head in self.allocations and head not in self.params and head not in ALL_FUNCTIONS:
            args, kwargs = (e.args, e.kwargs) if isinstance(e, Call) else ((), ())
            return self.inline(self.allocations[head], args, kwargs, e.span)
        if isinstance(e, Call) and e.func == "spread":
            return self.spread(e)
        checked = self.visit(e)
        value = constant_value(checked)
        if value is None:
            raise DSLTypeError("an allocation rule must be spread(importance, lam) or a constant",
                               span=e.span, hint=f"e.g. spread({to_text(e)}, 0.08): higher "
                                                 "importance keeps more weights in a block")
        if not math.isfinite(value):
            raise DSLTypeError("the rule's constant is not a finite number", span=e.span)
        return Num(value, span=e.span, type=number_type(value))  # a constant: uniform

    def spread(self, e: Call) -> Expr:
        if e.kwargs or len(e.args) != 2:
            raise DSLTypeError(f"spread takes two positional arguments: {_SPREAD_USAGE}", span=e.span,
                               hint="lam is the half-width of the sparsity range [S − lam, S + lam]")
        importance = self.visit(e.args[0])
        folded = constant_value(importance)
        if folded is not None and math.isfinite(folded):  # a constant importance: uniform
            importance = Num(folded, span=importance.span, type=number_type(folded))
        lam = constant_value(self.visit(e.args[1]))
        if lam is None:
            raise DSLTypeError("lam in spread(importance, lam) must be a constant", span=e.args[1].span,
                               hint="use a number or a parameter, e.g. spread(skew(score), 0.08)")
        if not (math.isfinite(lam) and 0 <= lam <= 1):
            raise DSLTypeError(f"lam must be a number in [0, 1], got {format_number(lam) if math.isfinite(lam) else lam}",
                               span=e.args[1].span)
        return replace(e, args=(importance, Num(lam, span=e.args[1].span, type=number_type(lam))),
                       kwargs=(), type=Type(SCALAR, NONNEG))

    def inline(self, d: Definition, args, kwargs, span: Span) -> Expr:
        if d.name in self.stack or len(self.stack) >= MAX_INLINE_DEPTH:
            raise DSLTypeError(f"allocation {d.name!r} refers to itself", span=span)
        def value_of(pname: str, arg: Expr) -> float:
            value = constant_value(self.visit(arg))
            if value is None or not math.isfinite(value):
                raise DSLTypeError(f"parameter {pname!r} of {d.name} must be a finite number", span=arg.span)
            return value
        values = bind_parameters(d, args, kwargs, span, value_of)
        try:
            return _Checker(values, self.allocations, self.stack + (d.name,)).top(d.body)
        except (DSLNameError, DSLTypeError) as err:
            if err.source is None and d.source:  # the error is inside a library definition
                err.with_source(d.source)
            raise

    # --- block-level expressions -------------------------------------------------------
    def visit(self, e: Expr) -> Expr:
        if isinstance(e, Num):
            return replace(e, type=number_type(e.value))
        if isinstance(e, Name):
            return self.name(e)
        if isinstance(e, Neg):
            inner = self.visit(e.operand)
            if isinstance(inner, Num):
                return Num(-inner.value, span=e.span, type=number_type(-inner.value))
            return replace(e, operand=inner, type=Type(SCALAR, SIGNED))
        if isinstance(e, BinOp):
            return self.binop(e)
        if isinstance(e, Call):
            return self.call(e)
        if isinstance(e, Hole):
            raise DSLTypeError(f"?{e.kind} is a hole of a search sketch, not a complete formula", span=e.span)
        if isinstance(e, Operand):
            raise DSLTypeError("allocation rules read block statistics, not a layer's operands",
                               span=e.span, hint=f"block statistics: {_STAT_USAGE}")
        raise AssertionError(e)  # pragma: no cover

    def name(self, e: Name) -> Expr:
        if e.name in self.params:
            v = self.params[e.name]
            return Num(v, span=e.span, type=number_type(v))
        if e.name in BLOCK_NAMES:
            return replace(e, type=Type(SCALAR, BLOCK_NAMES[e.name]))
        if e.name == "score":
            raise DSLTypeError("score is the metric's scores of a whole block (a tensor); "
                               "it has no single value", span=e.span,
                               hint="use it inside a block statistic: outlier_ratio(score, M), "
                                    "skew(score), kurtosis(score)")
        operand = NAMED_OPERANDS.get(e.name)
        if operand is not None and OPERANDS[operand].allocation:  # W: a block statistic's argument
            uses = ", ".join(f"{f}({e.name})" for f in WEIGHT_STATISTICS)
            raise DSLTypeError(f"{e.name} (a weight matrix) may only appear in {uses}", span=e.span,
                               hint=f"block statistics: {_STAT_USAGE}")
        if operand is not None or e.name == "X":
            raise DSLTypeError(f"{e.name} is an operand of metrics; allocation rules read block "
                               "statistics", span=e.span, hint=f"block statistics: {_STAT_USAGE}")
        if e.name in self.allocations:
            raise DSLTypeError(f"{e.name} is an allocation rule; it can only be the whole rule",
                               span=e.span)
        if e.name in SCORE_STATISTICS or e.name in WEIGHT_STATISTICS or e.name in scalar_functions():
            raise DSLNameError(f"{e.name} is a function", span=e.span, hint=f"call it: {e.name}(...)")
        known = list(self.params) + list(BLOCK_NAMES) + ["score"]
        close = difflib.get_close_matches(e.name, known, n=3, cutoff=0.5)
        raise DSLNameError(f"unknown name {e.name!r}", span=e.span,
                           hint=(f"did you mean {' or '.join(close)}? " if close else "")
                           + f"(block statistics: {_STAT_USAGE})")

    def binop(self, e: BinOp) -> Expr:
        left, right = self.visit(e.left), self.visit(e.right)
        a, b = left.type.sign, right.type.sign
        if e.op == "^":
            value = constant_value(right)
            if value is None or not math.isfinite(value):
                raise DSLTypeError("the exponent must be a constant", span=e.right.span)
            if value != int(value) and a == SIGNED:
                raise DSLTypeError(f"{to_text(left)} ^ {format_number(value)} of a possibly negative value",
                                   span=e.span, hint=f"did you mean |{to_text(left)}| ^ {format_number(value)}?")
            sign = POS if value == 0 else NONNEG if (value == int(value) and int(value) % 2 == 0 and a == SIGNED) else a
            right = Num(value, span=e.right.span, type=number_type(value))
        elif e.op == "+":
            sign = SIGNED if SIGNED in (a, b) else POS if POS in (a, b) else NONNEG
        elif e.op == "-":
            sign = SIGNED
        else:
            sign = weakest(a, b)
        folded = _fold_zero(e.op, left, right)
        if folded is not None:
            return Num(folded, span=e.span, type=number_type(folded))
        return replace(e, left=left, right=right, type=Type(SCALAR, sign))

    def call(self, e: Call) -> Expr:
        f = e.func
        if f == "spread":
            raise DSLTypeError("spread(importance, lam) must be the whole rule, not part of it",
                               span=e.span, hint="write spread(...) once, around the importance")
        if f in self.allocations and f not in ALL_FUNCTIONS:
            raise DSLTypeError(f"{f} is an allocation rule; it can only be the whole rule", span=e.span)
        if e.kwargs:
            raise DSLTypeError(f"{f}() takes no keyword arguments", span=e.span)
        if f in SCORE_STATISTICS or f in WEIGHT_STATISTICS:
            return self.statistic(e)
        if f not in scalar_functions():
            if f in ALL_FUNCTIONS:
                raise DSLTypeError(f"{f} works on a layer's tensors; allocation rules compute one "
                                   "value per block", span=e.name_span,
                                   hint=f"block statistics: {_STAT_USAGE}; scalar functions: "
                                        + ", ".join(scalar_functions()))
            known = scalar_functions() + sorted(SCORE_STATISTICS) + sorted(WEIGHT_STATISTICS) + ["spread"]
            close = difflib.get_close_matches(f, known, n=3, cutoff=0.6)
            raise DSLNameError(f"unknown function {f!r}", span=e.name_span,
                               hint=f"did you mean {' or '.join(close)}?" if close else
                               f"block statistics: {_STAT_USAGE}")
        want = 2 if f in BINARY else 1
        if len(e.args) != want:
            raise DSLTypeError(f"{f}() on block values takes {want} argument{'s' * (want > 1)}, "
                               f"got {len(e.args)}", span=e.span)
        args = tuple(self.visit(a) for a in e.args)
        signs = [a.type.sign for a in args]
        if f in BINARY:
            return replace(e, args=args, type=Type(SCALAR, BINARY[f](*signs)))
        needs_nonneg, rule = ELEMENTWISE[f]
        if needs_nonneg and signs[0] == SIGNED:
            raise DSLTypeError(f"{f} of a possibly negative value", span=e.span,
                               hint=f"{to_text(args[0])} is signed; did you mean {f}(|{to_text(args[0])}|)?")
        return replace(e, args=args, type=Type(SCALAR, rule(signs[0])))

    def statistic(self, e: Call) -> Expr:
        f = e.func
        operand = "W" if f in WEIGHT_STATISTICS else "score"
        usage = f"{f}(score, M)" if f == "outlier_ratio" else f"{f}({operand})"
        want = 2 if f == "outlier_ratio" else 1
        if len(e.args) != want:
            raise DSLTypeError(f"{f} takes {want} argument{'s' * (want > 1)}: {usage}, got {len(e.args)}",
                               span=e.span)
        first = e.args[0]
        if not (isinstance(first, Name) and first.name == operand):
            raise DSLTypeError(f"{f} is a statistic of the block's {'weights' if operand == 'W' else 'scores'}: "
                               f"{usage}", span=first.span,
                               hint="score is the active metric's scores over the block's linear layers"
                               if operand == "score" else "alpha_hill reads each linear layer's weight W")
        args: tuple[Expr, ...] = (first,)
        if f == "outlier_ratio":
            m = constant_value(self.visit(e.args[1]))
            if m is None or not math.isfinite(m) or m <= 0:
                raise DSLTypeError("M in outlier_ratio(score, M) must be a positive number",
                                   span=e.args[1].span, hint="OWL uses M = 5 (scores above 5 × the mean)")
            args += (Num(m, span=e.args[1].span, type=number_type(m)),)
        t = SCORE_STATISTICS.get(f) or WEIGHT_STATISTICS[f]
        return replace(e, args=args, type=Type(SCALAR, t))


def _fold_zero(op: str, left: Expr, right: Expr) -> float | None:
    """The value of ``0 * x``, ``x * 0``, ``0 / x`` (x typed positive) and ``x ^ 0`` when x
    is not a constant, so that a statistic multiplied away is not required (no needless
    dense pass for ``spread(0 * skew(score), lam)``). Block statistics are finite numbers
    (an infinite or NaN importance is an error anyway), so 0 · x = 0 there; ``0 / x`` folds
    only for x > 0 (0 / 0 stays undefined); x ^ 0 = 1 for every x. Constant-only
    expressions are left to ``constant_value``."""
    lv, rv = constant_value(left), constant_value(right)
    if (lv is None) == (rv is None):
        return None
    if op == "*" and (lv == 0 or rv == 0):
        return 0.0
    if op == "/" and lv == 0 and right.type.sign == POS:
        return 0.0
    if op == "^" and rv == 0:
        return 1.0
    return None
