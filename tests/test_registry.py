"""Adding an elementwise function is one registry entry: registered at runtime (and removed
afterwards) it parses, type-checks, prints, simplifies, compiles to what the interpreter
computes, evaluates in allocation rules and is proposed by the search."""
import math
import random

import pytest
import torch

import prunedsl
from prunedsl.api import parse_allocation
from prunedsl.compiler import clear_cache, interpret
from prunedsl.dsl.allocation import evaluate
from prunedsl.dsl.ast import Call, Operand, walk
from prunedsl.dsl.functions import (ALL_FUNCTIONS, ELEMENTWISE, ELEMENTWISE_FUNCTIONS, NONNEG, Elementwise,
                                    register_elementwise, searchable_elementwise, unregister_elementwise)
from prunedsl.errors import DSLNameError
from prunedsl.search.enumerate import EnumerateProposer
from prunedsl.search.grammar import Grower, Vocabulary, typecheck

SOFTPLUS = Elementwise(
    "softplus", needs_nonneg=False, sign=lambda s: NONNEG,
    scalar=lambda v: v if v > 30 else math.log1p(math.exp(v)),
    torch="torch.nn.functional.softplus", sympy=None, doc="log(1 + exp(e))", increasing=True,
    sympy_number=lambda sp, a: sp.log(1 + sp.exp(a)))


@pytest.fixture
def softplus():
    register_elementwise(SOFTPLUS)
    clear_cache()
    try:
        yield
    finally:
        unregister_elementwise("softplus")
        clear_cache()


def _stats(out=6, inn=9):
    g = torch.Generator().manual_seed(0)
    return {"W": torch.randn(out, inn, generator=g), "x_norm2": torch.rand(1, inn, generator=g),
            "n_in": inn, "n_out": out}


def test_a_registered_function_works_in_every_backend(softplus):
    m = prunedsl.parse("softplus(W) * ‖X‖ ^ 0.5")
    assert m.type.sign == NONNEG
    assert m.text() == "softplus(W) * ‖X‖ ^ 0.5"
    assert m.formula() == "softplus(W) * ‖X‖ ^ 0.5"
    assert "softplus" in m.pretty()
    assert r"\operatorname{softplus}" in m.latex()
    # strictly increasing, so canonical forms strip it like exp and sigmoid
    assert prunedsl.parse("softplus(|W| * ‖X‖)").canonical() == prunedsl.parse("|W| * ‖X‖").canonical()
    # on a number sympy gets its value (sympy_number)
    want = prunedsl.parse("log(1 + exp(2)) * |W|").canonical()
    assert prunedsl.parse("softplus(2) * |W|").canonical() == want

    s = _stats()
    got = m.compile()(s)
    want = interpret(m.expr, s)
    assert torch.equal(got, want)
    assert torch.allclose(got, torch.nn.functional.softplus(s["W"]) * s["x_norm2"].sqrt())

    rule = parse_allocation("spread(softplus(depth) - 1, 0.1)")
    assert evaluate(rule.importance, {"depth": 0.0}) == pytest.approx(math.log(2) - 1)


def test_the_search_proposes_a_registered_function(softplus):
    assert "softplus" in searchable_elementwise()
    rng = random.Random(0)
    grower = Grower(rng, Vocabulary(mat=("W",), col=("x_norm2",), scalar=()))
    funcs = {n.func for _ in range(300) for n in walk(typecheck(grower.grow("Mat", 3)))
             if isinstance(n, Call)}
    assert "softplus" in funcs
    # the enumerator builds it (its rank-equivalence to W then drops it, as it drops exp(W))
    enum = EnumerateProposer(vocab=Vocabulary(mat=("W",), col=(), scalar=()), max_size=2)
    enum.propose(1)
    assert Call("softplus", (Operand("W"),)) in [Call(e.func, e.args) for e in enum._build(2)
                                                if isinstance(e, Call)]


def test_removing_a_function_removes_it_from_the_language():
    register_elementwise(SOFTPLUS)
    unregister_elementwise("softplus")
    assert "softplus" not in ALL_FUNCTIONS and "softplus" not in ELEMENTWISE
    assert "softplus" not in ELEMENTWISE_FUNCTIONS and "softplus" not in searchable_elementwise()
    with pytest.raises(DSLNameError):
        prunedsl.parse("softplus(‖X‖)")


def test_registering_an_existing_name_is_refused():
    with pytest.raises(ValueError):
        register_elementwise(ELEMENTWISE_FUNCTIONS["exp"])

