"""The printed views every checked formula offers (metrics, structure scores): DSL text as
resolved, and the simplified formula as text, Unicode math and LaTeX."""
from __future__ import annotations

from . import symbolic
from .ast import Expr
from .printer import to_text


class FormulaViews:
    """Mixin for a checked formula holding its resolved, typed tree in ``expr``."""

    expr: Expr

    def text(self) -> str:
        """The resolved formula as DSL text, without simplification (what is compiled)."""
        return to_text(self.expr)

    def formula(self) -> str:
        """Simplified formula as DSL text (parses back to an equivalent formula)."""
        return symbolic.formula(self.expr)

    def pretty(self) -> str:
        """Simplified formula in Unicode math."""
        return symbolic.pretty(self.expr)

    def latex(self) -> str:
        return symbolic.latex(self.expr)
