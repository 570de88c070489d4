"""Structure scores in the language (docs/structures.md): parsing, printing, types and carets,
kinds, canonical forms, the library and the CLI. No torch."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from prunedsl import api
from prunedsl.dsl.ast import BinOp, Call, Neg, Num
from prunedsl.dsl.library import library
from prunedsl.dsl.parser import parse_expr
from prunedsl.dsl.printer import latex_text, pretty_text, to_text
from prunedsl.dsl.structure_metric import parse_structure_metric
from prunedsl.errors import DSLSyntaxError, DSLTypeError, PruneDSLError

from strategies import well_typed_exprs

LIBRARY_KINDS = {
    "magnitude_sp": {"channels", "heads", "blocks"},
    "taylor": {"channels", "heads", "blocks"},
    "wanda_sp": {"channels", "heads", "blocks"},
    "flap": {"channels", "heads"},
    "shortgpt": {"blocks"},
    "saap_fusion": {"channels", "heads"},
}
REDUCERS = ("group_sum", "group_max", "producers", "consumers")


@st.composite
def structure_trees(draw, depth: int = 2):
    """Parsed structure scores: reducers of random per-weight metrics, combined."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        arg = draw(well_typed_exprs(max_depth=2, shape=("Mat", "Row", "Col")))
        return Call(draw(st.sampled_from(REDUCERS)), (arg,))
    choice = draw(st.integers(0, 5))
    a = draw(structure_trees(depth - 1))
    if choice == 0:
        return BinOp(draw(st.sampled_from("+-*/")), a, draw(structure_trees(depth - 1)))
    if choice == 1:
        return BinOp(draw(st.sampled_from("*/")), a, Num(draw(st.sampled_from((2.0, 0.5, 3.0)))))
    if choice == 2:
        return Call("stdnorm", (a,))
    if choice == 3:
        return Neg(a)
    if choice == 4:
        return BinOp("^", Call("abs", (a,)), Num(draw(st.sampled_from((2.0, 0.5)))))
    return Call("max", (a, Num(0.0)))


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@settings(max_examples=60, **SETTINGS)
@given(structure_trees())
def test_parse_print_round_trip(tree):
    text = to_text(tree)
    assert parse_expr(text) == tree
    try:
        sm = parse_structure_metric(text)
    except DSLTypeError as err:  # producers + group_max of a signed … are fine; kinds may clash
        assume("no structure kind" not in str(err))
        raise
    assert sm.type.shape == "Struct"
    assert parse_structure_metric(sm.formula()).type.shape == "Struct"  # the simplified text checks
    canonical = sm.canonical()  # "0" where every structure ties (group_sum(G) + group_sum(-G))
    assert canonical == "0" or parse_structure_metric(canonical).canonical() == canonical


@pytest.mark.parametrize("name", sorted(LIBRARY_KINDS))
def test_library_entries_check_with_their_kinds(name):
    sm = parse_structure_metric(name)
    assert sm.name == name and sm.type.shape == "Struct"
    assert sm.kinds == LIBRARY_KINDS[name]
    d = library("structure")[name]
    assert parse_expr(to_text(d.body)) == d.body
    assert d.doc  # a citation line


def test_library_lines_print_in_three_spellings():
    flap = parse_structure_metric("flap")
    assert flap.text() == "consumers(var(X) * W ^ 2)"
    assert flap.pretty() == "consumers(W²·var(X))"
    assert flap.latex() == r"\Sigma_{\mathrm{cons}}\left(W^{2} \operatorname{var}(X)\right)"
    assert parse_structure_metric("shortgpt").pretty() == "BI"
    saap = parse_structure_metric("saap_fusion").expr
    assert to_text(saap) == "stdnorm(group_sum(|W| * G)) + stdnorm(group_sum(|W| * ‖X‖))"
    assert pretty_text(saap) == "stdnorm(group_sum(|W|·G)) + stdnorm(group_sum(|W|·‖X‖))"
    assert latex_text(saap).startswith(r"\operatorname{stdnorm}\left(\Sigma_{\mathrm{group}}")


def test_requires():
    assert parse_structure_metric("taylor").requires == {"W", "G"}
    assert parse_structure_metric("flap").requires == {"W", "x_var"}
    assert parse_structure_metric("shortgpt").requires == {"block_influence"}
    assert parse_structure_metric("block_influence * group_sum(|W|)").requires == {"W", "block_influence"}


def test_definitions_with_parameters():
    sm = parse_structure_metric("structure mix(a = 0.5) = stdnorm(taylor) + a * stdnorm(wanda_sp)")
    assert sm.name == "mix" and sm.kinds == {"channels", "heads"}
    assert "0.5 * stdnorm" in sm.text()
    lib = api.Library(("structure mine = producers(|W|) + 2 * consumers(|W|)",))
    assert parse_structure_metric("mine", library=lib).kinds == {"channels", "heads"}


# --- canonical forms: rank equivalence across the structures of a layer ----------------------------
@pytest.mark.parametrize("a, b", [
    ("taylor", "exp(taylor)"),
    ("taylor", "2 * taylor + 3"),
    ("taylor", "sqrt(taylor)"),
    ("taylor", "group_sum(2 * |W| * G)"),
    ("taylor", "stdnorm(taylor)"),
    ("wanda_sp", "wanda_sp / std(wanda_sp)"),
    ("stdnorm(taylor) + stdnorm(wanda_sp)", "stdnorm(3 * taylor) + stdnorm(wanda_sp / 2)"),
])
def test_monotone_transforms_share_the_canonical_form(a, b):
    assert parse_structure_metric(a).canonical() == parse_structure_metric(b).canonical()


@pytest.mark.parametrize("a, b", [
    ("taylor", "wanda_sp"), ("group_sum(|W|)", "group_max(|W|)"), ("producers(|W|)", "consumers(|W|)"),
    ("group_sum(|W|)", "group_sum(W ^ 2)"), ("stdnorm(taylor) + stdnorm(wanda_sp)", "taylor + wanda_sp"),
])
def test_different_rankings_keep_different_canonical_forms(a, b):
    assert parse_structure_metric(a).canonical() != parse_structure_metric(b).canonical()


def test_global_canonical_keeps_per_layer_normalization():
    assert parse_structure_metric("stdnorm(taylor)").canonical("global") != \
        parse_structure_metric("taylor").canonical("global")


# --- errors, with carets -----------------------------------------------------------------------
@pytest.mark.parametrize("text, message, caret", [
    ("|W| * G", "this formula is Mat", "|W| * G"),
    ("wanda", "this formula is Mat", "wanda"),
    ("group_sum(|W|) + |W|", "cannot combine Struct and Mat", "group_sum(|W|) + |W|"),
    ("group_sum(|W|) * ‖X‖", "cannot combine Struct and Col", "group_sum(|W|) * ‖X‖"),
    ("max(group_sum(|W|), W)", "cannot combine Struct and Mat", "max(group_sum(|W|), W)"),
    ("group_sum(|W|) / n_in", "n_in is a statistic of one layer", "n_in"),
    ("group_sum(|W|) * sum(|W|)", "W is a statistic of one layer", "W"),
    ("group_sum(block_influence)", "takes a per-weight metric", "block_influence"),
    ("group_sum(taylor)", "takes a per-weight metric", "taylor"),
    ("producers(n_in)", "got Scalar", "n_in"),
    ("stdnorm(|W|)", "stdnorm expects a structure score", "stdnorm(|W|)"),
    ("row_sum(taylor)", "row_sum expects Mat or Col, got Struct", "row_sum(taylor)"),
    ("group_sum(|W|, G)", "takes 1 argument", "group_sum(|W|, G)"),
    ("block_influence * producers(|W|)", "valid for no structure kind", "block_influence"),
    ("stdnorm(block_influence)", "valid for no structure kind", "block_influence"),
    ("shortgpt + flap", "valid for no structure kind", "shortgpt"),
    ("3", "this formula is Scalar", "3"),
])
def test_type_errors_point_at_the_mistake(text, message, caret):
    with pytest.raises(DSLTypeError) as info:
        parse_structure_metric(text)
    err = info.value
    assert message in err.message
    assert text[err.span.start:err.span.end] == caret
    assert "^" * len(caret) in str(err)


@pytest.mark.parametrize("text, kind, caret", [
    ("block_influence", "channels", "block_influence"),
    ("shortgpt", "heads", "shortgpt"),
    ("group_sum(|W|) + consumers(|W|)", "blocks", "consumers(|W|)"),
    ("saap_fusion", "blocks", "saap_fusion"),
    ("zscore(taylor)", "blocks", "zscore(taylor)"),
])
def test_kind_errors(text, kind, caret):
    with pytest.raises(DSLTypeError) as info:
        parse_structure_metric(text, kind=kind)
    err = info.value
    assert f"not valid for {kind}" in err.message
    assert text[err.span.start:err.span.end] == caret


def test_valid_kinds_pass_and_unknown_kinds_fail():
    assert parse_structure_metric("flap", kind="channels").name == "flap"
    assert parse_structure_metric("shortgpt", kind="blocks").name == "shortgpt"
    with pytest.raises(DSLTypeError, match="unknown structure kind"):
        parse_structure_metric("flap", kind="rows")


def test_metrics_reject_structure_scores():
    with pytest.raises(DSLTypeError, match="structure score"):
        api.parse("group_sum(|W|)")
    with pytest.raises(DSLTypeError, match="cannot combine Mat and Struct"):
        api.parse("|W| * block_influence")
    with pytest.raises(PruneDSLError):
        api.parse("taylor")  # a structure library name is not a metric


def test_structure_definitions_parse_and_self_reference_fails():
    with pytest.raises(DSLTypeError, match="refers to itself"):
        parse_structure_metric("structure s = s + group_sum(|W|)")
    with pytest.raises(DSLSyntaxError, match="structure name = formula"):
        parse_structure_metric("metric m = |W|")


def test_is_structure():
    for text in ("taylor", "group_sum(|W|)", "block_influence", "structure s = producers(W ^ 2)",
                 "stdnorm(taylor) + 1"):
        assert api.is_structure(text), text
    for text in ("wanda", "|W| * G", "owl", "spread(skew(score), 0.1)", "((("):
        assert not api.is_structure(text), text


# --- CLI ------------------------------------------------------------------------------------------
def _run(capsys, *argv):
    from prunedsl.cli import main
    rc = main(list(argv))
    return rc, capsys.readouterr()


def test_cli_check_structure(capsys):
    rc, out = _run(capsys, "check", "--json", "saap_fusion")
    assert rc == 0
    rec = json.loads(out.out)
    assert rec["kind"] == "structure" and rec["kinds"] == ["channels", "heads"]
    assert rec["requires"] == ["G", "W", "x_norm2"] and rec["group"] == "layer"
    rc, out = _run(capsys, "check", "2 * flap")
    assert rc == 0 and "kinds" in out.out and "consumers(W ^ 2 * var(X))" in out.out


def test_cli_check_structure_error(capsys):
    rc, out = _run(capsys, "check", "group_sum(|W|) / n_in")
    assert rc != 0 and "n_in is a statistic of one layer" in out.err and "^^^^" in out.err


def test_cli_metrics_lists_structures_in_their_own_section(capsys):
    rc, out = _run(capsys, "metrics", "--json")
    rec = json.loads(out.out)
    assert {r["name"] for r in rec["structures"]} == set(LIBRARY_KINDS)
    assert not {r["name"] for r in rec["metrics"]} & set(LIBRARY_KINDS)
    rc, out = _run(capsys, "metrics")
    assert "6 structure scores" in out.out and "| saap_fusion" in out.out
