"""Grammar, parser and printer: round trips, spans, and errors with carets."""
import pytest
from hypothesis import given, settings, strategies as st

import prunedsl
from prunedsl.dsl.ast import BinOp, Call, Name, Neg, Num, Operand
from prunedsl.dsl.parser import parse_expr, parse_program
from prunedsl.dsl.printer import to_text
from prunedsl.errors import DSLSyntaxError, PruneDSLError


@pytest.mark.parametrize("text, tree", [
    ("|W| * ‖X‖", BinOp("*", Call("abs", (Name("W"),)), Operand("x_norm2"))),
    ("abs(W) * norm(X)", BinOp("*", Call("abs", (Name("W"),)), Call("norm", (Name("X"),)))),
    ("‖X‖₂ + ‖X‖₁ + ‖X‖∞", BinOp("+", BinOp("+", Operand("x_norm2"), Operand("x_norm1")),
                                   Operand("x_norminf"))),
    ("-W ^ 2", Neg(BinOp("^", Name("W"), Num(2)))),
    ("W ^ -1", BinOp("^", Name("W"), Neg(Num(1)))),
    ("W ** 2 ^ 3", BinOp("^", Name("W"), BinOp("^", Num(2), Num(3)))),
    ("W - W - W", BinOp("-", BinOp("-", Name("W"), Name("W")), Name("W"))),
    ("2·W × 3", BinOp("*", BinOp("*", Num(2), Name("W")), Num(3))),
    ("ria(a = 0.3)", Call("ria", (), (("a", Num(0.3)),))),
    ("|a * |b||", Call("abs", (BinOp("*", Name("a"), Call("abs", (Name("b"),))),))),
    ("1e-3 + .5", BinOp("+", Num(0.001), Num(0.5))),
])
def test_parse_shapes_the_tree(text, tree):
    assert parse_expr(text) == tree


def test_spans_point_into_the_source():
    text = "|W| * sqrt(‖X‖)"
    e = parse_expr(text)
    assert text[e.span.start:e.span.end] == text
    assert text[e.right.span.start:e.right.span.end] == "sqrt(‖X‖)"
    assert text[e.right.name_span.start:e.right.name_span.end] == "sqrt"
    assert text[e.right.args[0].span.start:e.right.args[0].span.end] == "‖X‖"


@pytest.mark.parametrize("text, printed", [
    ("W*(W*W)", "W * (W * W)"),
    ("(W*W)*W", "W * W * W"),
    ("W-(W-W)", "W - (W - W)"),
    ("W/(W/W)", "W / (W / W)"),
    ("(W^2)^3", "(W ^ 2) ^ 3"),
    ("W^2^3", "W ^ 2 ^ 3"),
    ("(-W)^2", "(-W) ^ 2"),
    ("-(W+1)", "-(W + 1)"),
    ("abs(W)", "|W|"),
    ("norm(X, inf)", "norm(X, inf)"),
])
def test_printer_uses_minimal_parentheses(text, printed):
    assert to_text(parse_expr(text)) == printed
    assert parse_expr(printed) == parse_expr(text)


def test_program_definitions_and_docs():
    prog = parse_program("# Wanda: Sun et al.\nmetric wanda = |W| * ‖X‖\n\n"
                         "# RIA\n# second line\nmetric ria(a = 0.5, b = -1) = |W| ^ a\n"
                         "allocation flat = 0\n")
    wanda, ria, flat = prog.definitions
    assert (wanda.kind, wanda.name, wanda.doc) == ("metric", "wanda", "Wanda: Sun et al.")
    assert [(p.name, p.default) for p in ria.params] == [("a", 0.5), ("b", -1.0)]
    assert ria.doc == "RIA second line"
    assert flat.kind == "allocation" and flat.doc == ""


@pytest.mark.parametrize("text, message, caret_col", [
    ("|W| *", "unexpected end of formula", 6),
    ("W +* 2", "unexpected '*'", 4),
    ("W $ 2", "unexpected character '$'", 3),
    ("sqrt(W", "unexpected end of formula", 7),
    ("1e999", "out of range", 1),
])
def test_syntax_errors_show_a_caret(text, message, caret_col):
    with pytest.raises(DSLSyntaxError) as info:
        prunedsl.parse(text)
    rendered = str(info.value)
    assert message in rendered
    source_line, caret_line = rendered.splitlines()[2:4]
    assert source_line.strip() == text
    assert caret_line.index("^") - 4 == caret_col - 1


def test_expected_tokens_are_in_the_users_spelling():
    with pytest.raises(DSLSyntaxError) as info:
        prunedsl.parse("|W| *")
    assert "'('" in info.value.hint and "a number" in info.value.hint
    assert "LPAR" not in str(info.value) and "NUMBER" not in str(info.value)


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(DSLSyntaxError, match="nested"):
        prunedsl.parse("-" * 5000 + "W")


# --- properties ---------------------------------------------------------------------
from strategies import formula_texts, well_typed_exprs  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(well_typed_exprs())
def test_print_parse_round_trip(expr):
    assert parse_expr(to_text(expr)) == expr


@settings(max_examples=300, deadline=None)
@given(well_typed_exprs())
def test_ascii_spelling_checks_to_the_same_metric(expr):
    a = prunedsl.parse(to_text(expr), allow_scalar=True)
    b = prunedsl.parse(to_text(expr, ascii=True), allow_scalar=True)
    assert a.expr == b.expr


_ALPHABET = st.sampled_from(list("W|X‖₁₂∞()+-*/^,.=0123456789 abcdefghijklmnopqrstuvwxyz_·×#\n\t") +
                            ["sqrt", "row_sum", "col_", "norm", "metric ", "ria", "wanda", "inf",
                             "**", "e9", "hinv", "G", "n_in", "mean(X)"])


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_ALPHABET, max_size=25).map("".join)))
def test_no_exception_but_prunedsl_errors_escape_on_random_text(text):
    try:
        prunedsl.parse(text)
    except PruneDSLError as err:
        assert str(err)  # renders


@st.composite
def mutated_formulas(draw):
    text = draw(formula_texts())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(_ALPHABET)
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1:]
        else:
            text = text[:i] + piece + text[i + 1:]
    return text


@settings(max_examples=1500, deadline=None)
@given(mutated_formulas())
def test_no_exception_but_prunedsl_errors_escape_on_mutated_formulas(text):
    try:
        m = prunedsl.parse(text)
    except PruneDSLError as err:
        assert err.message
        if err.span is not None and err.source is not None:
            assert "^" in str(err)
    else:
        assert m.type.shape in ("Mat", "Row", "Col")


def test_a_long_flat_sum_is_not_nesting():
    # 200 terms of one sum are one level of nesting, not 200 (they were rejected as "nested")
    m = prunedsl.parse(" + ".join(f"{i + 1} * |W|" for i in range(200)))
    assert m.type.shape == "Mat"
    with pytest.raises(DSLSyntaxError, match="too many terms") as info:
        prunedsl.parse(" + ".join(["|W|"] * 1000))
    assert "split it into library metrics" in info.value.hint
    with pytest.raises(DSLSyntaxError, match="nested more than 200 levels"):
        prunedsl.parse("sqrt(" * 300 + "|W|" + ")" * 300)
