"""The three spellings of an expression (DSL text, Unicode, LaTeX) group it the same way.

Trees here include what only sympy's output builds: negative number literals, -0 among
them, which parsed text never contains (the parser reads -2 as Neg(Num(2))).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from prunedsl.dsl.ast import BinOp, Call, Neg, Num, Operand, walk
from prunedsl.dsl.parser import parse_expr
from prunedsl.dsl.printer import latex_text, pretty_text, to_text

_NUMBERS = (0.0, -0.0, 1.0, 2.0, 0.5, -1.0, -2.0, -0.5, 3.0)
_leaves = st.one_of(st.sampled_from(_NUMBERS).map(Num),
                    st.sampled_from(("W", "x_norm2", "hinv", "G")).map(Operand))


def _grow(children):
    return st.one_of(
        st.builds(BinOp, st.sampled_from("+-*/^"), children, children),
        children.map(Neg),
        st.builds(lambda f, a: Call(f, (a,)), st.sampled_from(("abs", "sqrt", "exp", "log")), children),
    )


expressions = st.recursive(_leaves, _grow, max_leaves=8)


def _power_base_wrapped(power: BinOp) -> tuple[bool, bool, bool]:
    """Whether each spelling parenthesizes the base of ``power``."""
    return (to_text(power).startswith("("), pretty_text(power).startswith("("),
            latex_text(power).startswith(r"\left("))


@settings(max_examples=300, deadline=None)
@given(expressions)
def test_a_power_base_the_dsl_text_parenthesizes_is_parenthesized_in_every_spelling(expr):
    # Unicode and LaTeX may add parentheses (√x², \frac), never drop one the text needs.
    for node in walk(expr):
        if isinstance(node, BinOp) and node.op == "^":
            dsl, unicode, latex = _power_base_wrapped(node)
            assert not dsl or (unicode and latex), (to_text(node), pretty_text(node), latex_text(node))


@settings(max_examples=300, deadline=None)
@given(expressions)
def test_dsl_text_round_trips_through_the_parser(expr):
    text = to_text(expr)
    assert to_text(parse_expr(text)) == text


@pytest.mark.parametrize("base, dsl, unicode, latex", [
    (-0.0, "(-0) ^ 2", "(−0)²", r"\left(-0\right)^{2}"),
    (-1.0, "(-1) ^ 2", "(−1)²", r"\left(-1\right)^{2}"),
    (0.0, "0 ^ 2", "0²", "0^{2}"),
])
def test_negative_zero_binds_like_any_negative_literal(base, dsl, unicode, latex):
    # (-0) ^ 2 is 0; printed as -0 ^ 2 it would read -(0 ^ 2), which is -0.
    power = BinOp("^", Num(base), Num(2.0))
    assert (to_text(power), pretty_text(power), latex_text(power)) == (dsl, unicode, latex)
