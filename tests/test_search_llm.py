"""The LLM proposer against a real OpenAI-compatible HTTP server on loopback (scripted).

Every test goes through the ``openai`` client and a socket: valid refinements, bad lines
fed back for repair, injection attempts, empty and garbage bodies, slow replies, 5xx,
429 with Retry-After, a dead endpoint, resume. Small timeouts and backoffs keep it fast.
"""
from __future__ import annotations

import argparse
import builtins
import json
import logging
import time

import lark
import pytest
import sympy
import sympy.parsing.sympy_parser

from fake_openai_server import MODEL, FakeOpenAI, Reply
from prunedsl.search.base import Outcome, Proposal
from prunedsl.search.llm import LLMProposer, add_llm_arguments

# The graph every proposer starts with (DEFAULT_SEEDS): node 1 ?Mat * ?Col,
# node 2 |W| * ?Col, node 3 |W| ^ ?c * ‖X‖ ^ ?c.


@pytest.fixture
def server():
    with FakeOpenAI() as srv:
        yield srv


class Sleeps(list):
    """Records the backoff delays instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(srv: FakeOpenAI, **kw) -> LLMProposer:
    args = dict(base_url=srv.url, model=MODEL, api_key="sk-test", timeout=2.0, max_retries=2,
                backoff=0.01, max_backoff=0.02, calls_per_propose=1, seed=0, sleep=Sleeps())
    return LLMProposer(**{**args, **kw})


def user_prompt(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


# --- the happy path ---------------------------------------------------------------------
def test_valid_refinements_become_proposals(server):
    server.push(Reply.text("node 2\n|W| * ‖X‖\nabs(W) * hinv ^ 0.5\n|W| * (‖X‖ + ?Col)"))
    p = make(server, extra_body={"grammar": "reply"}, temperature=0.3)
    props = p.propose(4)
    assert [q.text for q in props] == ["|W| * ‖X‖", "|W| * hinv ^ 0.5"]
    assert all(q.origin == "llm" and q.node == 2 for q in props)
    sketch = p.graph.find("|W| * (‖X‖ + ?Col)")   # a new sketch, no proposal,
    assert 2 in p.graph.path(sketch.id)            # reached from node 2 one production at a time
    assert [p.graph.nodes[i].text for i in p.graph.path(sketch.id)[-2:]] == ["|W| * (?Col + ?Col)",
                                                                             "|W| * (‖X‖ + ?Col)"]
    (req,) = server.chat_requests
    body = req["body"]
    assert body["model"] == MODEL and body["temperature"] == 0.3 and body["grammar"] == "reply"
    assert req["headers"]["authorization"] == "Bearer sk-test"
    system, user = body["messages"]
    assert "node <id>" in system["content"] and "‖X‖ (or norm(X))" in system["content"]
    assert "node 2: |W| * ?Col" in user["content"] and "then 4 refinements" in user["content"]
    assert not p.errors


def test_model_defaults_to_the_first_listed_and_env_vars_are_read(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server.push(Reply.text("node 1\nG * ‖X‖"))
    p = LLMProposer(backoff=0.01, calls_per_propose=1, sleep=Sleeps())
    assert [q.text for q in p.propose(2)] == ["G * ‖X‖"]
    assert [r["path"] for r in server.requests] == ["/v1/models", "/v1/chat/completions"]
    assert server.chat_requests[0]["body"]["model"] == MODEL
    assert server.chat_requests[0]["headers"]["authorization"] == "Bearer sk-from-env"


def test_the_constrained_reply_variant_is_preferred_when_listed():
    with FakeOpenAI(models=("smollm2-135m", "smollm2-135m+formula", "smollm2-135m+reply")) as srv:
        srv.push(Reply.text("node 1\nG * ‖X‖"))
        p = make(srv, model=None)
        assert len(p.propose(2)) == 1
        assert srv.chat_requests[0]["body"]["model"] == "smollm2-135m+reply"
        assert srv.chat_requests[0]["body"]["max_tokens"] <= 512  # the offline server's limit
        # prunedsl's server is told which sketches the prompt offers (it checks replies refine one)
        body = srv.chat_requests[0]["body"]
        offered = body["prunedsl_sketches"]
        assert offered and all(p.graph.nodes[int(i)].text == t and not p.graph.nodes[int(i)].complete
                               for i, t in offered.items())
        # and the formulas the search has, as canonical forms under its group: none yet, then
        # the one it proposed (handed out, not scored yet: canonical form computed here)
        assert body["prunedsl_seen"] == {"group": "row", "forms": []}
        srv.push(Reply.text("node 1\nG * hinv"))
        p.propose(1)
        assert srv.chat_requests[1]["body"]["prunedsl_seen"]["forms"] == ["G * ‖X‖"]


def test_llm_seed_numbers_the_requests_and_none_sends_no_seed(server):
    server.push(Reply.text("node 1\nG * ‖X‖"), Reply.text("node 1\nG * hinv"))
    p = make(server, llm_seed=7)
    p.propose(1)
    p.propose(1)
    assert [r["body"]["seed"] for r in server.chat_requests] == [7, 8]
    server.push(Reply.text("node 1\nhinv * ‖X‖"))
    make(server).propose(1)
    assert "seed" not in server.chat_requests[-1]["body"]


def test_a_given_model_takes_its_constrained_reply_variant_when_listed(server):
    """`--llm-model smollm2-135m` against `prunedsl serve-llm` asks for `smollm2-135m+reply`;
    elsewhere (no such variant listed) the name is used as given."""
    with FakeOpenAI(models=("smollm2-135m", "smollm2-135m+formula", "smollm2-135m+reply")) as srv:
        srv.push(Reply.text("node 1\nG * ‖X‖"))
        assert len(make(srv, model="smollm2-135m").propose(2)) == 1
        assert srv.chat_requests[0]["body"]["model"] == "smollm2-135m+reply"
    server.push(Reply.text("node 1\nG * ‖X‖"), Reply.text("node 1\nG * hinv"))
    p = make(server, model=MODEL)
    p.propose(1)
    p.propose(1)
    assert [r["body"]["model"] for r in server.chat_requests] == [MODEL, MODEL]
    assert not any(k.startswith("prunedsl_") for r in server.chat_requests for k in r["body"])  # others reject them
    assert [r["path"] for r in server.requests].count("/v1/models") == 1  # listed once


def test_without_a_node_line_it_is_fed_back_and_the_valid_lines_still_count(server):
    """A missing ``node`` line is an error fed back for repair; the valid formulas are still
    evaluated, each under the most specific sketch it refines (the offline server's
    ``+reply`` grammar makes the node line optional)."""
    server.push(Reply.text("|W| * ‖X‖ ^ 2\n|W| ^ 2 * ‖X‖ ^ 0.5\nsq(W) * ‖X‖"), Reply.text("node 2\n|W| * hinv"))
    p = make(server)
    props = p.propose(4)
    closest = {q.text: p.graph.nodes[q.node].text for q in props}  # the most specific sketch each refines
    assert closest == {"|W| * ‖X‖ ^ 2": "|W| * ?Col", "|W| ^ 2 * ‖X‖ ^ 0.5": "|W| ^ ?c * ‖X‖ ^ ?c",
                       "sq(W) * ‖X‖": "?Mat * ?Col"}
    assert any("did not start with `node <id>`" in e.message for e in p.errors)
    p.propose(4)
    assert "did not start with `node <id>`" in user_prompt(server.chat_requests[1])
    assert not any("node <id>`:" in e.message for e in p.errors)  # the good answer raised none


def test_extra_formulas_wait_in_a_queue(server):
    server.push(Reply.text("node 2\n|W| * ‖X‖\n|W| * ‖X‖₁\n|W| * std(X)"))
    p = make(server)
    assert len(p.propose(1)) == 1
    assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖₁", "|W| * std(X)"]
    assert len(server.chat_requests) == 1  # the second call was served from the queue


# --- repair feedback --------------------------------------------------------------------
BAD_LINES = {
    "|W| * (‖X‖": "syntax error",                          # does not parse
    "|W| * sqrt(mean(X))": "sqrt of a possibly negative value",  # ill-typed
    "W * ‖X‖": "only holes may change",                     # not a refinement of node 2
    "|W| * row_sum(|W|)": "cannot hold",                    # wrong shape for ?Col
    "|W| * ?Row": "cannot hold",
    "wandaa": "unknown name",
}


def test_bad_lines_are_fed_back_and_never_raise(server):
    server.push(Reply.text("node 2\n" + "\n".join(BAD_LINES) + "\n|W| * hinv"),
                Reply.text("node 2\n|W| * ‖X‖"), Reply.text("node 2\n|W| * ‖X‖∞"))
    p = make(server)
    assert [q.text for q in p.propose(8)] == ["|W| * hinv"]
    assert [q.text for q in p.propose(8)] == ["|W| * ‖X‖"]
    repair = user_prompt(server.chat_requests[1])
    assert "Problems with your recent answers" in repair
    for line, says in BAD_LINES.items():
        assert f"`{line}` (for node 2)" in repair and says in repair, line
    assert "^" in repair  # carets under the offending spans
    p.propose(8)
    assert "Problems" not in user_prompt(server.chat_requests[2])  # each problem is shown once


def test_node_line_problems(server):
    p = make(server)
    leaf = len(p.graph)  # the id |W| * ‖X‖ will get
    server.push(Reply.text("node 42\n|W| * ‖X‖"), Reply.text("node 2\n|W| * hinv"),
                Reply.text(f"node {leaf}\nG"), Reply.text("node 1\n" + "\n".join(["W"] * 10)))
    # fed back for repair; the valid line is still evaluated, under the closest sketch
    assert [(q.text, q.node) for q in p.propose(2)] == [("|W| * ‖X‖", 2)]
    assert any("there is no node 42" in e.message for e in p.errors)
    p.propose(2)
    assert "there is no node 42" in user_prompt(server.chat_requests[1])
    assert p.graph.find("|W| * ‖X‖").id == leaf
    assert [(q.text, q.node) for q in p.propose(2)] == [("G", 0)]  # node `leaf` is |W| * ‖X‖
    p.propose(2)
    assert f"node {leaf} is a complete formula without holes" in user_prompt(server.chat_requests[3])
    assert any("only the first 8" in e.message for e in p.errors)


def test_injection_only_ever_reaches_lark(server, tmp_path, monkeypatch):
    target = tmp_path / "pwned"
    attacks = [f"__import__('os').system('touch {target}')",
               f"eval(\"__import__('os').system('touch {target}')\")",
               f"exec('open(\"{target}\", \"w\")')",
               "W + __import__('os').getcwd()",
               "lambda: 0", "{{7*7}}", "W; import os", "sympify('W')"]
    seen = {"lark": [], "eval": [], "sympy": []}
    real_parse, real_eval, real_exec = lark.Lark.parse, builtins.eval, builtins.exec

    def spy_parse(self, text, *a, **k):
        seen["lark"].append(text)
        return real_parse(self, text, *a, **k)

    def spy(name, real):
        def f(*a, **k):
            seen[name].append(a[0] if a else None)
            return real(*a, **k)
        return f

    monkeypatch.setattr(lark.Lark, "parse", spy_parse)
    monkeypatch.setattr(builtins, "eval", spy("eval", real_eval))
    monkeypatch.setattr(builtins, "exec", spy("eval", real_exec))
    monkeypatch.setattr(sympy, "sympify", spy("sympy", sympy.sympify))
    monkeypatch.setattr(sympy.parsing.sympy_parser, "parse_expr", spy("sympy", sympy.parsing.sympy_parser.parse_expr))
    server.push(Reply.text("node 2\n" + "\n".join(attacks)), Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server)
    assert p.propose(8) == []
    assert not target.exists()
    for line in attacks:
        assert line in seen["lark"], line           # the text reached the parser...
    leaked = [x for x in seen["eval"] + seen["sympy"] if isinstance(x, str) and
              any(s in x for s in ("__import__", "pwned", "lambda", "sympify"))]
    assert leaked == []                             # ...and nothing else
    assert {e.line for e in p.errors} == set(attacks)
    assert all(e.message.startswith(("syntax error", "name error", "type error")) for e in p.errors)
    assert [q.text for q in p.propose(8)] == ["|W| * ‖X‖"]  # and the search goes on


# --- endpoint failures ------------------------------------------------------------------
@pytest.mark.parametrize("reply", [Reply.text(""), Reply.text(None), Reply.text("\n \n"),
                                   Reply.text("I think a good metric is the magnitude.")])
def test_empty_or_prose_replies_are_fed_back(server, reply):
    server.push(reply)
    p = make(server)
    assert p.propose(4) == []
    assert len(server.chat_requests) == 1 and p.errors  # answered, so no retry; feedback instead


def test_garbage_bodies_are_retried(server, caplog):
    server.push(Reply.raw(b"not json{"), Reply.raw(b"<html>bad gateway</html>", "text/html"),
                Reply.json({"foo": 1}), Reply.json({"choices": []}), Reply.json([1, 2]),
                Reply.raw(b""), Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server, max_retries=6)
    with caplog.at_level(logging.WARNING, logger="prunedsl.search.llm"):
        assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖"]
    assert len(server.chat_requests) == 7
    assert sum("malformed response" in r.message for r in caplog.records) == 6


def test_slow_replies_time_out_and_are_retried(server):
    server.push(Reply.text("node 2\n|W| * hinv", delay=1.5), Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server, timeout=0.3)
    t = time.monotonic()
    assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖"]  # the slow answer is dropped
    assert time.monotonic() - t < 1.4


def test_an_answer_trickled_byte_by_byte_is_cut_off_by_the_timeout(server, caplog):
    server.fallback = Reply.trickling(0.2)  # every read gets a byte: a per-read timeout never fires
    p = make(server, timeout=1.0, max_retries=1)
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="prunedsl.search.llm"):
        assert p.endpoint.complete([{"role": "user", "content": "hi"}]) is None
    assert time.monotonic() - t < 3.5  # two attempts of 1 s each, the backoff is not slept
    assert len(server.chat_requests) == 2
    assert sum("no answer within 1 s" in r.message for r in caplog.records) == 2
    server.fallback = Reply.text("node 2\n|W| * ‖X‖")  # a fresh client after the cut-off works
    assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖"]


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_retry_after_holds_the_next_request_within_a_call_and_across_calls(server):
    fake = FakeTime()
    sent = []
    server.fallback = lambda body: (sent.append(fake.now), Reply.text("node 2\n|W| * ‖X‖"))[1]
    p = make(server, clock=fake, sleep=fake.sleep, max_retries=1)
    server.push(Reply.error(429, retry_after="2"))
    assert p.endpoint.complete([{"role": "user", "content": "a"}]) is not None
    assert sent == [1002.0]  # the retry waited the 2 s asked for
    fake.now += 0.5  # the call after a 429 that was the last attempt of its complete()
    server.push(Reply.error(429, retry_after="2"), Reply.error(503, retry_after="2"))
    assert p.endpoint.complete([{"role": "user", "content": "b"}]) is None
    assert p.endpoint.complete([{"role": "user", "content": "c"}]) is not None
    assert sent == [1002.0, 1006.5]  # 1002.5 + 2 s (retry) + 2 s (not before, across calls)


def test_5xx_are_retried_with_exponential_backoff_and_jitter(server):
    server.push(Reply.error(500), Reply.error(503), Reply.error(502), Reply.hangup(),
                Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server, max_retries=4, backoff=0.01, max_backoff=1.0)
    assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖"]
    assert len(p.endpoint.sleep) == 4
    for i, d in enumerate(p.endpoint.sleep):
        assert 0.01 * 2 ** i * 0.5 <= d <= 0.01 * 2 ** i


def test_429_respects_retry_after(server):
    server.push(Reply.error(429, retry_after="1"), Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server, sleep=time.sleep)
    assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖"]
    first, second = server.chat_requests
    assert second["time"] - first["time"] >= 0.95


def test_429_retry_after_is_capped_and_dates_are_read(server):
    server.push(Reply.error(429, retry_after="3600"),
                Reply.error(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),  # in the past
                Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server, max_retry_after=0.5)
    assert len(p.propose(2)) == 1
    assert p.endpoint.sleep == [0.5, 0.0]


def test_client_errors_are_not_retried(server, caplog):
    server.push(Reply.error(401))
    p = make(server, max_retries=3)
    with caplog.at_level(logging.ERROR, logger="prunedsl.search.llm"):
        assert p.propose(2) == []
    assert len(server.chat_requests) == 1 and p.endpoint.sleep == []
    assert "HTTP 401" in caplog.text and "OPENAI_API_KEY" in caplog.text


def test_dead_endpoint_degrades_to_no_proposals_and_recovers(server, caplog):
    server.push(Reply.text("node 2\n|W| * ‖X‖"))
    now = [1000.0]  # a fake clock: the cooldown passes when the test says so, not by sleeping
    p = make(server, breaker_threshold=2, breaker_cooldown=0.5, max_retries=1, clock=lambda: now[0])
    (prop,) = p.propose(2)
    p.observe([Outcome(prop, ok=True, val_ppl=30.0, proxy=0.1)])
    port = server.port
    server.stop()  # the endpoint dies mid-search
    other = [Proposal("magnitude", "seed")]
    found = []
    with caplog.at_level(logging.INFO, logger="prunedsl.search.llm"):
        for _ in range(4):  # a search loop: the LLM gives nothing, the others go on
            found += p.propose(2) + other
    assert found == other * 4
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "cannot connect" in errors[0].message
    assert "not calling it again for 0.5 s" in errors[1].message
    assert len(p.endpoint.sleep) == 2  # two failed calls with one retry each; then the breaker is open
    assert p.graph.best().text == "|W| * ‖X‖"  # nothing learnt was lost
    json.dumps(p.state())
    with FakeOpenAI(port=port) as again:  # back up, same address
        again.push(Reply.text("node 2\n|W| * hinv"))
        now[0] += 0.4  # still inside the 0.5 s cooldown: the endpoint is not asked
        assert p.propose(2) == [] and again.chat_requests == []
        now[0] += 0.2
        assert [q.text for q in p.propose(2)] == ["|W| * hinv"]
        assert "|W| * ‖X‖\n  scores: val ppl 30" in user_prompt(again.chat_requests[0])


def test_a_bug_inside_the_proposer_does_not_escape(server, monkeypatch, caplog):
    server.push(Reply.text("node 2\n|W| * ‖X‖"))
    p = make(server)
    monkeypatch.setattr(p, "_digest", lambda text: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="prunedsl.search.llm"):
        assert p.propose(2) == []
    assert "ZeroDivisionError" in caplog.text
    p.observe([Outcome(Proposal("|W|", "llm"), ok=True), "not an outcome"])  # no raise either


# --- outcomes and resume ----------------------------------------------------------------
def test_outcomes_update_the_graph_and_the_next_prompt(server):
    server.push(Reply.text("node 2\n|W| * ‖X‖\n|W| * hinv\n|W| * ‖X‖ ^ 2"),
                Reply.text("node 2\n|W| * ‖X‖\n|W| * ‖X‖₁"))
    p = make(server)
    a, b, c = p.propose(3)
    p.observe([Outcome(a, ok=True, val_ppl=30.0, proxy=0.1, canonical="|W|*‖X‖"),
               Outcome(b, ok=False, error="non-finite scores: inf in layer 0"),
               Outcome(c, ok=True, duplicate_of="|W| * ‖X‖", val_ppl=30.0),
               Outcome(Proposal("W", "evolve"), ok=True, val_ppl=1.0)])  # not ours: ignored
    assert [q.text for q in p.propose(3)] == ["|W| * ‖X‖₁"]
    prompt = user_prompt(server.chat_requests[1])
    leaf = p.graph.find("|W| * ‖X‖").id
    assert "formula: |W| * ‖X‖\n  scores: val ppl 30, proxy 0.1" in prompt  # the compact view (the default)
    assert f"node {leaf}:" not in prompt  # a complete formula has no id to name
    from prunedsl.search.prompt import build_messages
    tree = build_messages(p.graph, [], 3, view="tree")[1]["content"]  # the earlier view
    assert f"node 2: |W| * ?Col   [best ppl 30 (node {leaf})" in tree
    assert "non-finite scores: inf in layer 0" in prompt and "ranks weights exactly like" in prompt
    assert "Best complete formula so far (val ppl 30, proxy 0.1)" in prompt and "\n  |W| * ‖X‖\n" in prompt
    assert any("already evaluated" in e.message and str(leaf) not in e.message for e in p.errors)
    assert p.graph.best().val_ppl == 30.0


def test_state_round_trip_resumes_graph_and_queue_not_what_was_handed_out(server):
    server.push(Reply.text("node 2\n|W| * ‖X‖\n|W| * hinv\n|W| * ‖X‖₁\n|W| * std(X)"))
    p = make(server)
    a, b = p.propose(2)
    p.observe([Outcome(a, ok=True, val_ppl=30.0, proxy=0.1)])  # b is still being evaluated
    state = json.loads(json.dumps(p.state()))
    q = LLMProposer(base_url="http://127.0.0.1:9/v1", model=MODEL, max_retries=0, sleep=Sleeps())
    q.load_state(state)
    assert q.graph.graph_text() == p.graph.graph_text()
    # b is the engine's (saved in its pending list): not handed out a second time
    assert [x.text for x in q.propose(3)] == ["|W| * ‖X‖₁", "|W| * std(X)"]
    assert q.graph.best().text == "|W| * ‖X‖"
    q.observe([Outcome(b, ok=True, val_ppl=31.0, proxy=0.2)])  # the engine observes it after resuming
    assert q.graph.find("|W| * hinv").val_ppl == 31.0


# --- CLI options ------------------------------------------------------------------------
def test_cli_arguments():
    parser = argparse.ArgumentParser()
    add_llm_arguments(parser.add_argument_group("LLM proposer"))
    args = parser.parse_args(["--llm-base-url", "http://127.0.0.1:8000/v1", "--llm-model", "m",
                              "--llm-timeout", "5", "--llm-max-retries", "0", "--llm-temperature", "0"])
    p = LLMProposer.from_args(args, sleep=Sleeps())
    e = p.endpoint
    assert (e.base_url, e.model, e.timeout, e.max_retries, e.temperature) == \
        ("http://127.0.0.1:8000/v1", "m", 5.0, 0, 0.0)
    defaults = parser.parse_args([])
    assert (defaults.llm_timeout, defaults.llm_max_retries, defaults.llm_temperature) == (300.0, 4, 0.7)
    for bad in (["--llm-timeout", "0"], ["--llm-max-retries", "-1"], ["--llm-temperature", "3"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_seed_metrics_scored_by_the_engine_become_baselines_in_the_graph(server):
    server.push(Reply.text("node 2\n|W| * ‖X‖\n|W| * ‖X‖ ^ 0.5"))
    p = make(server)
    p.observe([Outcome(Proposal("wanda", "seed", note="wanda"), ok=True, proxy=0.2, val_ppl=31.0),
               Outcome(Proposal("magnitude", "seed", note="magnitude"), ok=True, proxy=0.4),
               Outcome(Proposal("pruner_zero", "seed", note="pruner_zero"), ok=False,
                       error="search error: G is not available in this run")])
    wanda = p.graph.find("|W| * ‖X‖")
    assert wanda.name == "wanda" and wanda.origin == "library" and wanda.parents == [2]
    assert p.graph.nodes[0].best_ppl == 31.0 and p.graph.path(p.graph.find("|W|").id)[0] == 0
    assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖ ^ 0.5"]  # wanda is scored already
    prompt = user_prompt(server.chat_requests[0])
    assert "wanda = |W| * ‖X‖\n    scores: val ppl 31, proxy 0.2" in prompt  # a worked example, measured
    assert "`pruner_zero`:" in prompt and "G is not available" in prompt
    assert p.graph.find("|W| ^ 2 * minmax(G)").status == "error"
    assert any(e.line == "|W| * ‖X‖" and "already evaluated" in e.message for e in p.errors)
