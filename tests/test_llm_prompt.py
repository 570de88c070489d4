"""The prompt pieces shared by the search and the server (``llm_prompt``): both prompts say
the same about the language, and what they list is what the language accepts."""
from __future__ import annotations

import math
import re

import pytest

import prunedsl
from prunedsl.dsl.functions import (ALL_FUNCTIONS, ELEMENTWISE_FUNCTIONS, NONNEG, Elementwise,
                                    register_elementwise, unregister_elementwise)
from prunedsl.dsl.operands import OPERANDS
from prunedsl.llm_prompt import (OPERATOR_USAGES, ROLE, SKETCH_HOLES, function_usages,
                                 language_summary)
from prunedsl.search.gcot import Graph
from prunedsl.search.prompt import build_messages
from prunedsl.serve.prompts import system_prompt


def _search_system() -> str:
    return build_messages(Graph(), [], 3)[0]["content"]


def test_search_and_server_prompts_carry_the_same_summary():
    summary = language_summary()
    assert summary.count("\n") > 10  # the whole summary, not an empty string matching anywhere
    for text in (_search_system(), system_prompt("formula"), system_prompt("reply")):
        assert ROLE in text and summary in text
    assert SKETCH_HOLES in _search_system() and SKETCH_HOLES in system_prompt("reply")
    assert "?Mat" not in system_prompt("formula")  # one-formula answers have no holes


def _fill(usage: str) -> str:
    """A usage with its placeholders filled by operands of fitting sign."""
    usage = re.sub(r"\be\b", "|W|", usage)
    return re.sub(r"\bb\b", "G", re.sub(r"\ba\b", "W", usage))


def test_every_listed_function_and_operator_parses_and_is_listed():
    summary = language_summary()
    usages = [u for group in function_usages().values() for u in group]
    assert {u.split("(")[0] for u in usages} == set(ALL_FUNCTIONS) - {"norm"}  # norm(X) is an operand
    for usage in usages:
        assert re.search(rf"\b{re.escape(usage.split('(')[0])}\b", summary), usage
        metric = prunedsl.parse(f"|W| * ({_fill(usage)})")  # Row, Col or Scalar broadcast to Mat
        assert metric.type.shape == "Mat"
    for usage, _ in OPERATOR_USAGES:
        assert usage in summary
        prunedsl.parse(_fill(usage))
    for o in OPERANDS.values():
        if o.source == "block":  # structure scores only (docs/structures.md): not offered for metrics
            assert o.text not in summary
            continue
        assert f"  {o.text}" in summary
        prunedsl.parse(f"|W| * ({o.text})")


SOFTPLUS = Elementwise("softplus", needs_nonneg=False, sign=lambda s: NONNEG,
                       scalar=lambda v: math.log1p(math.exp(min(v, 30.0))), torch="torch.nn.functional.softplus",
                       sympy=None, doc="log(1 + exp(e))", increasing=True,
                       sympy_number=lambda sp, a: sp.log(1 + sp.exp(a)))


def test_a_registered_function_appears_in_both_prompts():
    assert "softplus" not in language_summary()
    register_elementwise(SOFTPLUS)
    try:
        assert "softplus(e)" in function_usages()["elementwise"]
        for text in (language_summary(), _search_system(), system_prompt("formula")):
            assert "softplus" in text
    finally:
        unregister_elementwise("softplus")
    assert "softplus" not in language_summary() and "softplus" not in system_prompt("formula")
    assert list(ELEMENTWISE_FUNCTIONS)[-1] != "softplus"


def test_the_sign_rule_names_the_functions_that_need_a_nonnegative_argument():
    line = next(ln for ln in language_summary().splitlines() if ln.startswith("Signs:"))
    needs = [n for n, f in ELEMENTWISE_FUNCTIONS.items() if f.needs_nonneg]
    assert needs and all(n in line for n in needs)
    assert "exp" not in line


@pytest.mark.parametrize("shape", ["Mat", "Row"])
def test_the_summary_names_the_shape_a_metric_must_have(shape):
    assert f"The metric must be a {shape}" in language_summary(shape)
