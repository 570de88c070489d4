"""``prunedsl serve-llm``: grammar derivation, constrained decoding, protocol, HTTP server.

Fast tests use the real SmolLM2 tokenizer (read from the GGUF file, ~10 s once) with a
fake model that returns random logits: every constrained reply must still parse. The
``slow`` tests load the real model once and talk to the server with the openai client.
Checking and resampling replies: ``test_serve_llm_resample.py``.

    pytest tests/test_serve_llm.py -m "not slow"     # ~1 min
    pytest tests/test_serve_llm.py                   # + real model, a few minutes on 2 cores
"""
from __future__ import annotations

import json
import logging
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("llguidance")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")

from lark import Lark  # noqa: E402
from serve_fakes import MODEL, fake_generator, smollm2_tokenizer  # noqa: E402

from prunedsl.dsl.parser import GRAMMAR_PATH, parse_expr  # noqa: E402
from prunedsl.dsl.printer import to_text  # noqa: E402
from prunedsl.serve import constrained  # noqa: E402
from prunedsl.reply_guard import MAX_SIGNIFICANT, significant_digits  # noqa: E402
from prunedsl.serve.constrained import MODES, GrammarDerivationError, grammar_text, significant_mantissa  # noqa: E402
from prunedsl.serve.replies import check_reply, split_reply  # noqa: E402
from prunedsl.serve.generate import Generator, SamplingParams  # noqa: E402
from prunedsl.serve.sampling import sample as _sample  # noqa: E402
from prunedsl.serve.protocol import ApiError, parse_chat_request  # noqa: E402

PROMPT = [{"role": "user", "content": "Propose a pruning metric formula."}]


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    try:
        return smollm2_tokenizer()
    except Exception as err:  # the GGUF package is not installed
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def fake_gen(tokenizer):
    return fake_generator()


@pytest.fixture(scope="module")
def fake_server(fake_gen):
    from prunedsl.serve.app import start_server
    with start_server(fake_gen, max_tokens_limit=64) as srv:
        yield srv


# --- grammar derivation --------------------------------------------------------------------
def test_derived_grammars_follow_the_dialect_rules():
    f, r = grammar_text("formula"), grammar_text("reply")
    for g in (f, r):
        assert "(?!" not in g and r"\d" not in g and "%import" not in g and "?expr" not in g
        assert re.search(r"^NUMBER: /.*\{1,5\}.*\{1,1\}.*/$", g, re.M)  # bounded digits and exponent
        assert '%ignore " "' in g and "COMMENT" not in g
    assert "HOLE" not in f and "HOLE: /\\?(Mat|Row|Col|Scalar|c)/" in r
    assert "start: expr_t" in f and "atom_u:" in f and "SCALAR_NAME:" in f  # an operand is required
    assert r.startswith("//") and "NODE_LINE" in r and "{0,7}" in r


@settings(max_examples=300, deadline=None)
@given(st.from_regex(significant_mantissa(), fullmatch=True))
def test_grammar_numbers_have_the_significant_digits_the_reply_check_allows(text):
    assert significant_digits(float(text)) <= MAX_SIGNIFICANT, text


def test_grammar_numbers_examples():
    rx = re.compile(significant_mantissa())
    for ok in ("0", "5", "12345", "0.00125", ".5", "3.1416", "282.8", "1.5"):
        assert rx.fullmatch(ok), ok
    for bad in ("123456", "1.156054", "0.1234567", "00.5", "1."):  # `1.` is list numbering
        assert not rx.fullmatch(bad), bad


def test_offered_nodes_make_the_node_line_required_and_narrow():
    g = constrained.reply_grammar_for((3, 0, 3))
    assert 'start: NODE_LINE "\\n" reply_line' in g and 'NODE_LINE: "node 0" | "node 3"' in g
    assert g.replace('start: NODE_LINE "\\n"', 'start: (NODE_LINE "\\n")?').split("NODE_LINE:")[0] == \
        grammar_text("reply").split("NODE_LINE:")[0]  # nothing else changes
    with pytest.raises(GrammarDerivationError):
        constrained.reply_grammar_for(())


def test_derivation_follows_grammar_lark(monkeypatch):
    """Change grammar.lark's division operator: the constrained grammar changes with it."""
    text = GRAMMAR_PATH.read_text(encoding="utf-8").replace('product "/" unary', 'product "%" unary')
    monkeypatch.setattr(constrained, "_lark", lambda: Lark(text, parser="lalr", maybe_placeholders=True))
    grammar_text.cache_clear()
    try:
        g = grammar_text("formula")
        assert re.search(r'^\w+: "%"$', g, re.M) and not re.search(r'^\w+: "/"$', g, re.M)
    finally:
        grammar_text.cache_clear()


def test_unbounded_terminal_is_reported():
    with pytest.raises(GrammarDerivationError, match="unbounded"):
        constrained._bound_regex("WORD", "[a-z]+")
    assert constrained._bound_regex("H", r"\?(Mat|c)(?![A-Za-z])") == r"/\?(Mat|c)/"


def test_call_arities_come_from_the_dsl_tables(monkeypatch):
    g = grammar_text("formula")
    assert re.search(r'^PAIR_NAME: "max" \| "min"$', g, re.M)
    assert re.search(r'^GLOBAL_FUNC: "fro" \| "max" \| "mean" \| "min" \| "std" \| "sum"$', g, re.M)
    assert "ZERO_NAME" not in g and "hatom_star" not in g  # no f(), no third argument
    monkeypatch.setattr(constrained, "ARITY", {**constrained.ARITY, "sq": (1, 2)})
    grammar_text.cache_clear()
    try:
        assert re.search(r'^PAIR_NAME: "max" \| "min" \| "sq"$', grammar_text("formula"), re.M)
    finally:
        grammar_text.cache_clear()


def test_bounded_numbers_are_finite_and_parse():
    body = re.search(r"^NUMBER: /(.*)/$", grammar_text("formula"), re.M).group(1)
    number = re.compile(body)
    for s in ["0", "12345", "1234.5", ".5", "99999e9", "9999.9e9", "1e-9", "1e-5", "2.5", "3E+7", "0.000001"]:
        assert number.fullmatch(s), s
        assert np.isfinite(np.float32(s)) and parse_expr(s)  # scores are float32
    # at most 5 significant digits (the reply check's bound), a 1-digit exponent
    for s in ["123456", "123456.123456", "1.123456", "1e10", "1e-99", "1e100", "1e+123"]:
        assert not number.fullmatch(s), s
    # `2.` is a number to the language but not to the server: `1.` is a list number there
    assert parse_expr("2. * W") and not number.fullmatch("2.") and not number.fullmatch("1.e5")


def test_known_names_come_from_the_dsl_tables():
    names = constrained.known_names()
    assert {"W", "G", "hinv", "wanda", "ria"} <= set(names.variables) and "X" not in names.variables
    assert {"sqrt", "row_sum", "mean"} <= set(names.functions) and not {"norm", "var", "ria"} & set(names.functions)
    assert names.scalars == ("n_in", "n_out")
    assert "a" in names.params and "ria" in names.param_functions
    assert set(names.x_statistics) == {"norm(X)", "norm(X, 1)", "norm(X, inf)", "mean(X)", "std(X)", "var(X)"}


def test_split_and_check_reply():
    assert split_reply("node 3\n|W|\n?Mat * ‖X‖\n") == (3, ["|W|", "?Mat * ‖X‖"], [])
    assert split_reply("W") == (None, ["W"], [])
    assert check_reply("|W| * ‖X‖", "formula") == (True, True, None)
    ok, typed, err = check_reply("sqrt(W)", "formula")
    assert ok and not typed and "negative" in err
    assert check_reply("node 1\n?Mat * |W|", "reply")[:2] == (True, True)
    assert not check_reply("node 1", "reply")[0] and not check_reply("W +", "formula")[0]


# --- the grammar in llguidance -------------------------------------------------------------
def _accepts(gen, mode, text) -> bool:
    m = gen.matcher(mode)
    return m.consume_tokens(gen.tokenizer.encode(text, add_special_tokens=False)) and m.is_accepting()


@pytest.mark.parametrize("text", ["|W| * ‖X‖", "ria(a = 0.3)", "ria(0.3)", "norm(X, inf) * W ^ 2",
                                  "sqrt(|W|) / row_sum(|W|) + ‖X‖₁", "-W ^ -1", "|W| ^ (1/3)", "2 * n_in + W", "wanda", "max(G, 1e-3)",
                                  "W / max(|W|)", "sum(G) * W", "gblm(alpha = 2)", "ria(a = -0.5) + min(W, 1)",
                                  "(|W| / col_sum(|W|) + |W| / row_sum(|W|)) * ‖X‖ ^ 0.5"])
def test_matcher_accepts_formulas(fake_gen, text):
    assert _accepts(fake_gen, "formula", text)
    assert _accepts(fake_gen, "reply", "node 12\n" + text + "\n?Mat * " + text + "\n‖X‖ ^ ?c")


@pytest.mark.parametrize("text", ["foo(W)", "W X", "X", "?Mat * W", "W +", "sqrt(W", "f(a=1, 2)",
                                  "1234567", "W # comment", "ria(a = 1, 2)", "W\nW", "W ** 2", "W ^ W",
                                  "**wanda**", "2 + 3", "n_in", "sqrt(4)",
                                  # arities and Scalar results (see _narrow_calls)
                                  "min(W, G, 1)", "sum(W)", "max(|W|) + 1", "abs()", "sqrt(W, G)", "ria(W)",
                                  "ria(alpha = 1)", "gblm(a = 1)", "ria(a = W)", "ria(0.5, 1)"])
def test_matcher_rejects(fake_gen, text):
    assert not _accepts(fake_gen, "formula", text)


def test_reply_lines_may_be_numbered_and_the_number_is_not_a_formula(fake_gen):
    """Qwen 0.5B numbered its lines and the mask turned `1.` into a number
    (docs/prompt_cache.md: `node 6\n1. ^(0.5) * ‖X‖ ^ 0.5`). The reply mode allows the
    numbering before a line; the reader drops it."""
    numbered = "node 6\n1. |W| * ‖X‖ ^ 0.5\n2) ?Mat * ‖X‖\n3. 1.5 * W"
    assert _accepts(fake_gen, "reply", numbered)
    assert split_reply(numbered) == (6, ["|W| * ‖X‖ ^ 0.5", "?Mat * ‖X‖", "1.5 * W"], [])
    assert check_reply(numbered, "reply") == (True, True, None)
    for text in ("node 6\n1. ^(0.5) * ‖X‖ ^ 0.5", "1.W", "node 6\n|W| 1. W", "2. * W"):
        assert not _accepts(fake_gen, "reply", text), text
    assert not _accepts(fake_gen, "formula", "1. |W|") and _accepts(fake_gen, "formula", "1.5 * W")


@pytest.mark.parametrize("mode,max_tokens", [("formula", 8), ("formula", 24), ("reply", 40)])
def test_random_logits_still_give_replies_that_parse(fake_gen, mode, max_tokens):
    """With logits that are pure noise, the mask and the closer alone must produce text
    that lark parses, within the token budget."""
    for seed in range(40 if mode == "formula" else 25):
        c = fake_gen.generate([1, 2, 3], SamplingParams(max_tokens=max_tokens, temperature=1.0,
                                                        seed=seed, grammar=mode, max_attempts=1))
        assert c.completion_tokens <= max_tokens
        parses, _, err = check_reply(c.text, mode)
        assert parses, (c.text, err)


def test_sampler():
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 5.0, 1.0, 4.0])
    assert _sample(logits, None, SamplingParams(temperature=0), rng) == 1
    assert _sample(logits, np.array([1, 0, 1, 0], bool), SamplingParams(temperature=0), rng) == 2
    assert _sample(logits, None, SamplingParams(temperature=1.0, top_p=1e-6), rng) == 1
    draws = [_sample(logits, np.array([1, 0, 0, 1], bool), SamplingParams(temperature=1.0), rng)
             for _ in range(200)]
    assert set(draws) == {0, 3} and draws.count(3) > 150


# --- protocol ------------------------------------------------------------------------------
def _parse(body, limit=64):
    return parse_chat_request(body, model_id=MODEL, max_tokens_limit=limit, default_max_tokens=32)


def test_request_grammar_from_field_or_suffix():
    assert _parse({"model": MODEL, "messages": PROMPT}).params.grammar is None
    assert _parse({"model": MODEL + "+formula", "messages": PROMPT}).params.grammar == "formula"
    assert _parse({"model": MODEL, "messages": PROMPT, "prunedsl_grammar": "reply"}).params.grammar == "reply"
    assert _parse({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_grammar": "reply"}).params.grammar == "reply"
    req = _parse({"model": MODEL, "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}]}],
                  "max_completion_tokens": 5, "temperature": 0, "top_p": 0.5, "seed": 3, "stop": "\n"})
    assert req.messages == ({"role": "system", "content": "a"},)
    assert (req.params.max_tokens, req.params.temperature, req.params.top_p, req.params.seed,
            req.params.stop) == (5, 0.0, 0.5, 3, ("\n",))
    assert _parse({"model": MODEL, "messages": PROMPT}).params.max_tokens == 32
    assert _parse({"model": MODEL, "messages": PROMPT}).params.max_attempts == 8
    assert parse_chat_request({"model": MODEL, "messages": PROMPT}, model_id=MODEL, max_tokens_limit=8,
                              default_max_tokens=8, max_attempts=3).params.max_attempts == 3
    sk = _parse({"model": MODEL + "+reply", "messages": PROMPT,
                 "prunedsl_sketches": {"3": "|W| * ?Col", "0": "?Mat"}}).params.sketches
    assert [i for i, _ in sk] == [0, 3] and to_text(sk[1][1]) == "|W| * ?Col"
    assert _parse({"model": MODEL + "+reply", "messages": PROMPT}).params.sketches == ()
    seen = _parse({"model": MODEL + "+formula", "messages": PROMPT,
                   "prunedsl_seen": {"group": "layer", "forms": ["|W|", "|W|"]}}).params.seen
    assert (seen.group, seen.forms) == ("layer", frozenset({"|W|"}))


@pytest.mark.parametrize("body,status,param", [
    ([], 400, None),
    ({"model": MODEL}, 422, "messages"),
    ({"messages": PROMPT}, 422, "model"),
    ({"model": MODEL, "messages": []}, 422, "messages"),
    ({"model": MODEL, "messages": "hi"}, 422, "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 422, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 3}]}, 422, "messages[0].content"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
    ({"model": "gpt-4", "messages": PROMPT}, 404, "model"),
    ({"model": MODEL + "+json", "messages": PROMPT}, 404, "model"),
    ({"model": MODEL, "messages": PROMPT, "n": 2}, 400, "n"),
    ({"model": MODEL, "messages": PROMPT, "stream": True}, 400, "stream"),
    ({"model": MODEL, "messages": PROMPT, "max_tokens": 0}, 422, "max_tokens"),
    ({"model": MODEL, "messages": PROMPT, "max_tokens": 65}, 422, "max_tokens"),
    ({"model": MODEL, "messages": PROMPT, "max_tokens": "8"}, 422, "max_tokens"),
    ({"model": MODEL, "messages": PROMPT, "max_tokens": 8, "max_completion_tokens": 9}, 400, "max_completion_tokens"),
    ({"model": MODEL, "messages": PROMPT, "temperature": "hot"}, 422, "temperature"),
    ({"model": MODEL, "messages": PROMPT, "temperature": 3}, 422, "temperature"),
    ({"model": MODEL, "messages": PROMPT, "top_p": 0}, 422, "top_p"),
    ({"model": MODEL, "messages": PROMPT, "seed": 1.5}, 422, "seed"),
    ({"model": MODEL, "messages": PROMPT, "stop": ["a"] * 5}, 422, "stop"),
    ({"model": MODEL, "messages": PROMPT, "prunedsl_grammar": "json"}, 422, "prunedsl_grammar"),
    ({"model": MODEL + "+formula", "messages": PROMPT, "prunedsl_grammar": "reply"}, 400, "prunedsl_grammar"),
    ({"model": MODEL, "messages": PROMPT, "prunedsl_sketches": {"0": "?Mat"}}, 400, "prunedsl_sketches"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_sketches": {"x": "?Mat"}}, 422, "prunedsl_sketches"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_sketches": {"0": 3}}, 422, "prunedsl_sketches"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_sketches": {}}, 422, "prunedsl_sketches"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_sketches": ["?Mat"]}, 422, "prunedsl_sketches"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_sketches": {"0": "?Mat +"}}, 422, "prunedsl_sketches"),
    ({"model": MODEL, "messages": PROMPT, "prunedsl_seen": {"group": "row", "forms": []}}, 400, "prunedsl_seen"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_seen": {"group": "rows", "forms": []}}, 422,
     "prunedsl_seen"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_seen": {"group": "row", "forms": [1]}}, 422,
     "prunedsl_seen"),
    ({"model": MODEL + "+reply", "messages": PROMPT, "prunedsl_seen": ["|W|"]}, 422, "prunedsl_seen"),
    ({"model": MODEL, "messages": PROMPT, "tools": []}, 400, "tools"),
    ({"model": MODEL, "messages": PROMPT, "response_format": {"type": "json_object"}}, 400, "response_format"),
])
def test_request_errors(body, status, param):
    with pytest.raises(ApiError) as info:
        _parse(body)
    err = info.value
    assert (err.status, err.param) == (status, param), err.message
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


# --- HTTP (fake model) ---------------------------------------------------------------------
def _http(srv, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://{srv.host}:{srv.port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("method,path,body,raw,status", [
    ("POST", "/v1/chat/completions", None, b"{not json", 400),
    ("POST", "/v1/chat/completions", None, b"[" * 200_000 + b"]" * 200_000, 400),  # was a 500 (RecursionError)
    ("POST", "/v1/chat/completions", {"model": MODEL}, None, 422),
    ("POST", "/v1/chat/completions", {"model": "nope", "messages": PROMPT}, None, 404),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": PROMPT, "n": 3}, None, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": PROMPT, "stream": True}, None, 400),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": PROMPT, "max_tokens": 10_000}, None, 422),
    ("POST", "/v1/chat/completions", None, b" " * ((1 << 20) + 1), 413),
    ("GET", "/v1/chat/completions", None, None, 405),
    ("GET", "/v1/nothing", None, None, 404),
    ("GET", "/v1/models/gpt-4", None, None, 404),
])
def test_http_errors_are_openai_json(fake_server, method, path, body, raw, status):
    code, payload = _http(fake_server, method, path, body, raw)
    assert code == status
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["message"]


def test_openai_client_against_fake_model(fake_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fake_server.url, api_key="x", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL, MODEL + "+formula", MODEL + "+reply"]
    r = client.chat.completions.create(model=MODEL + "+formula", messages=PROMPT, max_tokens=12, seed=1)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 12
    parses, typed, _ = check_reply(r.choices[0].message.content, "formula")
    assert parses and r.prunedsl["valid"] == typed and 1 <= r.prunedsl["attempts"] <= 8
    r = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16, seed=2,
                                       extra_body={"prunedsl_grammar": "reply"})
    assert check_reply(r.choices[0].message.content, "reply")[0]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=PROMPT)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=MODEL, messages=PROMPT, temperature=5)


def test_response_and_log_report_the_attempts(fake_server, caplog):
    body = {"model": MODEL + "+formula", "messages": PROMPT, "max_tokens": 12, "seed": -7}  # numpy wants ≥ 0
    with caplog.at_level(logging.INFO, logger="prunedsl.serve"):
        code, payload = _http(fake_server, "POST", "/v1/chat/completions", body)
    assert code == 200, payload
    info, text = payload["prunedsl"], payload["choices"][0]["message"]["content"]
    assert set(info) == {"grammar", "attempts", "valid", "error", "lines", "valid_lines", "generated_tokens",
                         "sampled_tokens", "ended_by", "max_tokens", "rejected"}
    assert info["ended_by"] in ("eos", "grammar", "stop", "closer", "fallback", "budget")
    assert info["max_tokens"] == 12 and info["sampled_tokens"] >= 1
    assert info["grammar"] == "formula" and len(info["rejected"]) == info["attempts"] - 1
    assert info["valid"] == check_reply(text, "formula")[1] and (info["error"] is None) == info["valid"]
    assert info["generated_tokens"] >= payload["usage"]["completion_tokens"]
    assert any(f"attempts={info['attempts']} valid={info['valid']}" in r.getMessage() for r in caplog.records)
    code, payload = _http(fake_server, "POST", "/v1/chat/completions", {**body, "model": MODEL})
    assert code == 200 and payload["prunedsl"]["attempts"] == 1 and payload["prunedsl"]["valid"] is None


def test_max_tokens_is_clamped_to_the_context_left(fake_gen, caplog):
    """A prompt that fits gets max_tokens cut to the room it leaves (the search asks for
    512 whatever the prompt); only a prompt filling the context alone is an error."""
    from prunedsl.serve.app import start_server
    messages = [{"role": "system", "content": "Be brief."}] + PROMPT  # no language summary added
    n = len(fake_gen.prompt_ids(messages))
    old = fake_gen.context
    try:
        fake_gen.context = n + 5
        with start_server(fake_gen, max_tokens_limit=512) as srv, \
                caplog.at_level(logging.INFO, logger="prunedsl.serve"):
            for body in ({"model": MODEL, "messages": messages, "max_tokens": 512, "seed": 1},
                         {"model": MODEL + "+formula", "messages": messages, "max_tokens": 512, "seed": 1}):
                code, payload = _http(srv, "POST", "/v1/chat/completions", body)
                assert code == 200, payload
                assert payload["prunedsl"]["max_tokens"] == 5 and payload["usage"]["completion_tokens"] <= 5
                assert payload["usage"]["prompt_tokens"] + payload["usage"]["completion_tokens"] <= n + 5
            text = payload["choices"][0]["message"]["content"]
            assert check_reply(text, "formula")[0], text  # the closer works in the clamped budget
            assert any("clamped to 5" in r.getMessage() for r in caplog.records)
            fake_gen.context = n
            code, payload = _http(srv, "POST", "/v1/chat/completions", {"model": MODEL, "messages": messages})
            assert code == 400 and payload["error"]["code"] == "context_length_exceeded"
            assert payload["error"]["param"] == "messages" and f"{n} tokens" in payload["error"]["message"]
    finally:
        fake_gen.context = old


def test_generation_failure_is_a_500_server_error():
    from prunedsl.serve.app import start_server

    class Broken:
        spec, context = MODEL, 2048

        def prompt_ids(self, messages):
            return [1, 2, 3]

        def generate(self, ids, params, limits=None):
            raise RuntimeError("out of memory")

    with start_server(Broken()) as srv:
        code, payload = _http(srv, "POST", "/v1/chat/completions", {"model": MODEL, "messages": PROMPT})
    assert code == 500 and payload["error"]["type"] == "server_error"
    assert "out of memory" in payload["error"]["message"]


def test_server_shuts_down_cleanly(fake_gen):
    from prunedsl.serve.app import start_server
    srv = start_server(fake_gen)
    assert _http(srv, "GET", "/health")[0] == 200
    srv.stop(timeout=10)
    assert not srv.thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection((srv.host, srv.port), timeout=2).close()


def test_cli_parser_options():
    import argparse

    from prunedsl.serve import add_parser, cmd_serve_llm
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve-llm"])
    assert (args.model, args.host, args.port, args.max_tokens_limit, args.max_attempts) == \
        (MODEL, "127.0.0.1", 8000, 512, 8)
    assert args.handler is cmd_serve_llm
    args = parser.parse_args(["serve-llm", "--model", "x.gguf", "--port", "9", "--max-tokens-limit", "16",
                              "--max-attempts", "1"])
    assert (args.model, args.port, args.max_tokens_limit, args.max_attempts) == ("x.gguf", 9, 16, 1)


# --- the real model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_gen():
    from prunedsl.runtime.models import load_model
    try:
        loaded = load_model(MODEL)
    except Exception as err:
        pytest.skip(f"cannot load {MODEL}: {err}")
    gen = Generator(loaded)
    gen.warm_up()
    return gen


@pytest.fixture(scope="module")
def real_server(real_gen):
    from prunedsl.serve.app import start_server
    with start_server(real_gen) as srv:
        yield srv


@pytest.mark.slow
def test_reused_prompt_cache_gives_the_same_logits(real_gen):
    a = real_gen.prompt_ids([{"role": "system", "content": "Be brief."}, *PROMPT])
    b = real_gen.prompt_ids([{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Name a pruning metric."}])
    with torch.inference_mode():
        real_gen._prefix = None
        fresh = real_gen._prefill(b)[0].logits[0, -1]
        real_gen._prefill(a)
        reused, cached = real_gen._prefill(b)
    assert 0 < cached < len(b)
    torch.testing.assert_close(reused.logits[0, -1], fresh, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_real_model_50_constrained_formulas_parse(real_server, record_property):
    """All 50 parse (the grammar) and type-check (resampling until the checker accepts, at
    most 8 replies each; failing would need 8 ill-typed replies in a row)."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=real_server.url, api_key="x", max_retries=0, timeout=300)
    assert MODEL + "+formula" in [m.id for m in client.models.list()]
    free = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, seed=0)
    assert free.choices[0].message.content and free.usage.completion_tokens <= 8
    attempts = []
    for seed in range(50):
        r = client.chat.completions.create(model=MODEL + "+formula", messages=PROMPT, max_tokens=12,
                                           temperature=0.7, seed=seed)
        text, info = r.choices[0].message.content, r.prunedsl
        parses, typed, err = check_reply(text, "formula")
        assert parses and typed, (seed, text, err, info)
        assert info["valid"] and info["attempts"] <= 8 and len(info["rejected"]) == info["attempts"] - 1
        attempts.append(info["attempts"])
    first = attempts.count(1)
    record_property("mean_attempts", sum(attempts) / 50)
    record_property("first_attempt_type_checked_share", first / 50)
    print(f"\n50 constrained replies: all parse and type-check; mean attempts {sum(attempts) / 50:.2f}, "
          f"{first}/50 on the first attempt")


@pytest.mark.slow
def test_real_model_reply_mode_and_same_seed_same_text(real_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=real_server.url, api_key="x", max_retries=0, timeout=300)
    kw = dict(model=MODEL, messages=PROMPT, max_tokens=24, temperature=0.7, seed=7,
              extra_body={"prunedsl_grammar": "reply"})
    a, b = (client.chat.completions.create(**kw).choices[0].message.content for _ in range(2))
    assert a == b  # the second reuses the cached prompt prefix: same result
    node, lines, _ = split_reply(a)
    assert 1 <= len(lines) <= constrained.MAX_LINES and all(parse_expr(x) for x in lines)
    assert set(MODES) == {"formula", "reply"}


def test_generation_uses_the_cache_keyword_of_this_transformers(recwarn):
    """transformers 5.2x renamed past_key_values to cache (the old name warns, removed in 5.40)."""
    import inspect
    import warnings
    from prunedsl.runtime.testing import tiny_llama
    from prunedsl.serve.generate import _cache_keyword, _output_cache
    model = tiny_llama()
    kw = _cache_keyword(model)
    assert kw in inspect.signature(model.forward).parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecation on the decode path
        out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
        again = model(input_ids=torch.tensor([[4]]), **{kw: _output_cache(out)}, use_cache=True)
    assert _output_cache(again).get_seq_length() == 4
