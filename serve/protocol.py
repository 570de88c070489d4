"""The OpenAI chat-completions protocol: request validation and response bodies.

Pure functions, no HTTP and no model, so they are unit-tested alone. Errors are
``ApiError``s rendered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``:

    400  the body is not a JSON object; an unknown or unsupported parameter
         (``stream: true``, ``n > 1``, tools); grammar field and model suffix disagree;
         the prompt alone fills the model's context (``context_length_exceeded``;
         a prompt that fits gets ``max_tokens`` clamped to the room left, see app.py)
    404  unknown model (``code: model_not_found``) or path
    405  wrong method          413  body too large
    422  a known field with the wrong type or value (``messages`` missing or empty,
         ``temperature: "hot"``, ``max_tokens`` out of bounds)
    500  generation failed (``type: server_error``)
    503  the server is busy (``code: queue_full``, ``--max-queue`` requests already wait)
         or the request waited ``--queue-timeout`` seconds for its turn
         (``code: queue_timeout``); both with a ``Retry-After`` header (``queue.py``)

Grammar-constrained decoding is asked for with ``"prunedsl_grammar": "formula" | "reply"``
in the body (the openai client sends it with ``extra_body=``) or a model-name suffix,
``<model>+formula`` / ``<model>+reply``.

With the reply grammar, ``"prunedsl_sketches": {"<node id>": "<sketch>", ...}`` (at most 64)
names the sketches the prompt offers: a reply must then name one of them and refine it,
with at least one complete formula (``replies.py``); a sketch that does not parse is a 422.
``"prunedsl_seen": {"group": "row", "forms": ["|W|", ...]}`` (at most 4096 canonical forms)
makes a complete formula that ranks weights like one of them not count.

Every response has a ``prunedsl`` object besides OpenAI's fields (the openai client keeps
unknown fields: ``response.prunedsl``)::

    "prunedsl": {"grammar": "formula", "attempts": 2, "valid": true, "error": null,
                 "lines": 1, "valid_lines": 1, "generated_tokens": 23, "sampled_tokens": 21,
                 "ended_by": "closer", "max_tokens": 24, "rejected": ["sqrt(W)"]}

``attempts``: replies sampled until one type-checked (``generate.py``); ``valid``: whether
the returned one did (false only when every attempt failed; ``error`` says why; null for
free text); ``generated_tokens``: the tokens of every attempt's text, while
``usage.completion_tokens`` counts the returned text's tokens only; ``sampled_tokens``:
tokens the model sampled over all attempts (one forward pass each; the closer's tokens
are not); ``ended_by``: eos, grammar, stop, closer, fallback, budget or time (cut at
``--max-generation-seconds``; ``generate.py``);
``max_tokens``: the budget used, after clamping to the context.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..config import GROUPS
from ..errors import PruneDSLError
from ..llm_contract import GRAMMAR_FIELD, MAX_NODE_DIGITS, SEEN_FIELD, SKETCHES_FIELD
from .constrained import MODES
from .replies import Seen, parse_sketches
from .sampling import MAX_ATTEMPTS, Completion, SamplingParams

MAX_SKETCHES = 64
MAX_SEEN = 4096
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4
KNOWN = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed",
         "stop", "n", "stream", "user", "frequency_penalty", "presence_penalty", "logprobs",
         "response_format", GRAMMAR_FIELD, SKETCHES_FIELD, SEEN_FIELD}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after = retry_after  # seconds, sent as a Retry-After header

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    model: str                   # as the client wrote it (echoed in the response)
    messages: tuple[dict, ...]   # {"role": system|user|assistant, "content": str}
    params: SamplingParams


def model_ids(model_id: str) -> list[str]:
    """The names a client may ask for: the model and its grammar-suffixed variants."""
    return [model_id] + [f"{model_id}+{m}" for m in MODES]


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, message, param=field, code="invalid_value")


def _number(body: dict, field: str, default: float, lo: float, hi: float, *, lo_open=False) -> float:
    v = body.get(field)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _invalid(field, f"'{field}' must be a number, got {type(v).__name__}")
    if not (lo < v if lo_open else lo <= v) or v > hi:
        raise _invalid(field, f"'{field}' must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v}")
    return float(v)


def _int(body: dict, field: str) -> int | None:
    v = body.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _invalid(field, f"'{field}' must be an integer, got {type(v).__name__}")
    return v


def _messages(raw: Any) -> tuple[dict, ...]:
    if raw is None:
        raise ApiError(422, "'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages", "'messages' must be a non-empty array of messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _invalid(where, f"'{where}' must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            if role in ("tool", "function"):
                raise ApiError(400, f"'{where}.role' {role!r} is not supported (no tools)",
                               param=f"{where}.role", code="unsupported_value")
            raise _invalid(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}, got {role!r}")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise _invalid(f"{where}.content", f"'{where}.content' parts must be text parts "
                                                   "({'type': 'text', 'text': ...})")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _invalid(f"{where}.content", f"'{where}.content' must be a string")
        out.append({"role": ROLES[role], "content": content})
    return tuple(out)


def _grammar(body: dict, model: str, model_id: str) -> str | None:
    """The grammar mode from the model suffix and/or the request field (they must agree)."""
    suffix = None
    if model != model_id:
        base, _, suffix = model.rpartition("+")
        if base != model_id or suffix not in MODES:
            raise ApiError(404, f"The model '{model}' does not exist; this server has "
                                f"{', '.join(model_ids(model_id))}", param="model", code="model_not_found")
    field = body.get(GRAMMAR_FIELD)
    if field is not None and field not in MODES + ("none",):
        raise _invalid(GRAMMAR_FIELD, f"'{GRAMMAR_FIELD}' must be one of {', '.join(MODES)}, "
                                      f"\"none\" or null, got {field!r}")
    field = None if field == "none" else field
    if suffix and GRAMMAR_FIELD in body and field != suffix:
        raise ApiError(400, f"the model suffix '+{suffix}' asks for the {suffix} grammar but "
                            f"'{GRAMMAR_FIELD}' is {body[GRAMMAR_FIELD]!r}", param=GRAMMAR_FIELD,
                       code="conflicting_parameters")
    return suffix or field


def _sketches(body: dict, grammar: str | None) -> tuple:
    """The offered sketches (``SKETCHES_FIELD``) as ``((node id, parsed sketch), ...)``."""
    value = body.get(SKETCHES_FIELD)
    if value is None:
        return ()
    if grammar != "reply":
        raise ApiError(400, f"'{SKETCHES_FIELD}' needs the reply grammar (the model suffix '+reply' or "
                            f"'{GRAMMAR_FIELD}': \"reply\")", param=SKETCHES_FIELD, code="conflicting_parameters")
    if not isinstance(value, dict) or not value or len(value) > MAX_SKETCHES:
        raise _invalid(SKETCHES_FIELD, f"'{SKETCHES_FIELD}' must be an object of 1 to {MAX_SKETCHES} "
                                       "node ids mapped to sketch texts")
    for node, text in value.items():
        if not (node.isdigit() and len(node) <= MAX_NODE_DIGITS) or not isinstance(text, str):
            raise _invalid(SKETCHES_FIELD, f"'{SKETCHES_FIELD}' maps node ids (up to {MAX_NODE_DIGITS} digits) "
                                           f"to sketch texts; got {node!r}: {type(text).__name__}")
    try:
        return tuple(sorted(parse_sketches({int(k): v for k, v in value.items()}).items()))
    except PruneDSLError as err:
        raise _invalid(SKETCHES_FIELD, f"'{SKETCHES_FIELD}': {err.render()}") from None


def _seen(body: dict, grammar: str | None) -> Seen | None:
    """The formulas already in the search (``SEEN_FIELD``): a group and canonical forms."""
    value = body.get(SEEN_FIELD)
    if value is None:
        return None
    if grammar is None:
        raise ApiError(400, f"'{SEEN_FIELD}' needs a grammar (the model suffix '+reply' or '+formula')",
                       param=SEEN_FIELD, code="conflicting_parameters")
    forms = value.get("forms") if isinstance(value, dict) else None
    if not (isinstance(value, dict) and set(value) == {"group", "forms"} and value["group"] in GROUPS
            and isinstance(forms, list) and len(forms) <= MAX_SEEN and all(isinstance(f, str) for f in forms)):
        raise _invalid(SEEN_FIELD, f"'{SEEN_FIELD}' must be {{\"group\": one of {', '.join(GROUPS)}, "
                                   f"\"forms\": at most {MAX_SEEN} canonical formula texts}}")
    return Seen(value["group"], frozenset(forms))


def parse_chat_request(body: Any, *, model_id: str, max_tokens_limit: int,
                       default_max_tokens: int, max_attempts: int = MAX_ATTEMPTS) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body; raise ``ApiError`` on anything wrong.
    ``max_attempts``: the server's bound on replies sampled per constrained request."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}",
                       param=unknown[0], code="unknown_parameter")
    model = body.get("model")
    if model is None:
        raise ApiError(422, "'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _invalid("model", "'model' must be a string")
    grammar = _grammar(body, model, model_id)
    messages = _messages(body.get("messages"))

    if body.get("stream") not in (None, False):
        if not isinstance(body["stream"], bool):
            raise _invalid("stream", "'stream' must be a boolean")
        raise ApiError(400, "streaming is not supported; leave 'stream' out or false", param="stream",
                       code="unsupported_value")
    n = _int(body, "n")
    if n is not None and n != 1:
        raise ApiError(400 if n > 1 else 422, f"'n' must be 1 (one choice per request), got {n}", param="n",
                       code="unsupported_value" if n > 1 else "invalid_value")
    if body.get("logprobs") not in (None, False):
        raise ApiError(400, "'logprobs' is not supported", param="logprobs", code="unsupported_value")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError(400, f"'response_format' must be {{'type': 'text'}}; for formulas use "
                            f"'{GRAMMAR_FIELD}'", param="response_format", code="unsupported_value")
    for field in ("frequency_penalty", "presence_penalty"):
        if _number(body, field, 0.0, -2.0, 2.0) != 0.0:
            raise ApiError(400, f"'{field}' is not supported (only 0)", param=field, code="unsupported_value")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _invalid("user", "'user' must be a string")

    mt, mct = _int(body, "max_tokens"), _int(body, "max_completion_tokens")
    if mt is not None and mct is not None and mt != mct:
        raise ApiError(400, "'max_tokens' and 'max_completion_tokens' disagree; give one",
                       param="max_completion_tokens", code="conflicting_parameters")
    max_tokens = mct if mct is not None else mt if mt is not None else min(default_max_tokens, max_tokens_limit)
    if not 1 <= max_tokens <= max_tokens_limit:
        field = "max_completion_tokens" if mct is not None else "max_tokens"
        raise _invalid(field, f"'{field}' must be between 1 and {max_tokens_limit} on this server, got {max_tokens}")

    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stop = tuple(stop)
    else:
        raise _invalid("stop", f"'stop' must be a string or an array of at most {MAX_STOP} strings")
    if any(s == "" for s in stop):
        raise _invalid("stop", "'stop' strings must not be empty")

    params = SamplingParams(max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                            top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
                            seed=_int(body, "seed"), stop=stop, grammar=grammar, max_attempts=max_attempts,
                            sketches=_sketches(body, grammar), seen=_seen(body, grammar))
    return ChatRequest(model=model, messages=messages, params=params)


def chat_response(req: ChatRequest, c: Completion, *, created: int | None = None) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": req.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                     "logprobs": None, "finish_reason": c.finish_reason}],
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                  "total_tokens": c.prompt_tokens + c.completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": c.cached_tokens}},
        GRAMMAR_FIELD: req.params.grammar,
        "prunedsl": prunedsl_info(req.params.grammar, c, req.params.max_tokens),
    }


def prunedsl_info(grammar: str | None, c: Completion, max_tokens: int | None = None) -> dict:
    """The response's ``prunedsl`` object (see the module docstring)."""
    check = c.check
    return {"grammar": grammar, "attempts": c.attempts, "valid": check.ok if check else None,
            "error": check.error if check else None, "lines": check.lines if check else None,
            "valid_lines": check.valid_lines if check else None,
            "generated_tokens": c.generated_tokens or c.completion_tokens, "sampled_tokens": c.sampled_tokens,
            "ended_by": c.ended_by, "max_tokens": max_tokens, "rejected": list(c.rejected)}


def models_response(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "prunedsl"}
                                       for m in model_ids(model_id)]}
