"""The LLM prompt's views (``search/prompt.py``) and the per-reply counts
(``search/reply_stats.py``).

The compact view puts what changes least first: a prompt built after the search grew by a
few nodes starts with the whole previous prompt's library section and node list, so the
server's KV cache serves them. The tree view is the earlier layout, kept for comparison.
"""
from __future__ import annotations

import pytest

from prunedsl.errors import SearchError
from prunedsl.search.base import Outcome, Proposal
from prunedsl.search.gcot import Graph
from prunedsl.search.llm import LLMProposer
from prunedsl.search.prompt import build_messages, render_library, render_nodes
from prunedsl.search.reply_stats import ReplyStats, reply_markdown, reply_rows
from prunedsl.dsl.sketch import parse_sketch


def _graph() -> Graph:
    g = Graph(sketches=("|W| * ?Col",))
    for name, text, ppl in (("wanda", "|W| * ‖X‖", 31.25), ("magnitude", "|W|", 48.5)):
        node, _ = g.attach(parse_sketch(text), origin="library")
        node.origin, node.name = "library", name
        g.record(node.id, ok=True, val_ppl=ppl, proxy=0.1)
    return g


def _user(g: Graph, errors=(), view="compact") -> str:
    return build_messages(g, list(errors), 3, view=view)[1]["content"]


def test_library_section_shows_the_measured_scores_only():
    g = _graph()
    lib = render_library(g)
    assert "wanda = |W| * ‖X‖\n    scores: val ppl 31.25, proxy 0.1\n" in lib and "val ppl 48.5" in lib
    assert render_library(Graph()) == ""  # nothing measured yet: no section, no invented numbers
    node, _ = g.attach(parse_sketch("|W| * G"), origin="library")
    node.origin, node.name = "library", "gblm_like"
    assert "gblm_like = |W| * G\n    not evaluated yet" in render_library(g)


def test_compact_view_leaves_out_intermediate_sketches_and_the_tree_keeps_them():
    g = _graph()
    leaf, _ = g.refine(1, parse_sketch("|W| * ‖X‖ ^ 0.5"))  # through two one-step sketches
    steps = [n for n in g.nodes if n.origin == "step"]
    assert steps
    compact, tree = _user(g), _user(g, view="tree")
    for s in steps:
        assert f"node {s.id}: {s.text}" not in compact and f"node {s.id}: {s.text}" in tree
    assert "formula: |W| * ‖X‖ ^ 0.5\n  not evaluated yet" in compact
    assert compact.index("Library metrics") < compact.index("Search nodes") < compact.index("Choose the sketch")
    assert "Library metrics, each pruned" not in tree


def test_a_grown_graph_keeps_the_previous_prompt_as_prefix():
    """New nodes, their scores and new errors change only what follows the old node list."""
    g = _graph()
    a, _ = g.refine(1, parse_sketch("|W| * ‖X‖ ^ 0.5"))
    g.record(a.id, ok=True, val_ppl=30.0, proxy=0.05)
    before = _user(g)
    kept = before[:before.index("Best complete formula so far")]
    b, _ = g.refine(1, parse_sketch("|W| * ‖X‖ ^ 0.25"))
    g.record(b.id, ok=True, val_ppl=29.0, proxy=0.04)  # a new best
    after = _user(g, errors=[])
    assert after.startswith(kept.rstrip("\n"))
    assert "|W| * ‖X‖ ^ 0.25\n  scores: val ppl 29" in after[len(kept) - 2:]


def test_compact_view_is_bounded():
    g = Graph(sketches=("|W| * ?Col",))
    for i in range(60):
        n, _ = g.refine(1, parse_sketch(f"|W| * ‖X‖ ^ {i + 1}"))
        g.record(n.id, ok=True, val_ppl=100.0 - i, proxy=1.0)
    text = render_nodes(g, max_nodes=12)
    entries = [ln for ln in text.splitlines() if not ln.startswith("  ")]
    assert len(entries) == 13 and "more nodes not shown" in text
    assert "‖X‖ ^ 60" in text  # the best is always shown
    exponents = [int(ln.rsplit("^ ", 1)[1]) for ln in entries if ln.startswith("formula:")]
    assert exponents == sorted(exponents) and [ln for ln in entries if ln.startswith("node")] == \
        ["node 0: ?Mat", "node 1: |W| * ?Col"]


def test_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="compact, tree"):
        build_messages(Graph(), [], 3, view="wide")
    with pytest.raises(SearchError, match="prompt view"):
        LLMProposer(prompt_view="wide", base_url="http://127.0.0.1:9/v1", model="m")


class ScriptedEndpoint:
    """Answers each request with the next text; records the messages."""

    model, where = "scripted", "scripted"

    def __init__(self, *texts):
        self.texts, self.requests = list(texts), []

    def available(self):
        return True

    def outage(self):
        return None

    def complete(self, messages, fields=None, seed=None):
        self.requests.append(messages)
        return self.texts.pop(0) if self.texts else None


def test_reply_stats_count_parsed_typed_and_new_formulas():
    ep = ScriptedEndpoint("node 1\n|W| * ‖X‖ ^ 0.5\nsqrt(W)\n|W| * (\n|W| * ?Col ^ ?c\n|W| * ‖X‖₁",
                          "no formula here at all !!", "node 1\n|W| * ‖X‖ ^ 0.5\n|W| * ‖X‖ ^ 2")
    p = LLMProposer(endpoint=ep, sketches=("|W| * ?Col",), calls_per_propose=1)
    a, b = p.propose(8)
    s = p.reply_stats[0]
    assert (s.lines, s.parsed, s.typed, s.refines, s.formulas) == (5, 4, 3, 3, 2)
    p.observe([Outcome(a, ok=True, val_ppl=30.0), Outcome(b, ok=True, duplicate_of="|W| * ‖X‖ ^ 0.5")])
    assert (s.duplicates, s.new) == (1, 1)  # b ranks like a
    assert p.propose(8) == []          # a reply without a formula line
    (c,) = p.propose(8)                # the repeated formula is not handed out again
    p.observe([Outcome(c, ok=False, error="non-finite scores")])
    assert [r.formulas for r in p.reply_stats] == [2, 0, 1] and p.reply_stats[2].failed == 1
    rows = dict(reply_rows(p.reply_stats))
    assert rows["replies with at least one valid new formula"] == "1 / 3 (33%)"  # a, not b (duplicate) nor c
    assert rows["valid new formulas"] == "1 / 3 (33%)"
    assert "requests (replies)" in reply_markdown(p.reply_stats)
    # saved and read back with the proposer's state
    q = LLMProposer(endpoint=ScriptedEndpoint(), sketches=("|W| * ?Col",))
    q.load_state(p.state())
    assert q.reply_stats == p.reply_stats and isinstance(q.reply_stats[0], ReplyStats)
    assert "Library metrics" not in ep.requests[0][1]["content"]  # nothing measured yet


def test_prompt_view_flag_reaches_the_proposer():
    import argparse

    from prunedsl.search.llm import add_llm_arguments
    parser = argparse.ArgumentParser()
    add_llm_arguments(parser)
    args = parser.parse_args(["--llm-prompt-view", "tree", "--llm-base-url", "http://127.0.0.1:9/v1"])
    assert LLMProposer.from_args(args).prompt_view == "tree"
    assert LLMProposer.from_args({"llm_base_url": "http://127.0.0.1:9/v1"}).prompt_view == "compact"
    with pytest.raises(SystemExit):
        parser.parse_args(["--llm-prompt-view", "wide"])


# --- what Qwen 0.5B did with the earlier layout (docs/prompt_cache.md) ----------------------
def _run_like_graph() -> Graph:
    """The benchmark's graph after its seeds: library metrics scored, the best of them a
    complete formula (ria), one LLM formula scored and one LLM sketch."""
    g = Graph()
    for name, ppl, proxy in (("magnitude", 241.3, 0.07948), ("wanda", 241.9, 0.06013), ("ria", 240.9, 0.06815)):
        node, _ = g.attach(parse_sketch(name), origin="library")
        node.origin, node.name = "library", name
        g.record(node.id, ok=True, val_ppl=ppl, proxy=proxy)
    leaf, _ = g.refine(2, parse_sketch("|W| * ‖X‖ ^ 0.25"))
    g.record(leaf.id, ok=True, val_ppl=241.1, proxy=0.061234)
    g.refine(1, parse_sketch("?Mat * ‖X‖ ^ ?c"))
    return g


@pytest.mark.parametrize("view", ["compact", "tree"])
def test_the_best_formula_is_not_offered_as_a_node_to_refine(view):
    g = _run_like_graph()
    best = g.best()
    assert best.complete and best.name == "ria"
    text = _user(g, view=view)
    # "Best formula so far: node 6" made the model answer `node 6` (the tree view, the earlier
    # layout, still labels every node with its id; its best line and request do not)
    assert view == "tree" or f"node {best.id}" not in text
    best_part = text[text.index("Best complete formula so far"):text.index("Sketches you can refine")]
    assert best.text in best_part and "node" not in best_part
    offered = text.split("Sketches you can refine: ", 1)[1].split("\n", 1)[0]
    ids = [int(x.removeprefix("node ")) for x in offered.split(", ")]
    assert ids and all(not g.nodes[i].complete for i in ids)
    assert g.find("?Mat * ‖X‖ ^ ?c").id in ids and 1 in ids
    if view == "compact":  # no complete formula has an id to name
        complete = {n.id for n in g.nodes if n.complete}
        named = {int(ln.split(":")[0].removeprefix("node ")) for ln in text.splitlines() if ln.startswith("node ")}
        assert named and not named & complete and set(ids) == named


def test_scores_are_words_on_their_own_lines_not_formula_text():
    """The model copied `[ppl 241.3  proxy 0.07948]` as `241.3 - 0.07948 - ... - W`: in the
    compact view no line holding formula text holds a score, and the scores are labelled."""
    g = _run_like_graph()
    text = _user(g)
    scores = [f"{v:.4g}" for n in g.nodes for v in (n.val_ppl,) if v is not None] + \
             [f"{v:.3g}" for n in g.nodes for v in (n.proxy,) if v is not None]
    assert "0.0612" in scores and "0.061234" not in text  # 3 significant digits for the proxy
    for line in text.splitlines():
        if any(s in line for s in scores):
            assert line.lstrip().startswith("scores: val ppl") or line.startswith("Best complete formula"), line
            assert not any(c in line for c in "|?‖^*"), line  # no formula text beside the numbers
    assert "[ppl" not in text


def test_a_numbered_reply_line_is_read_as_its_formula():
    ep = ScriptedEndpoint("node 2\n1. |W| * ‖X‖ ^ 0.5\n2) |W| * std(X)")
    p = LLMProposer(endpoint=ep, calls_per_propose=1)
    assert [x.text for x in p.propose(4)] == ["|W| * ‖X‖ ^ 0.5", "|W| * std(X)"]
    assert not p.errors
