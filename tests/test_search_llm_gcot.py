"""GCoT without an endpoint: sketch typing, the refinement relation, the graph, the prompt."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from prunedsl import parse
from prunedsl.dsl.ast import Hole, Num, children
from prunedsl.dsl.functions import ALL_FUNCTIONS
from prunedsl.dsl.library import library
from prunedsl.dsl.operands import OPERANDS
from prunedsl.dsl.printer import to_text
from prunedsl.errors import DSLTypeError, PruneDSLError
from prunedsl.llm_contract import MAX_LINES, split_reply
from prunedsl.search.gcot import Graph
from prunedsl.search.prompt import Feedback, build_messages, language_summary, render_graph
from prunedsl.dsl.sketch import (HOLE_SHAPES, NotARefinement, is_refinement, match, parse_sketch,
                                    refinement, replace_at, substitute)
from strategies import checked_exprs


# --- sketches -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(HOLE_SHAPES))
def test_every_hole_kind_parses_and_types(kind):
    e = parse_sketch(f"?{kind}")
    assert isinstance(e, Hole) and e.kind == kind and e.type.shape == HOLE_SHAPES[kind]
    with pytest.raises(PruneDSLError):
        parse(f"?{kind}")  # complete formulas never contain holes


@pytest.mark.parametrize("text, shape", [
    ("?Mat * ?Col", "Mat"), ("sqrt(?Mat)", "Mat"), ("W ^ ?c", "Mat"), ("sqrt(W ^ ?c)", "Mat"),
    ("?Row + ?Col", "Mat"), ("row_sum(?Mat)", "Row"), ("wanda * ?Scalar", "Mat"),
    ("-?c * W", "Mat"), ("|W| / (col_sum(|W|) + ?c)", "Mat"),
])
def test_sketches_that_type_check(text, shape):
    assert parse_sketch(text).type.shape == shape


@pytest.mark.parametrize("text, says", [
    ("sqrt(W) * ?Col", "sqrt of a possibly negative value"),
    ("W ^ ?Scalar", "exponent must be a constant"),
    ("ria(a = ?c)", "must be numbers, not holes"),
    ("col_sum(?Row) * ?Mat + ?Row * row_sum(?Col)", None),  # fine: Scalar*Mat + Row*Scalar
    ("col_sum(?Col)", "col_sum expects"),
])
def test_sketch_type_errors_have_carets(text, says):
    if says is None:
        parse_sketch(text)
        return
    with pytest.raises(DSLTypeError) as err:
        parse_sketch(text)
    assert says in str(err.value) and "^" in str(err.value) and text in str(err.value)


def test_refinement_fills_and_spelling_is_normalized():
    a = parse_sketch("?Mat * ?Col")
    for text in ("|W| * ‖X‖", "abs(W) * norm(X)", "wanda"):  # one metric, three spellings
        fills = refinement(a, parse_sketch(text))
        assert [f.text() for f in fills] == ["?Mat := |W|", "?Col := ‖X‖"]
    one = refinement(a, parse_sketch("|W| * ?Col"))
    assert [f.text() for f in one] == ["?Mat := |W|"]
    assert is_refinement(a, parse_sketch("|W| * ?Col"), one_step=True)
    assert not is_refinement(a, parse_sketch("|W| * ‖X‖"), one_step=True)
    assert is_refinement(a, parse_sketch("|W| * ‖X‖"))
    assert refinement(a, a) is None                                   # nothing filled
    fills, why = match(a, parse_sketch("|W| / ‖X‖"))                  # changes outside holes
    assert fills is None and "only holes may change" in why
    fills, why = match(a, parse_sketch("W * row_sum(|W|)"))           # a Row in a Col hole
    assert fills is None and "?Col cannot hold" in why
    fills, why = match(parse_sketch("?c * W"), parse_sketch("n_in * W"))
    assert fills is None and "a number" in why                        # ?c takes numbers only
    assert [f.text() for f in refinement(parse_sketch("-?c * W"), parse_sketch("-2 * W"))] == ["?c := 2"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(checked_exprs(max_depth=3), st.data())
def test_punching_a_hole_gives_a_sketch_the_formula_refines_in_one_step(e, data):
    """For a random well-typed formula, replace a random subtree by the hole of its shape:
    the sketch type-checks, and the formula is its one-step refinement filling that hole."""
    paths, stack = [], [(e, ())]
    while stack:
        node, path = stack.pop()
        paths.append((node, path))
        stack.extend((c, path + (i,)) for i, c in enumerate(children(node)))
    sub, path = data.draw(st.sampled_from(paths))
    kind = "c" if isinstance(sub, Num) else sub.type.shape
    sketch = parse_sketch(to_text(replace_at(e, path, Hole(kind))))
    formula = parse_sketch(to_text(e))
    fills = refinement(sketch, formula)
    assert fills is not None and len(fills) == 1 and fills[0].kind == kind
    assert substitute(sketch, fills) == formula


# --- the graph ------------------------------------------------------------------------
def test_graph_dedups_links_and_propagates_scores():
    g = Graph(sketches=("?Mat * ?Col", "|W| * ?Col", "?Mat * ‖X‖"))
    by_text = {n.text: n.id for n in g.nodes}
    assert g.path(by_text["|W| * ?Col"]) == [0, by_text["?Mat * ?Col"], by_text["|?Mat| * ?Col"],
                                            by_text["|W| * ?Col"]]  # one production per edge
    wanda, created = g.refine(by_text["|W| * ?Col"], parse_sketch("abs(W) * norm(X)"))
    assert created and wanda.text == "|W| * ‖X‖" and wanda.complete
    again, created = g.refine(by_text["?Mat * ‖X‖"], parse_sketch("wanda"))   # same node, 2nd parent
    assert not created and again.id == wanda.id and len(wanda.parents) == 2
    g.record(wanda.id, ok=True, val_ppl=30.5, proxy=0.2)
    for text in ("?Mat", "?Mat * ?Col", "|W| * ?Col", "?Mat * ‖X‖"):   # every ancestor
        assert g.nodes[by_text[text]].best_ppl == 30.5
    other, _ = g.refine(by_text["|W| * ?Col"], parse_sketch("|W| * ‖X‖ ^ 0.5"))
    g.record(other.id, ok=True, val_ppl=29.0, proxy=0.3)
    assert g.nodes[0].best_ppl == 29.0 and g.nodes[0].best_proxy == 0.2
    assert g.nodes[by_text["?Mat * ‖X‖"]].best_ppl == 30.5   # not an ancestor of the better one
    assert g.best().id == other.id
    chain = [g.find(t).id for t in ("|W| * ?Col ^ ?c", "|W| * ‖X‖ ^ ?c")]  # intermediate sketches
    assert g.path(other.id) == [0, by_text["?Mat * ?Col"], by_text["|?Mat| * ?Col"], by_text["|W| * ?Col"],
                                *chain, other.id]
    bad, _ = g.refine(by_text["|W| * ?Col"], parse_sketch("|W| * hinv"))
    g.record(bad.id, ok=False, error="non-finite scores: inf in layer 3")
    assert bad.status == "error" and g.nodes[0].best_ppl == 29.0


def test_seeds_add_library_metrics_under_the_default_sketches():
    g = Graph(seeds=("wanda", "magnitude", "ria(a = 0.3)", "row_sum(|W|)", "no_such_metric", "G * ?Col"))
    assert [n.text for n in g.nodes[:4]] == ["?Mat", "?Mat * ?Col", "|W| * ?Col", "|W| ^ ?c * ‖X‖ ^ ?c"]
    wanda = g.find("|W| * ‖X‖")
    assert wanda.name == "wanda" and wanda.origin == "library" and wanda.parents == [2]
    assert g.find("|W|").name == "magnitude" and g.path(g.find("|W|").id) == [0, g.find("|?Mat|").id, g.find("|W|").id]
    assert g.find("G * ?Col").origin == "seed" and g.find("G * ?Col").parents == [1]
    assert sum(n.origin != "step" for n in g.nodes) == 8  # the Row metric and the unknown name were skipped
    assert Graph(sketches=()).nodes[0].children == []


def test_graph_rejects_what_is_not_a_refinement():
    g = Graph(sketches=("|W| * ?Col",))
    with pytest.raises(NotARefinement, match="only holes may change"):
        g.refine(1, parse_sketch("W * ‖X‖"))
    with pytest.raises(NotARefinement, match="is a Row"):
        g.refine(0, parse_sketch("row_sum(|W|)"))
    leaf, _ = g.refine(1, parse_sketch("|W| * hinv"))
    with pytest.raises(NotARefinement, match="no holes"):
        g.refine(leaf.id, parse_sketch("|W| * hinv"))
    with pytest.raises(NotARefinement, match="fill at least one hole"):
        g.refine(1, parse_sketch("|W| * ?Col"))


def test_graph_text_and_json_show_how_the_best_was_reached():
    g = Graph()
    s = {n.text: n.id for n in g.nodes}
    f, _ = g.refine(s["|W| ^ ?c * ‖X‖ ^ ?c"], parse_sketch("|W| ^ 1.5 * ‖X‖ ^ 0.5"))
    g.record(f.id, ok=True, val_ppl=28.25, proxy=0.1)
    text = g.graph_text()
    assert "Best formula: #%d |W| ^ 1.5 * ‖X‖ ^ 0.5" % f.id in text
    assert "?c := 1.5" in text and "?c := 0.5" in text and "?Mat := ?Mat * ?Col" in text
    assert "└─" in text and "ppl 28.25" in text
    data = json.loads(json.dumps(g.graph_json()))
    assert data["best"] == f.id and data["best_path"] == g.path(f.id)
    assert data["best_path"][0] == 0 and data["best_path"][-1] == f.id
    mid = g.find("|W| ^ 1.5 * ‖X‖ ^ ?c").id  # one ?c per step
    assert {(e["src"], e["dst"]) for e in data["edges"]} >= {(0, 1), (s["|W| ^ ?c * ‖X‖ ^ ?c"], mid), (mid, f.id)}
    again = Graph.from_json(data)
    assert again.graph_text() == text and again.best().id == f.id
    assert again.refine(s["?Mat * ?Col"], parse_sketch("G * ?Col"))[1]  # still usable


# --- the prompt -----------------------------------------------------------------------
def test_language_summary_is_generated_from_the_tables():
    text = language_summary()
    for o in OPERANDS.values():
        if o.source == "block":  # a block statistic of structure scores: no metric reads it
            assert o.text not in text
            continue
        assert o.text in text
    for f in ALL_FUNCTIONS:
        if f != "norm":  # norm(X) appears as an operand spelling
            assert f in text, f
    for name in library("metric"):
        assert f"  {name}" in text
    system = build_messages(Graph(), [], 3)[0]["content"]
    for kind in HOLE_SHAPES:
        assert f"?{kind}" in system


def test_language_summary_leaves_out_unavailable_statistics():
    without_g = frozenset(OPERANDS) - {"G"}
    text = language_summary("Mat", without_g)
    assert "  G:" not in text and "pruner_zero" not in text and "gblm" not in text
    assert "  wanda" in text and "hinv" in text
    assert "  G:" in language_summary("Mat")


def test_prompt_shows_graph_scores_errors_and_format():
    g = Graph()
    leaf, _ = g.refine(2, parse_sketch("|W| * ‖X‖"))
    g.record(leaf.id, ok=True, val_ppl=31.0, proxy=0.5)
    system, user = build_messages(g, [Feedback("sqrt(W)", "type error: sqrt of a possibly negative value", 2)], 3)
    assert "node <id>" in system["content"] and f"1 to {MAX_LINES} lines" in system["content"]
    assert "node 2: |W| * ?Col" in user["content"] and "ppl 31" in user["content"]
    assert "`sqrt(W)` (for node 2)" in user["content"] and "sqrt of a possibly negative" in user["content"]
    assert "then 3 refinements" in user["content"]


def test_render_graph_is_bounded():
    g = Graph(sketches=("|W| * ?Col",))
    for i in range(60):
        n, _ = g.refine(1, parse_sketch(f"|W| * ‖X‖ ^ {i + 1}"))
        g.record(n.id, ok=True, val_ppl=100.0 - i, proxy=1.0)
    text = render_graph(g, max_nodes=12)
    assert len(text.splitlines()) <= 13 and "more" in text
    assert "‖X‖ ^ 60" in text  # the best is always shown


@pytest.mark.parametrize("reply, node, lines", [
    ("node 3\n|W| * ‖X‖\n|W| * ?Col", 3, ["|W| * ‖X‖", "|W| * ?Col"]),
    ("|W| * ‖X‖", None, ["|W| * ‖X‖"]),
    ("<think>let me see\nnode 9</think>\nnode #4:\n```\n`|W|`\n```", 4, ["|W|"]),
    ("", None, []),
    ("\n\n  \n", None, []),
    # list numbering is dropped; a number with its digits after the point is not numbering
    ("node 6\n1. |W| ^ 0.5\n2) `W`\n10. ?Mat * ‖X‖", 6, ["|W| ^ 0.5", "W", "?Mat * ‖X‖"]),
    ("1.5 * W\n2.W\n3.", None, ["1.5 * W", "2.W", "3."]),
])
def test_split_reply(reply, node, lines):
    assert split_reply(reply)[:2] == (node, lines)


def test_split_reply_reads_at_most_eight_lines():
    node, lines, problems = split_reply("node 1\n" + "\n".join(["W"] * 12))
    assert node == 1 and len(lines) == MAX_LINES and "only the first 8" in problems[0]



def test_search_and_server_share_one_llm_contract():
    """The search reads replies with the very function the server checks them with, and
    the server's grammar, its prompt and the search's prompt take their bounds and
    texts from the same modules (llm_contract, llm_prompt), so the two cannot drift apart."""
    from prunedsl import llm_contract, llm_prompt
    from prunedsl.search import llm, prompt
    from prunedsl.serve import constrained, prompts, replies
    assert llm.split_reply is replies.split_reply is llm_contract.split_reply
    assert constrained.MAX_LINES == prompt.MAX_LINES == llm_contract.MAX_LINES
    assert llm.MAX_LINE_CHARS == llm_contract.MAX_LINE_CHARS
    assert prompt.REPLY_FORMAT is llm_prompt.REPLY_FORMAT
    assert prompts.library_call is llm_prompt.library_call
    assert llm_prompt.ANSWER_FORMATS["reply"] in prompts.system_prompt("reply")
    grammar = constrained.grammar_text("reply")
    assert f"{{0,{llm_contract.MAX_LINES - 1}}}" in grammar
    assert f"[0-9]{{1,{llm_contract.MAX_NODE_DIGITS}}}" in grammar
    for reply in ("node 3\n|W| * ‖X‖\n|W| * ?Col", "node 12\nW ^ 2 / hinv", "|W|",
                  "node 0\n?Mat * ?Col\n" + "\n".join(f"|W| * ‖X‖ ^ {i}" for i in range(7))):
        node, lines, problems = split_reply(reply)
        assert lines and not problems and replies.check_completion(reply, "reply").lines == len(lines)


def test_the_contract_imports_neither_torch_nor_openai():
    code = ("import sys; import prunedsl.llm_contract, prunedsl.llm_prompt, prunedsl.serve.replies, "
            "prunedsl.serve.prompts; "
            "assert not {'torch', 'openai', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_refinement_filling_several_productions_becomes_a_chain_of_one_production_steps():
    """docs/design.md §4: an edge is one hole replaced by one production. An answer that fills
    more (two holes, or one hole with a whole subexpression) is expanded: the intermediate
    sketches become nodes, and "Reached by" explains the path one production per line."""
    g = Graph()
    start = g.find("|W| * ?Col").id
    leaf, created = g.refine(start, parse_sketch("|W| * (‖X‖ ^ 0.5 + sqrt(hinv))"))
    assert created and leaf.parents != [start]
    path = g.path(leaf.id)
    texts = [g.nodes[i].text for i in path[path.index(start):]]
    assert texts == ["|W| * ?Col", "|W| * (?Col + ?Col)", "|W| * (?Col ^ ?c + ?Col)", "|W| * (‖X‖ ^ ?c + ?Col)",
                     "|W| * (‖X‖ ^ 0.5 + ?Col)", "|W| * (‖X‖ ^ 0.5 + sqrt(?Col))", "|W| * (‖X‖ ^ 0.5 + sqrt(hinv))"]
    assert all(g.nodes[i].origin == "step" for i in path[path.index(start) + 1:-1])
    assert all(Graph.one_step(e) for e in g.edges.values())   # every edge of the graph, seeds too
    # a second formula through the same intermediate sketches shares them
    other, _ = g.refine(start, parse_sketch("|W| * (‖X‖ ^ 0.5 + hinv)"))
    assert g.path(other.id)[:-1] == path[:path.index(g.find("|W| * (‖X‖ ^ 0.5 + ?Col)").id) + 1]
    g.record(leaf.id, ok=True, val_ppl=20.0, proxy=0.1)
    text = g.graph_text()
    reached = text.split("Reached by:\n", 1)[1].splitlines()
    assert len(reached) == len(path) and all(len(line.split(":=")) == 2 for line in reached[1:])
    assert "?Col := ?Col + ?Col" in reached[path.index(start) + 1]
    assert g.nodes[start].best_ppl == 20.0  # scores still reach every ancestor
    again = Graph.from_json(json.loads(json.dumps(g.graph_json())))
    assert again.graph_text() == text


def test_an_intermediate_sketch_that_does_not_type_check_is_skipped(monkeypatch):
    import prunedsl.search.gcot as gcot
    import prunedsl.search.gcot_steps as gcot_steps  # where the chains are built
    from prunedsl.errors import DSLTypeError
    real = gcot.parse_sketch

    def picky(text, *a):  # stands in for a checker rule a partial sketch can break
        if text == "|W| * ?Col ^ ?c":
            raise DSLTypeError("not on its own")
        return real(text, *a)
    monkeypatch.setattr(gcot, "parse_sketch", picky)
    monkeypatch.setattr(gcot_steps, "parse_sketch", picky)
    texts = [to_text(e) for e in Graph.steps(real("|W| * ?Col"), real("|W| * ‖X‖ ^ 2"))]
    assert texts == ["|W| * ‖X‖ ^ ?c", "|W| * ‖X‖ ^ 2"]
    g = Graph(sketches=("|W| * ?Col",))
    leaf, _ = g.refine(1, real("|W| * ‖X‖ ^ 2"))
    (edge,) = [e for e in g.edges.values() if e.src == 1]
    assert edge.fills == ["?Col := ‖X‖ ^ ?c"] and not Graph.one_step(edge)  # two productions in one edge
    assert g.path(leaf.id)[-3:] == [1, g.find("|W| * ‖X‖ ^ ?c").id, leaf.id]
