"""Allocation rules: per-block sparsity written in the language (docs/design.md §3).

    allocation owl(M = 5, lam = 0.08) = spread(outlier_ratio(score, M), lam)

A rule's body is either a constant (``0``: uniform, every block gets the target S) or
``spread(importance, lam)`` at the top, where ``importance`` is a per-block scalar built
from block statistics, numbers, parameters and arithmetic; higher importance keeps more
weights. The runtime (``runtime/allocation.py``) maps importances linearly into
[S − lam, S + lam] and shifts them so the parameter-weighted mean sparsity is S.

Block-level operands and statistics (all per block; the block's value types are
``Scalar`` with a sign, as in the metric checker):

==========================  ======  ==============================================
``outlier_ratio(score, M)``  nonneg  share of the block's scores > M × their mean (OWL)
``skew(score)``              signed  skewness of the block's scores
``kurtosis(score)``          signed  excess kurtosis of the block's scores
``alpha_hill(W)``            pos     mean over the block's linears of the Hill estimate of
                                     the tail exponent of eig(WᵀW) (AlphaPruning)
``depth``                    nonneg  block index / number of blocks
``params``                   pos     weights in the block's linear layers
==========================  ======  ==============================================

``score`` is the active metric's scores over all linear layers of the block, so it may
only appear inside a score statistic; ``W`` only inside ``alpha_hill``. The elementwise
functions (``abs sqrt log ...``, the registry in ``dsl.functions``) and ``min max`` work
on block values.
Requirements are keys such as ``"skew"``, ``"outlier_ratio:5"``, ``"alpha_hill"``.

This module holds the checked rule (``Allocation``) and its printing; the checker is
``dsl/allocation_check.py`` and the block vocabulary with its evaluator
``dsl/allocation_eval.py`` (their public names are re-exported here).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from ..errors import DSLSyntaxError, Span
# re-exported: the public names of the allocation language live here
from .allocation_check import MAX_INLINE_DEPTH, check_allocation, is_allocation_tree  # noqa: F401
from .allocation_eval import (BLOCK_NAMES, SCORE_STATISTICS, WEIGHT_STATISTICS, evaluate,  # noqa: F401
                              is_stat, requirements, scalar_functions, stat_key)
from .ast import BinOp, Call, Definition, Expr, Name, Neg
from .checker import constant_value
from .printer import latex_text, pretty_text, to_text


@dataclass(frozen=True, eq=False)
class Allocation:
    """A checked allocation rule. Build it with ``prunedsl.api.parse_allocation``."""

    source: str                  # the text the user wrote
    body: Expr                   # checked: spread(importance, lam) or a number (uniform)
    name: str | None = None      # library name, if the text named one

    @property
    def importance(self) -> Expr | None:
        """The per-block importance expression; None for a uniform rule."""
        if isinstance(self.body, Call) and constant_value(self.body.args[0]) is None:
            return self.body.args[0]
        return None

    @property
    def lam(self) -> float:
        return self.body.args[1].value if isinstance(self.body, Call) else 0.0

    @property
    def uniform(self) -> bool:
        return self.importance is None or self.lam == 0

    @property
    def requires(self) -> frozenset[str]:
        """Block statistics the runtime must compute (empty for uniform)."""
        return frozenset() if self.uniform else requirements(self.importance)

    @property
    def needs_scores(self) -> bool:
        """True if the rule reads the metric's scores: a dense calibration pass is needed."""
        return any(k.split(":")[0] in SCORE_STATISTICS for k in self.requires)

    def text(self) -> str:
        return to_text(self.body)

    def formula(self) -> str:
        """DSL text of the resolved rule (parameters substituted); parses back to it."""
        return self.text()

    def pretty(self) -> str:
        return pretty_text(_display(self.body, _PRETTY_NAMES))

    def latex(self) -> str:
        return latex_text(_display(self.body, _LATEX_NAMES, _LATEX_CALLS))

    def importances(self, values: Mapping[str, Sequence[float]], blocks: int) -> list[float]:
        """Importance per block from block statistics ``{key: [value per block]}``.

        NaN marks a block where the formula is undefined (log of 0, 0/0, ...)."""
        if self.uniform:
            return [0.0] * blocks
        return [evaluate(self.importance, {k: v[b] for k, v in values.items()}) for b in range(blocks)]

    def __repr__(self) -> str:
        return f"Allocation({self.text()!r})"



# --- printing -----------------------------------------------------------------------------
_PRETTY_NAMES = {"alpha_hill": "α_Hill"}
_LATEX_NAMES = {"score": r"\mathrm{score}", "depth": r"\mathrm{depth}", "params": r"\mathrm{params}"}
# statistics with a symbol of their own: the LaTeX printer would spell any function name
# as \operatorname{...} (escaping "_"), so these calls become atoms printed verbatim
_LATEX_CALLS = {"alpha_hill": r"\alpha_{\mathrm{Hill}}"}


def _display(e: Expr, names: Mapping[str, str], calls: Mapping[str, str] | None = None) -> Expr:
    """A copy of ``e`` with names and function names respelled for a printer; ``calls``
    (LaTeX only) turns ``f(args)`` into the atom ``symbol\\left(args\\right)``."""
    if isinstance(e, Name):
        return replace(e, name=names.get(e.name, e.name))
    if isinstance(e, Neg):
        return replace(e, operand=_display(e.operand, names, calls))
    if isinstance(e, BinOp):
        return replace(e, left=_display(e.left, names, calls), right=_display(e.right, names, calls))
    if isinstance(e, Call):
        args = tuple(_display(a, names, calls) for a in e.args)
        if calls and e.func in calls:
            inner = ", ".join(latex_text(a) for a in args)
            return Name(rf"{calls[e.func]}\left({inner}\right)", span=e.span, type=e.type)
        return replace(e, func=names.get(e.func, e.func), args=args)
    return e


def definition_of(tree) -> Definition | None:
    """The single allocation definition in a parsed program (errors for anything else)."""
    defs = tree.definitions
    if len(defs) != 1 or defs[0].kind != "allocation":
        raise DSLSyntaxError("expected one rule or one 'allocation name = rule' definition",
                             span=Span(0, max(1, defs[0].span.end if defs else 1)))
    return defs[0]


__all__ = ["Allocation", "check_allocation", "is_allocation_tree", "evaluate", "requirements",
           "stat_key", "definition_of", "scalar_functions", "SCORE_STATISTICS", "WEIGHT_STATISTICS",
           "BLOCK_NAMES"]
