"""Allocation rules in the language: checking, errors with carets, printing, the library."""
import math

import pytest

from prunedsl.api import is_allocation, parse_allocation
from prunedsl.dsl.allocation import evaluate
from prunedsl.dsl.library import Library, builtin_definitions
from prunedsl.errors import DSLNameError, DSLSyntaxError, DSLTypeError


@pytest.mark.parametrize("text, formula, requires, lam", [
    ("uniform", "0", set(), 0.0),
    ("owl", "spread(outlier_ratio(score, 5), 0.08)", {"outlier_ratio:5"}, 0.08),
    ("owl(M = 3, lam = 0.1)", "spread(outlier_ratio(score, 3), 0.1)", {"outlier_ratio:3"}, 0.1),
    ("owl(7)", "spread(outlier_ratio(score, 7), 0.08)", {"outlier_ratio:7"}, 0.08),
    ("alpha", "spread(-alpha_hill(W), 0.2)", {"alpha_hill"}, 0.2),
    ("sdsa(lam = 0.05)", "spread(skew(score), 0.05)", {"skew"}, 0.05),
    ("spread(kurtosis(score) - depth ^ 2, 0.1)", "spread(kurtosis(score) - depth ^ 2, 0.1)",
     {"kurtosis", "depth"}, 0.1),
    ("spread(log(params) * max(skew(score), 0), 0.1)", "spread(log(params) * max(skew(score), 0), 0.1)",
     {"params", "skew"}, 0.1),
    ("allocation mine(k = 2) = spread(k * skew(score) + outlier_ratio(score, k), 0.1)",
     "spread(2 * skew(score) + outlier_ratio(score, 2), 0.1)", {"skew", "outlier_ratio:2"}, 0.1),
    ("allocation tuned = owl(M = 4)", "spread(outlier_ratio(score, 4), 0.08)", {"outlier_ratio:4"}, 0.08),
    ("0", "0", set(), 0.0),
    ("spread(1 + 2, 0.3)", "spread(3, 0.3)", set(), 0.3),  # constant importance: uniform
])
def test_rules_check_and_resolve(text, formula, requires, lam):
    a = parse_allocation(text)
    assert a.formula() == formula and a.requires == requires and a.lam == lam
    assert parse_allocation(a.formula()).formula() == formula  # round trip
    assert a.uniform == (not requires)


def test_names_and_passes():
    assert parse_allocation("owl").name == "owl" and parse_allocation("owl(M=2)").name == "owl"
    assert parse_allocation("allocation x = 0").name == "x"
    assert parse_allocation("spread(depth, 0.1)").name is None
    assert parse_allocation("owl").needs_scores and parse_allocation("sdsa").needs_scores
    assert not parse_allocation("alpha").needs_scores  # weights only: no forward pass
    assert not parse_allocation("spread(depth, 0.1)").needs_scores


@pytest.mark.parametrize("text, error, message, caret", [
    ("skew(score)", DSLTypeError, "must be spread(importance, lam) or a constant", "skew(score)"),
    ("spread(score, 0.1)", DSLTypeError, "score is the metric's scores", "score"),
    ("spread(W * depth, 0.1)", DSLTypeError, "W (a weight matrix) may only appear in alpha_hill", "W"),
    ("spread(skew(W), 0.1)", DSLTypeError, "skew is a statistic of the block's scores", "W"),
    ("spread(alpha_hill(score), 0.1)", DSLTypeError, "alpha_hill is a statistic of the block's weights", "score"),
    ("spread(depth + spread(depth, 0.1), 0.1)", DSLTypeError, "must be the whole rule", "spread(depth, 0.1)"),
    ("spread(depth, depth)", DSLTypeError, "lam in spread(importance, lam) must be a constant", "depth"),
    ("spread(depth, 1.5)", DSLTypeError, "lam must be a number in [0, 1]", "1.5"),
    ("spread(depth)", DSLTypeError, "spread takes two positional arguments", "spread(depth)"),
    ("spread(row_sum(W), 0.1)", DSLTypeError, "row_sum works on a layer's tensors", "row_sum"),
    ("spread(‖X‖ * depth, 0.1)", DSLTypeError, "not a layer's operands", "‖X‖"),
    ("spread(sqrt(skew(score)), 0.1)", DSLTypeError, "sqrt of a possibly negative value", "sqrt(skew(score))"),
    ("spread(outlier_ratio(score, 0), 0.1)", DSLTypeError, "must be a positive number", "0"),
    ("spread(outlier_ratio(score, depth), 0.1)", DSLTypeError, "must be a positive number", "depth"),
    ("spread(outlier_ratio(score), 0.1)", DSLTypeError, "takes 2 arguments", "outlier_ratio(score)"),
    ("spread(dpth, 0.1)", DSLNameError, "unknown name 'dpth'", "dpth"),
    ("spread(skeww(score), 0.1)", DSLNameError, "unknown function 'skeww'", "skeww"),
    ("spread(depth ^ depth, 0.1)", DSLTypeError, "exponent must be a constant", "depth"),
    ("spread(skew(score) ^ 0.5, 0.1)", DSLTypeError, "possibly negative", "skew(score) ^ 0.5"),
    ("owl(N = 3)", DSLTypeError, "owl has no parameter 'N'", "3"),
    ("spread(owl, 0.1)", DSLTypeError, "owl is an allocation rule", "owl"),
    ("allocation a = a", DSLTypeError, "refers to itself", "a"),
    ("spread(depth, 0.1) +", DSLSyntaxError, "unexpected end", None),
    ("metric m = |W|", DSLSyntaxError, "expected one rule", None),
])
def test_errors_name_the_problem_and_point_at_it(text, error, message, caret):
    with pytest.raises(error) as info:
        parse_allocation(text)
    err = info.value
    assert message in err.message and err.source == text
    lines = str(err).splitlines()
    assert "^" in lines[3]
    if caret is not None:
        col = lines[3].index("^")
        assert lines[2][col:col + len(caret)] == caret and lines[3].count("^") == len(caret), str(err)


def test_printing_text_unicode_latex():
    a = parse_allocation("spread(-alpha_hill(W) + sqrt(params) / depth ^ 2, 0.2)")
    assert a.text() == "spread(-alpha_hill(W) + sqrt(params) / depth ^ 2, 0.2)"
    assert a.pretty() == "spread(−α_Hill(W) + √params/depth², 0.2)"
    latex = a.latex()
    assert r"\operatorname{spread}" in latex and r"\frac{\sqrt{\mathrm{params}}}{\mathrm{depth}^{2}}" in latex
    assert parse_allocation("owl").latex() == (r"\operatorname{spread}\left(\operatorname{outlier\_ratio}"
                                               r"\left(\mathrm{score}, 5\right), 0.08\right)")


def test_latex_spells_alpha_hill_as_a_symbol():
    # the Unicode printer writes α_Hill; LaTeX must not fall back to \operatorname{alpha\_hill}
    assert parse_allocation("alpha").latex() == (r"\operatorname{spread}\left(-\alpha_{\mathrm{Hill}}"
                                                 r"\left(W\right), 0.2\right)")
    latex = parse_allocation("spread(sqrt(alpha_hill(W)) / params + alpha_hill(W) ^ 2, 0.1)").latex()
    assert "alpha\\_hill" not in latex and "operatorname{alpha" not in latex
    assert r"\frac{\sqrt{\alpha_{\mathrm{Hill}}\left(W\right)}}{\mathrm{params}}" in latex
    assert r"\alpha_{\mathrm{Hill}}\left(W\right)^{2}" in latex


@pytest.mark.parametrize("text, formula, requires", [
    ("spread(0 * skew(score), 0.1)", "spread(0, 0.1)", set()),  # no needless dense pass
    ("spread(kurtosis(score) * 0 + depth, 0.1)", "spread(0 + depth, 0.1)", {"depth"}),
    ("mine(k = 0)", "spread(0 + depth, 0.1)", {"depth"}),  # a parameter set to 0
    ("spread(0 / params + outlier_ratio(score, 5) * (1 - 1), 0.1)", "spread(0, 0.1)", set()),
    ("spread(skew(score) ^ 0 + depth, 0.1)", "spread(1 + depth, 0.1)", {"depth"}),
    ("0 * skew(score)", "0", set()),  # a constant rule: uniform
    ("spread(0 / depth, 0.1)", "spread(0 / depth, 0.1)", {"depth"}),  # depth may be 0: not folded
])
def test_statistics_multiplied_by_zero_are_not_required(text, formula, requires):
    lib = ("allocation mine(k = 1) = spread(k * skew(score) + depth, 0.1)",)
    a = parse_allocation(text, library=Library(lib))
    assert a.formula() == formula and a.requires == requires
    assert not a.needs_scores and a.uniform == (not requires)


def test_evaluate_per_block_and_nan_where_undefined():
    a = parse_allocation("spread(log(outlier_ratio(score, 5)) + depth / params, 0.1)")
    values = {"outlier_ratio:5": [math.e, 0.0], "depth": [0.5, 0.0], "params": [2.0, 0.0]}
    imp = a.importances(values, 2)
    assert imp[0] == pytest.approx(1.25) and math.isnan(imp[1])  # log(0) + 0/0
    assert math.isnan(evaluate(parse_allocation("spread(depth / depth, 0.1)").importance, {"depth": 0.0}))
    assert evaluate(parse_allocation("spread(log(depth), 0.1)").importance, {"depth": 0.0}) == -math.inf
    assert parse_allocation("spread(depth, 0)").importances({}, 3) == [0.0] * 3  # λ = 0: uniform


def test_detection_for_check():
    for text in ("uniform", "owl(M = 3)", "spread(depth, 0.1)", "allocation a = 0", "skew(score)"):
        assert is_allocation(text), text
    for text in ("wanda", "|W| * ‖X‖", "ria(a = 0.3)", "W +"):
        assert not is_allocation(text), text


def test_library_rules_have_citations_and_check():
    rules = {d.name: d for d in builtin_definitions() if d.kind == "allocation"}
    assert {"uniform", "owl", "alpha", "sdsa"} <= set(rules)
    for name, d in rules.items():
        assert d.doc, f"{name} has no citation comment"
        parse_allocation(name)
    assert "Yin et al." in rules["owl"].doc and "Lu et al." in rules["alpha"].doc
    assert "AutoPrune" in rules["sdsa"].doc


def test_user_library_allocation():
    lib = "# mine\nallocation late(k = 1) = spread(depth * k, 0.1)\n"
    assert parse_allocation("late(k = 2)", library=Library((lib,))).formula() == "spread(depth * 2, 0.1)"
    with pytest.raises(DSLNameError):
        parse_allocation("spread(late, 0.1)")
