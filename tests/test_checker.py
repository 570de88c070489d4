"""Type checker: shapes, signs, names, arity, library metrics, and the Metric API."""
import pytest

import prunedsl
from prunedsl.errors import DSLNameError, DSLSyntaxError, DSLTypeError, PruneDSLError


@pytest.mark.parametrize("text, shape, sign", [
    ("W", "Mat", "signed"),
    ("|W|", "Mat", "nonneg"),
    ("|W| * ‖X‖", "Mat", "nonneg"),
    ("W ^ 2", "Mat", "nonneg"),
    ("W ^ 3", "Mat", "signed"),
    ("|W| ^ 0.5 + 1", "Mat", "pos"),
    ("hinv", "Col", "pos"),
    ("row_sum(|W|)", "Row", "nonneg"),
    ("col_mean(W)", "Col", "signed"),
    ("row_sum(‖X‖) * |W|", "Mat", "nonneg"),
    ("row_norm(W)", "Row", "nonneg"),
    ("row_sum(|W|) * ‖X‖", "Mat", "nonneg"),
    ("mean(X)", "Col", "signed"),
    ("std(X) * var(X) * norm(X, 1) * norm(X, inf)", "Col", "nonneg"),
    ("exp(W)", "Mat", "nonneg"),
    ("sigmoid(W) * tanh(|W|)", "Mat", "nonneg"),
    ("log(|W|)", "Mat", "signed"),
    ("minmax(G)", "Mat", "nonneg"),
    ("zscore(|W|)", "Mat", "signed"),
    ("max(W, 0)", "Mat", "nonneg"),
    ("min(W, ‖X‖)", "Mat", "signed"),
    ("|W| / n_in", "Mat", "nonneg"),
    ("W - W", "Mat", "signed"),
    ("-|W|", "Mat", "signed"),
    ("sq(W)", "Mat", "nonneg"),
])
def test_types(text, shape, sign):
    t = prunedsl.parse(text).type
    assert (t.shape, t.sign) == (shape, sign)


@pytest.mark.parametrize("text, error, message, hint", [
    ("sqrt(W)", DSLTypeError, "sqrt of a possibly negative value", "did you mean sqrt(|W|)?"),
    ("log(W * ‖X‖)", DSLTypeError, "log of a possibly negative value", "log(|W * ‖X‖|)"),
    ("W ^ 0.5", DSLTypeError, "possibly negative", "|W| ^ 0.5"),
    ("col_sum(row_sum(W))", None, None, None),
    ("col_sum(hinv)", DSLTypeError, "col_sum expects Mat or Row, got Col", "row_sum"),
    ("row_sum(row_sum(W))", DSLTypeError, "row_sum expects Mat or Col, got Row", None),
    ("W ^ W", DSLTypeError, "exponent must be a constant", None),
    ("row_sum(W, W)", DSLTypeError, "takes 1 argument, got 2", None),
    ("max(W, W, W)", DSLTypeError, "takes 1 or 2 arguments, got 3", None),
    ("Wx", DSLNameError, "unknown name 'Wx'", "W"),
    ("X * W", DSLNameError, "X on its own", "‖X‖"),
    ("sqrtt(|W|)", DSLNameError, "unknown function 'sqrtt'", "did you mean sqrt"),
    ("norm(W)", DSLTypeError, "norm() takes the input X", "row_norm"),
    ("norm(X, 3)", DSLTypeError, "1, 2 or inf", None),
    ("ria(b = 1)", DSLTypeError, "ria has no parameter 'b'", "parameters: a"),
    ("ria(1, 2)", DSLTypeError, "takes 1 parameter", None),
    ("ria(a = W)", DSLTypeError, "must be a number", None),
    ("sum(|W|)", DSLTypeError, "is a Scalar", None),
    ("sqrt", DSLNameError, "is a function", "sqrt(...)"),
])
def test_errors_name_the_problem_and_point_at_it(text, error, message, hint):
    if error is None:
        prunedsl.parse(text, allow_scalar=True)
        return
    with pytest.raises(error) as info:
        prunedsl.parse(text)
    err = info.value
    assert message in err.message
    if hint:
        assert hint in (err.hint or "")
    assert err.source == text and "^" in str(err)


def test_caret_is_under_the_offending_call():
    with pytest.raises(DSLTypeError) as info:
        prunedsl.parse("|W| * sqrt(W)")
    lines = str(info.value).splitlines()
    assert lines[2].strip() == "|W| * sqrt(W)"
    assert lines[3].strip() == "^^^^^^^" and lines[3].index("^") == lines[2].index("sqrt")


def test_library_metrics_inline_with_parameters():
    ria = prunedsl.parse("ria(a = 0.3)")
    assert ria.name == "ria"
    assert ria.text() == "(|W| / col_sum(|W|) + |W| / row_sum(|W|)) * ‖X‖ ^ 0.3"
    assert prunedsl.parse("ria(0.3)").text() == ria.text()
    assert prunedsl.parse("ria").text().endswith("‖X‖ ^ 0.5")
    assert prunedsl.parse("2 * wanda").text() == "2 * (|W| * ‖X‖)"


def test_a_single_definition_is_a_metric():
    m = prunedsl.parse("metric mine(b = 2) = |W| ^ b * wanda")
    assert m.name == "mine" and m.text() == "|W| ^ 2 * (|W| * ‖X‖)"


def test_user_library_texts_add_definitions():
    from prunedsl.dsl.library import Library
    lib = "# mine\nmetric boost(k = 2) = |W| * ‖X‖ ^ k\n"
    assert prunedsl.parse("boost(k = 3)", library=Library((lib,))).text() == "|W| * ‖X‖ ^ 3"
    with pytest.raises(DSLNameError):
        prunedsl.parse("boost")


def test_self_reference_is_an_error():
    from prunedsl.dsl.library import Library
    with pytest.raises(DSLTypeError, match="refers to itself"):
        prunedsl.parse("loop", library=Library(("metric loop = |W| * loop",)))


def test_requires_lists_exactly_the_statistics_used():
    assert prunedsl.parse("magnitude").requires == {"W"}
    assert prunedsl.parse("wanda").requires == {"W", "x_norm2"}
    assert prunedsl.parse("|W| * std(X) / hinv + G").requires == {"W", "x_std", "hinv", "G"}


def test_definitions_are_not_formulas_for_the_expression_parser():
    with pytest.raises(DSLSyntaxError):
        prunedsl.parse("metric a = W\nmetric b = W")


def test_library_file_parses_and_every_metric_checks():
    from prunedsl.dsl.library import builtin_definitions
    names = {d.name for d in builtin_definitions() if d.kind == "metric"}
    assert {"magnitude", "wanda", "ria"} <= names
    for d in builtin_definitions():
        if d.kind == "metric":
            assert d.doc, f"{d.name} has no citation comment"
            assert prunedsl.parse(d.name).type.shape in ("Mat", "Row", "Col")


# --- constants are float32, as the scores are ---------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("|W| * 1e308", "out of range"),
    ("|W| * 1e-999", "underflows to 0 in float32"),
    ("|W| * 1e308 * 1e308", "out of range"),
    ("|W| * 1e30 * 1e30", r"constant factor of this product \(1e\+60\) overflows in float32"),
    ("1e-30 * |W| / 1e30", r"\(1e-60\) underflows to 0 in float32"),
])
def test_constants_that_float32_cannot_hold_are_rejected_with_a_caret(text, message):
    with pytest.raises(PruneDSLError, match=message) as info:
        prunedsl.parse(text)
    assert info.value.span is not None and "^" in info.value.render()


def test_constants_within_float32_pass():
    for text in ("|W| * 1e30 / 1e30", "|W| * 3e38", "|W| * 2e-45", "0 * |W| + |W|", "|W| * 0.0e5"):
        prunedsl.parse(text)
