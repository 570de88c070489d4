"""One OpenAI-compatible chat endpoint, called so that failures never escape.

    chat = ChatEndpoint(base_url="http://127.0.0.1:8000/v1", model=None, timeout=60)
    text = chat.complete(messages)   # the answer, or None (logged) after retries

Timeouts, connection errors, 429, 5xx and malformed bodies are retried with exponential
backoff and jitter (``Retry-After`` / ``retry-after-ms`` respected, capped); other 4xx
are not (a wrong key or model does not get better). A ``Retry-After`` is also kept
as a "not before" time for the next ``complete()``: no request is sent before it.

Each attempt (listing the models on the first call, then the chat request) runs in a
worker thread and is given ``timeout`` seconds of wall-clock time in all, whatever the
server does (an answer trickled a byte at a time resets the client's per-read timeout,
not this one); on expiry the client is closed, so the worker's socket is, and a fresh one
is made for the next attempt. So one ``complete()`` takes at most
``(max_retries + 1) * timeout + max_retries * max(max_backoff, max_retry_after)
+ max_retry_after`` seconds (the last term: a pending "not before"). After ``breaker_threshold`` failed
calls in a row a circuit breaker stops calling for a cooldown (doubling up to 10 min),
so a dead endpoint costs the search nothing but a logged error. ``outage()`` says how long
the endpoint has been failing and how long until it may be called again: the engine
waits for it instead of counting the rounds without proposals (``engine.py``). The ``openai`` client is
created lazily with ``max_retries=0``: retries are done here, where they are visible.
"""
from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from typing import Any, Callable

from ..llm_contract import GRAMMAR_FIELD

log = logging.getLogger("prunedsl.search.llm")

DUMMY_KEY = "sk-no-key-needed"   # local servers ignore the key; the client insists on one
RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx
MAX_COOLDOWN = 600.0


class _BadResponse(Exception):
    """A 200 answer without a chat message in it."""


class _Overdue(Exception):
    """The attempt took longer than the timeout in wall-clock time."""


class Breaker:
    """Closed → open after ``threshold`` failed calls in a row; after the cooldown one call
    is let through (half-open): success closes it, failure reopens it for twice as long."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float]):
        self.threshold, self.base, self.cooldown, self.clock = threshold, cooldown, cooldown, clock
        self.failures, self.open_until, self.open_for = 0, 0.0, 0.0

    def allow(self) -> bool:
        return self.clock() >= self.open_until

    def success(self) -> None:
        self.failures, self.cooldown = 0, self.base

    def failure(self) -> bool:
        """Count a failed call; True when this opens the breaker."""
        self.failures += 1
        if self.failures < self.threshold:
            return False
        self.open_for = self.cooldown
        self.open_until = self.clock() + self.open_for
        self.cooldown = min(self.cooldown * 2, MAX_COOLDOWN)
        return True


def retry_after(err: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` seconds or date)."""
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _content(resp: Any) -> str:
    choices = getattr(resp, "choices", None)
    if not choices or not isinstance(choices, list):
        raise _BadResponse(f"no choices in the response ({type(resp).__name__})")
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if content is not None and not isinstance(content, str):
        raise _BadResponse("the message content is not text")
    return content or ""


def preview(text: str, n: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n] + "…"


class ChatEndpoint:
    def __init__(self, *, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, timeout: float = 300.0, max_retries: int = 4,
                 temperature: float = 0.7, max_tokens: int = 512, backoff: float = 1.0,
                 max_backoff: float = 30.0, max_retry_after: float = 60.0,
                 breaker_threshold: int = 3, breaker_cooldown: float = 60.0,
                 extra_body: dict | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None):
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.model = model  # None: the first model the endpoint lists
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or DUMMY_KEY
        self.timeout, self.max_retries, self.temperature = timeout, max_retries, temperature
        self.max_tokens, self.backoff, self.max_backoff = max_tokens, backoff, max_backoff
        self.max_retry_after = max_retry_after
        self.extra_body = extra_body  # e.g. a grammar switch the offline server understands
        self.sleep, self.rng = sleep, random.Random(seed)
        self.clock = clock
        self.breaker = Breaker(breaker_threshold, breaker_cooldown, clock)
        self.failing_since: float | None = None  # clock() of the first failed call in a row
        self._client = None
        self._not_before = 0.0  # clock() before which no request is sent (a Retry-After)
        self._picked = False  # the model name was settled against the endpoint's list

    @property
    def where(self) -> str:
        return self.base_url or "(OPENAI_BASE_URL / api.openai.com)"

    def available(self) -> bool:
        """False while the breaker is open (the endpoint failed repeatedly)."""
        return self.breaker.allow()

    def outage(self) -> tuple[float, float] | None:
        """None when the last call succeeded (or none was made, or it was rejected with a
        4xx that retrying cannot fix); else ``(wait, down)``: the
        seconds until the breaker lets a call through (0 when it is closed) and the seconds
        since the first of the failed calls in a row."""
        if self.failing_since is None:
            return None
        now = self.clock()
        return max(0.0, self.breaker.open_until - now), now - self.failing_since

    def _client_or_raise(self):
        if self._client is None:
            from openai import OpenAI  # only search/ imports openai, and only when used
            self._client = OpenAI(base_url=self.base_url, api_key=self.api_key,
                                  timeout=self.timeout, max_retries=0)  # retries are ours
        return self._client

    def _delay(self, attempt: int, asked: float | None) -> float:
        if asked is not None:
            return min(asked, self.max_retry_after)
        return min(self.max_backoff, self.backoff * 2 ** attempt) * self.rng.uniform(0.5, 1.0)

    def _pick_model(self, client) -> None:
        """On the first call. No model given: the first the endpoint lists (local servers
        usually serve one). prunedsl's own server (``prunedsl serve-llm``) also lists
        ``<model>+reply``, decoding constrained to the reply format the proposer reads, so
        that variant is taken, for a given name too (``--llm-model smollm2-135m``)."""
        import openai
        given = self.model
        try:
            ids = [m.id for m in client.models.list(timeout=self.timeout).data]
        except openai.APIStatusError:
            if given is None:
                raise
            ids = []  # an endpoint without /models: the given name as it is
        if given is None:
            if not ids:
                raise _BadResponse("the endpoint lists no models; pass --llm-model")
            self.model = next((i for i in ids if i.endswith("+reply")), ids[0])
        elif "+" not in given and f"{given}+reply" in ids:
            self.model = f"{given}+reply"
        self._picked = True
        if self.model != given:
            log.info("LLM model: %s (of the ones %s lists%s)", self.model, self.where,
                     "; decoding constrained to the reply format" if self.model.endswith("+reply") else "")

    def speaks_prunedsl(self) -> bool:
        """Whether the endpoint is prunedsl's own server decoding to the reply format (the
        ``+reply`` model it lists, or the grammar field in ``extra_body``): only it knows
        ``prunedsl_*`` fields, other servers reject unknown fields."""
        return (self.model or "").endswith("+reply") or \
            (self.extra_body or {}).get(GRAMMAR_FIELD) == "reply"

    def _once(self, messages: list[dict], fields: dict | None = None, seed: int | None = None) -> str:
        client = self._client_or_raise()
        if not self._picked:
            self._pick_model(client)
        body = dict(self.extra_body or {})
        if fields and self.speaks_prunedsl():  # what the server checks a reply against
            body.update(fields)
        extra = {"extra_body": body} if body else {}
        if seed is not None:
            extra["seed"] = seed
        resp = client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature,
            max_tokens=self.max_tokens, timeout=self.timeout, **extra)
        return _content(resp)

    def _bounded(self, messages: list[dict], fields: dict | None = None, seed: int | None = None) -> str:
        """``_once`` given ``timeout`` seconds of real time in all, not per socket read."""
        done, outcome = threading.Event(), {}

        def attempt():
            try:
                outcome["text"] = self._once(messages, fields, seed)
            except BaseException as err:  # handed to the caller's thread
                outcome["error"] = err
            finally:
                done.set()

        threading.Thread(target=attempt, daemon=True, name="llm-request").start()
        if not done.wait(self.timeout):
            client, self._client = self._client, None  # the next attempt gets a fresh one
            if client is not None:
                try:
                    client.close()  # closes the worker's socket: its next read fails, it ends
                except Exception:  # best effort; the worker is a daemon either way
                    pass
            raise _Overdue()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["text"]

    def _wait_not_before(self) -> None:
        wait = self._not_before - self.clock()
        if wait > 0:
            log.info("LLM endpoint %s asked to wait; waiting %.2f s", self.where, wait)
            self.sleep(wait)

    def complete(self, messages: list[dict], fields: dict | None = None, seed: int | None = None) -> str | None:
        """The model's answer, or None after retries (logged; counted by the breaker).
        ``fields``: ``prunedsl_*`` body fields, sent to prunedsl's own server only (the
        offered sketches, the formulas seen); ``seed``: OpenAI's sampling seed (the same for
        the retries of this call)."""
        import openai
        last, started, retryable = "unknown error", self.clock(), True
        self._wait_not_before()
        for attempt in range(self.max_retries + 1):
            asked = None
            try:
                text = self._bounded(messages, fields, seed)
                self.breaker.success()
                self.failing_since = None
                return text
            except openai.APIStatusError as err:
                status = err.status_code
                last = f"HTTP {status}: {preview(getattr(err, 'message', '') or str(err), 200)}"
                if status < 500 and status not in RETRY_STATUS:
                    hint = {401: "check OPENAI_API_KEY", 403: "check OPENAI_API_KEY",
                            404: "check --llm-base-url (usually ends in /v1) and --llm-model"}
                    last += f" ({hint.get(status, 'the request was rejected')})"
                    retryable = False
                    break
                asked = retry_after(err)
                if asked is not None:  # for the next complete() too
                    self._not_before = self.clock() + min(asked, self.max_retry_after)
            except (openai.APITimeoutError, _Overdue):
                last = f"no answer within {self.timeout:g} s"
            except openai.APIConnectionError as err:
                last = f"cannot connect ({preview(str(err), 200)})"
            except (openai.OpenAIError, _BadResponse, ValueError) as err:  # bad JSON is a ValueError
                last = f"malformed response ({preview(str(err), 200)})"
            if attempt < self.max_retries:
                delay = self._delay(attempt, asked)
                log.warning("LLM request to %s failed: %s; retry %d/%d in %.2f s", self.where, last,
                            attempt + 1, self.max_retries, delay)
                self.sleep(delay)
        if not retryable:  # a rejected request is no outage: waiting would not help
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = started
        opened = self.breaker.failure()
        log.error("LLM endpoint %s failed: %s. The search continues without LLM proposals%s.",
                  self.where, last, f"; not calling it again for {self.breaker.open_for:g} s" if opened else "")
        return None
