"""Reply lines that copy numbers (``reply_guard.py``): the lines Qwen 0.5B wrote in
docs/prompt_cache.md are rejected with feedback before they become nodes; real constants
pass."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prunedsl.dsl.library import library
from prunedsl.dsl.parser import parse_expr
from prunedsl.dsl.printer import format_number, to_text
from prunedsl.search.base import Outcome, Proposal
from prunedsl.search.llm import LLMProposer
from prunedsl.reply_guard import (MAX_NUMBERS, MAX_SIGNIFICANT, copied_numbers, numbers, shown_numbers,
                                         significant_digits)

# the scores of the library metrics in that run, as its prompt showed them
SHOWN = shown_numbers([241.3, 0.07948, 241.9, 0.06013, 240.9, 0.06815, 242.1, 0.07557])


@pytest.mark.parametrize("value, digits", [(12.122414, 8), (0.07948, 4), (241.3, 4), (100000.0, 1), (1e-8, 1),
                                           (251111.0, 6), (0.5, 1), (2.0, 1), (566.0, 3), (-0.06013, 4)])
def test_significant_digits(value, digits):
    assert significant_digits(value) == digits


@pytest.mark.parametrize("line", [
    "12.122414 - -241.3 - -0.07948 - -0.06013 - -0.5 - -240.9 - -W",
    "25.947429 - 12.122414 - 241.9 - 240.9 - 0.07948 - 0.06013 - 0.5 - 240.9 - 0.06815 - W",
    "25.947429 - 12.122414 - 241.9 - 240.111111*W",
    "25.947429 - ?c - ?c - ?c - ?c - ?c - ?c - ?c - ?Mat",
    "251111*W",
    "241.3 - W",             # one copied score
    "|W| * 0.0795",          # a proxy as the prompt rounds it (3 digits)
    "0.5 - 0.5 - 0.5 - 0.5 - 0.5 - W",
])
def test_the_copies_of_the_benchmark_run_are_rejected(line):
    assert copied_numbers(parse_expr(line), SHOWN) is not None


@pytest.mark.parametrize("line", [
    "|W| * ‖X‖ ^ 0.5", "|W| ^ (1/3) * ‖X‖ ^ (2/3)", "max(G, 1e-3) * |W|", "gblm(alpha = 566)",
    "ria(a = 0.5)", "|W| * ‖X‖ ^ 2 + 0.5 * G", "3.1416 * |W|", "?Mat * ‖X‖ ^ ?c",
    "|W| * 0.5",             # a score of 0.5 would not matter: one digit is an ordinary constant
])
def test_real_constants_pass(line):
    assert copied_numbers(parse_expr(line), SHOWN | shown_numbers([0.5, 2.0])) is None


def test_library_formulas_pass_as_written():
    for name, d in library("metric").items():
        assert copied_numbers(parse_expr(to_text(d.body)), SHOWN) is None, name


@given(st.lists(st.integers(0, 99), min_size=1, max_size=8))
def test_the_number_count_rule(ints):
    line = " + ".join([*(str(i) for i in ints), "W"])
    assert numbers(parse_expr(line)) == [float(i) for i in ints]
    assert (copied_numbers(parse_expr(line), frozenset()) is None) == (len(ints) <= MAX_NUMBERS)


@given(st.floats(1e-6, 1e6, allow_nan=False))
def test_the_precision_rule(value):
    v = float(format_number(value))
    problem = copied_numbers(parse_expr(f"{format_number(v)} * W"), frozenset())
    assert (problem is None) == (significant_digits(v) <= MAX_SIGNIFICANT)


class Scripted:
    model, where = "scripted", "scripted"

    def __init__(self, *texts):
        self.texts = list(texts)

    def available(self):
        return True

    def outage(self):
        return None

    def complete(self, messages, fields=None, seed=None):
        return self.texts.pop(0) if self.texts else None


def test_the_proposer_feeds_copies_back_and_keeps_them_out_of_the_graph():
    p = LLMProposer(endpoint=Scripted("node 0\n241.3 - W\n12.122414 - W\n|W| * ‖X‖ ^ 0.5"), calls_per_propose=1)
    p.observe([Outcome(Proposal("magnitude", "seed", note="magnitude"), ok=True, val_ppl=241.3, proxy=0.07948)])
    before = len(p.graph)
    assert [x.text for x in p.propose(4)] == ["|W| * ‖X‖ ^ 0.5"]
    assert p.graph.find("241.3 - W") is None and p.graph.find("12.122414 - W") is None
    assert len(p.graph) > before  # the valid line did become a node
    msgs = {e.line: e.message for e in p.errors}
    assert "score from the prompt" in msgs["241.3 - W"] and "significant digits" in msgs["12.122414 - W"]
    p.errors.clear()
    p.endpoint.texts.append("node 0\n12.122414 - -241.3 - -0.07948 - -0.06013 - -0.5 - -240.9 - -W")
    p.propose(1)
    (e,) = p.errors  # the errors section does not hand the numbers back to be copied
    assert e.line == "12.122414 - -241.3 - …" and "0.07948" not in e.message
    s = p.reply_stats[0]
    assert (s.lines, s.parsed, s.typed, s.refines, s.formulas) == (3, 3, 3, 1, 1)
