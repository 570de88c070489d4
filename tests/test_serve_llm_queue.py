"""serve-llm serves one request at a time: a bounded queue (503 + Retry-After when full or
waited too long), cancellation when the client disconnects (queued: never generated;
running: stopped before the next token), and a bound on generation time (issue #17).

Loopback only; fake generators (a slow fake for the queue, the real decoding loop on a
slow random-logits model for cancellation and the time bound); every wait is bounded."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")

from serve_fakes import MODEL, FakeModel  # noqa: E402

from prunedsl.serve.generate import NO_LIMITS, GenerationCancelled, Limits  # noqa: E402
from prunedsl.serve.queue import ClientGone, GenerationQueue, QueueFull, QueueTimeout  # noqa: E402
from prunedsl.serve.sampling import Completion, SamplingParams  # noqa: E402

TOKEN_S = 0.02   # the slow fake's time per token


class SlowFake:
    """A generator that takes TOKEN_S per token and honours ``Limits`` between tokens,
    recording which requests (the user message's text) it generated and how each ended."""

    spec, context = MODEL, 4096

    def __init__(self):
        self.calls: list[str] = []
        self.ended: dict[str, tuple[str, int]] = {}  # label -> (how, tokens)
        self.messages: list[list[dict]] = []

    def prompt_ids(self, messages):
        self.messages.append(messages)
        return [ord(c) for c in messages[-1]["content"]]

    def generate(self, ids, params, limits=NO_LIMITS):
        label = "".join(map(chr, ids))
        self.calls.append(label)
        for i in range(params.max_tokens):
            if limits.cancelled():
                self.ended[label] = ("cancelled", i)
                raise GenerationCancelled(f"cancelled after {i} tokens")
            if limits.expired():
                self.ended[label] = ("time", i)
                return _completion(ids, i, "time")
            time.sleep(TOKEN_S)
        self.ended[label] = ("budget", params.max_tokens)
        return _completion(ids, params.max_tokens, "budget")


def _completion(ids, n, ended):
    return Completion(text="|W|", finish_reason="length", prompt_tokens=len(ids), completion_tokens=n,
                      prefill_s=0.0, decode_s=n * TOKEN_S, sampled_tokens=n, ended_by=ended)


def _body(label: str, max_tokens: int) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": label}],
                       "max_tokens": max_tokens}).encode()


def _post(srv, label: str, max_tokens: int = 5, timeout: float = 30):
    req = urllib.request.Request(f"{srv.url}/chat/completions", data=_body(label, max_tokens), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def _post_in_thread(srv, label: str, max_tokens: int = 5) -> dict:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("reply", _post(srv, label, max_tokens)), daemon=True)
    t.start()
    out["thread"] = t
    return out


def _send_raw(srv, label: str, max_tokens: int) -> socket.socket:
    """Send a request on a raw socket (closing it is the client disconnecting)."""
    body = _body(label, max_tokens)
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def _wait_until(condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def _queue(srv) -> GenerationQueue:
    return srv.server.config.app.state.queue


@pytest.fixture
def fake():
    return SlowFake()


def _server(gen, **kw):
    from prunedsl.serve.app import start_server
    return start_server(gen, max_tokens_limit=1000, **kw)


# --- the queue over HTTP ---------------------------------------------------------------------
def test_a_full_queue_is_a_503_with_retry_after(fake):
    with _server(fake, max_queue=1) as srv:
        a = _post_in_thread(srv, "A", max_tokens=60)  # ~1.2 s
        _wait_until(lambda: fake.calls == ["A"], what="A to start")
        b = _post_in_thread(srv, "B")
        _wait_until(lambda: _queue(srv).waiting == 1, what="B to queue")
        code, headers, payload = _post(srv, "C")
        assert code == 503 and payload["error"]["code"] == "queue_full", payload
        assert int(headers.get("Retry-After")) >= 1 and "--max-queue 1" in payload["error"]["message"]
        for r in (a, b):
            r["thread"].join(15)
            assert r["reply"][0] == 200, r["reply"]
    assert fake.calls == ["A", "B"]  # C was never generated


def test_a_request_that_waits_too_long_is_a_503_and_never_generated(fake):
    with _server(fake, queue_timeout=0.3) as srv:
        a = _post_in_thread(srv, "A", max_tokens=60)
        _wait_until(lambda: fake.calls == ["A"], what="A to start")
        t0 = time.monotonic()
        code, headers, payload = _post(srv, "B")
        waited = time.monotonic() - t0
        assert code == 503 and payload["error"]["code"] == "queue_timeout", payload
        assert int(headers.get("Retry-After")) >= 1 and 0.25 < waited < 1.0, waited
        assert "one at a time" in payload["error"]["message"]
        a["thread"].join(15)
        assert a["reply"][0] == 200 and _queue(srv).waiting == 0
    assert fake.calls == ["A"]


def test_a_disconnected_clients_queued_request_is_never_generated(fake):
    with _server(fake) as srv:
        a = _post_in_thread(srv, "A", max_tokens=75)  # ~1.5 s
        _wait_until(lambda: fake.calls == ["A"], what="A to start")
        sock = _send_raw(srv, "B", 5)
        _wait_until(lambda: _queue(srv).waiting == 1, what="B to queue")
        sock.close()
        _wait_until(lambda: _queue(srv).waiting == 0, what="B to leave the queue")
        assert a["thread"].is_alive()  # B left while A was still generating
        a["thread"].join(15)
        assert a["reply"][0] == 200
        assert _post(srv, "D")[0] == 200  # the slot was not lost with B
    assert fake.calls == ["A", "D"]


def test_a_running_generation_stops_when_its_client_disconnects(fake):
    with _server(fake) as srv:
        sock = _send_raw(srv, "A", 1000)  # 20 s if nobody stops it
        _wait_until(lambda: fake.calls == ["A"], what="A to start")
        t0 = time.monotonic()
        sock.close()
        _wait_until(lambda: "A" in fake.ended, timeout=5, what="A to stop")
        how, tokens = fake.ended["A"]
        assert how == "cancelled" and tokens < 200 and time.monotonic() - t0 < 2
        assert _post(srv, "B")[0] == 200
    assert fake.calls == ["A", "B"]


def test_the_generation_time_bound_returns_what_was_generated(fake):
    with _server(fake, max_generation_seconds=0.3) as srv:
        code, _, payload = _post(srv, "A", max_tokens=1000)
    assert code == 200 and payload["choices"][0]["finish_reason"] == "length"
    assert payload["prunedsl"]["ended_by"] == "time" and 0 < payload["usage"]["completion_tokens"] < 1000


def test_the_default_system_prompt_is_the_shared_one(fake):
    from prunedsl.llm_prompt import language_summary
    from prunedsl.serve.prompts import system_prompt
    with _server(fake) as srv:
        body = {"model": MODEL + "+formula", "messages": [{"role": "user", "content": "A"}], "max_tokens": 2}
        req = urllib.request.Request(f"{srv.url}/chat/completions", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
    system = fake.messages[-1][0]
    assert system == {"role": "system", "content": system_prompt("formula")}
    assert language_summary() in system["content"]


# --- the queue alone ---------------------------------------------------------------------------
async def _never_gone() -> bool:
    return False


def test_the_queue_serves_in_order_and_bounds_the_wait():
    async def main():
        q, order = GenerationQueue(max_queue=2, queue_timeout=5), []

        async def job(name, hold):
            async with q.slot(_never_gone):
                order.append(name)
                await asyncio.sleep(hold)

        first = asyncio.create_task(job("a", 0.2))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(job(n, 0.01)) for n in "bc"]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as full:
            await job("d", 0)
        assert full.value.retry_after >= 1
        await asyncio.gather(first, *rest)
        assert order == ["a", "b", "c"] and q.waiting == 0

        q = GenerationQueue(max_queue=2, queue_timeout=0.1)
        hold = asyncio.create_task(job("e", 0.5))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueTimeout):
            async with q.slot(_never_gone):
                order.append("never")
        gone = {"now": False}

        async def is_gone():
            return gone["now"]
        waiter = asyncio.create_task(q.slot(is_gone).__aenter__())
        await asyncio.sleep(0.02)
        gone["now"] = True
        with pytest.raises(ClientGone):
            await waiter
        await hold
        assert q.waiting == 0 and not q._busy and "never" not in order

    asyncio.run(asyncio.wait_for(main(), 20))


# --- the real decoding loop ----------------------------------------------------------------------
class SlowModel(FakeModel):
    """Random logits, TOKEN_S a forward pass, counting the passes."""

    calls = 0

    def __call__(self, *a, **kw):
        self.calls += 1
        time.sleep(TOKEN_S)
        return super().__call__(*a, **kw)


@pytest.fixture(scope="module")
def slow_gen():
    from serve_fakes import fake_generator, smollm2_tokenizer
    try:
        smollm2_tokenizer()
    except Exception as err:  # the GGUF package is not installed
        pytest.skip(str(err))
    return fake_generator(SlowModel)


PROMPT_IDS = [1, 2, 3, 4]


def test_the_decoding_loop_stops_when_cancelled(slow_gen):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    slow_gen.model.calls = 0
    with pytest.raises(GenerationCancelled):
        slow_gen.generate(PROMPT_IDS, SamplingParams(max_tokens=500, seed=0), Limits(cancel=cancel))
    assert 3 < slow_gen.model.calls < 100  # stopped within a token or two of the cancel
    assert not slow_gen.lock.locked()


@pytest.mark.parametrize("grammar", [None, "formula", "reply"])
def test_the_decoding_loop_cuts_at_the_deadline(slow_gen, grammar):
    from prunedsl.serve.replies import check_reply
    p = SamplingParams(max_tokens=500, seed=1, grammar=grammar, temperature=1.0)
    t0 = time.monotonic()
    c = slow_gen.generate(PROMPT_IDS, p, Limits(deadline=time.monotonic() + 0.3))
    assert time.monotonic() - t0 < 3
    if c.ended_by == "time":
        assert c.finish_reason == "length" and c.attempts == 1 and c.completion_tokens < 500
    else:  # a constrained reply may end (eos, grammar) before the deadline
        assert grammar is not None and c.ended_by in ("eos", "grammar", "closer", "fallback")
    if grammar and c.text:
        assert check_reply(c.text, grammar)[0], c.text  # still parses: closed, not cut mid-formula


def test_a_disconnect_stops_the_real_generation(slow_gen):
    with _server(slow_gen) as srv:
        slow_gen.model.calls = 0
        sock = _send_raw(srv, "Propose a metric.", 1000)  # 20 s if nobody stops it
        _wait_until(lambda: slow_gen.model.calls > 3, what="generation to start")
        sock.close()
        _wait_until(lambda: not slow_gen.lock.locked(), timeout=5, what="the generation to stop")
        assert slow_gen.model.calls < 200


# --- the command line ------------------------------------------------------------------------------
def _parser():
    import argparse

    from prunedsl.serve import add_parser
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_queue_options_and_help_say_one_at_a_time(capsys):
    parser = _parser()
    args = parser.parse_args(["serve-llm"])
    assert (args.max_queue, args.queue_timeout, args.max_generation_seconds) == (8, 60.0, 180.0)
    args = parser.parse_args(["serve-llm", "--max-queue", "0", "--queue-timeout", "5", "--max-generation-seconds", "9"])
    assert (args.max_queue, args.queue_timeout, args.max_generation_seconds) == (0, 5.0, 9.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve-llm", "--help"])
    assert "served one at a time" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv, message", [
    (["--max-queue", "-1"], "--max-queue must be at least 0"),
    (["--queue-timeout", "0"], "--queue-timeout must be a positive number"),
    (["--max-generation-seconds", "nan"], "--max-generation-seconds must be a positive number"),
])
def test_cli_rejects_bad_queue_options_before_loading_a_model(argv, message):
    from prunedsl.errors import PruneRuntimeError
    args = _parser().parse_args(["serve-llm", "--model", "/nonexistent.gguf", *argv])
    with pytest.raises(PruneRuntimeError, match=message):
        args.handler(args)
