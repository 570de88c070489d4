"""Token-by-token generation with a KV cache, optionally constrained by the prunedsl grammar.

    gen = Generator(load_model("smollm2-135m"))
    ids = gen.prompt_ids([{"role": "user", "content": "A pruning metric?"}])
    out = gen.generate(ids, SamplingParams(max_tokens=32, grammar="formula", seed=0))
    out.text, out.finish_reason                     # e.g. ('|W| * ‖X‖', 'stop')

Constrained decoding: an llguidance ``LLMatcher`` over the grammar of ``constrained.py``
gives the allowed next tokens (``constraint.py``); only those are sampled. Tokens
holding a run like ``---`` or ``(((`` are never sampled (they nest past the parser's
depth limit in a few steps), nor a token holding two spaces or starting with one right after a space.
Nothing here assumes one tokenizer: a reply ends at the tokenizer's eos, the generation
config's, or the token the chat template puts after an assistant turn (``end_of_turn_id``:
``<|im_end|>`` for SmolLM2 and Qwen2's ChatML), which is also the one llguidance allows
when the grammar accepts. So that a constrained reply always parses, the token
budget is watched: near its end a "closer" (``constraint.py``, no model calls) finds a
short completion of the current prefix (close the brackets, finish a pending operand
with ``1`` or ``W``), each sampled token is kept only if that completion still fits, and
the completion is emitted when it no longer would. Such replies end with
``finish_reason="length"``. A formula (a line of a reply) gets at most
``MAX_FORMULA_TOKENS`` tokens whatever ``max_tokens`` is: the closer then always has room, and the formula stays under the parser's nesting limit. Whenever the closer's
completion fits, the prefix is remembered as a safe point; if closing ever fails (or
the matcher reports an error) the reply falls back to the last safe point and its
completion, so it still parses. Stop strings apply in every mode (one can cut a
formula short).

The grammar guarantees parsing, not types (``sqrt(W)``). Each constrained reply is
checked with prunedsl's own checker (``replies.check_completion``: ``prunedsl.parse`` for
a formula; for a ``reply``, at least one line that checks, sketches as sketches, no line
of copied numbers; with the request's offered sketches, a complete formula refining the
one the reply names); when
it is rejected the reply is sampled again, up to ``max_attempts`` times. Attempt 0
uses the request's seed, attempt k the seed sequence ``[seed, k]``, so a seeded
request is reproducible. A greedy request (``temperature`` 0) would repeat a rejected
reply token for token: its first attempt is greedy, the later ones sample at
``RETRY_TEMPERATURE`` (0.3) with their own seeds. The first reply that checks is
returned; if none does, the last one, with ``Completion.check.ok`` False.
``Completion`` reports the attempts, the rejected texts, the tokens of every attempt's
text (``generated_tokens``) and the tokens the model sampled (``sampled_tokens``: one
forward pass each, tokens the fallback dropped included, the closer's tokens not);
``decode_s`` covers all attempts, so tokens per second (``sampled_tokens / decode_s``)
include the rejected ones. ``ended_by`` says how the returned attempt ended.

``Limits`` bound a generation from outside, checked before every token (one forward
pass; the prompt's prefill is one pass and is not interrupted): a set ``cancel`` event
(the server's client went away) raises ``GenerationCancelled``; past the ``deadline``
the reply is cut as at ``max_tokens`` (``finish_reason="length"``, ``ended_by="time"``,
a formula closed as above) and no further attempt is sampled.

The KV cache of the last prompt is kept: a request that shares its prefix (the same
system prompt, or a resampled attempt) only runs the new tokens through the model.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import PruneRuntimeError
from .constraint import CLOSER_MAX, Constraint
from .replies import check_completion
from .sampling import MAX_ATTEMPTS, Completion, SamplingParams, attempt_rng, sample

__all__ = ["Generator", "Limits", "GenerationCancelled", "SamplingParams", "Completion", "MAX_ATTEMPTS",
           "MAX_FORMULA_TOKENS"]

log = logging.getLogger("prunedsl.serve")

CLOSE_WINDOW = 12   # check every token when this many (+ the closing length) are left
CLOSE_EVERY = 4     # before that, measure the closing sequence every this many tokens
MAX_FORMULA_TOKENS = 80   # one formula / reply line: ≤ ~2 tree levels a token, under the parser's 200
RETRY_TEMPERATURE = 0.3  # a greedy (temperature 0) request's attempts after the first sample at this


def _cache_keyword(model) -> str:
    """``cache`` in transformers ≥ 5.2x, where ``past_key_values`` is deprecated (removed in
    5.40); older 5.x releases only know ``past_key_values``."""
    import inspect
    forward = getattr(model, "forward", model)  # test doubles are plain callables
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template puts right after an assistant's message, or None
    (no template, or plain text there). Read from the template, not from a list of names."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    mark = "PRUNEDSL_REPLY_END"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"},
                                              {"role": "assistant", "content": mark}], tokenize=False)
    except Exception:  # a template that wants other roles: fall back to the tokenizer's eos
        return None
    tail = text.split(mark, 1)[1] if mark in text else ""
    ids = tokenizer.encode(tail, add_special_tokens=False) if tail else []
    special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return int(ids[0]) if ids and ids[0] in special else None


class GenerationCancelled(PruneRuntimeError):
    """``Limits.cancel`` was set (the client went away): the generation stopped unfinished."""


@dataclass(frozen=True)
class Limits:
    """When to stop a generation early, checked before every token. ``cancel``: set from
    another thread when the reply is no longer wanted; ``generate`` raises
    ``GenerationCancelled``. ``deadline`` (``time.monotonic()``): the reply is cut there, as
    at ``max_tokens`` (``finish_reason="length"``, ``ended_by="time"``; a formula is closed)."""

    cancel: threading.Event | None = None
    deadline: float | None = None

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


NO_LIMITS = Limits()


class Generator:
    """A loaded chat model plus what constrained decoding needs. ``prompt_ids`` and
    ``generate`` hold ``self.lock``: one at a time, from any thread."""

    def __init__(self, loaded):
        from ..runtime.device import model_placement
        self.model = loaded.model
        self.placement = getattr(loaded, "placement", None) or model_placement(loaded.model)  # token ids go there
        self._cache_kw = _cache_keyword(self.model)
        self.tokenizer = loaded.tokenizer
        self.spec = loaded.spec
        self.lock = threading.Lock()
        self.vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        cfg_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        # The turn ends where the chat template says (ChatML's <|im_end|>, Gemma's
        # <end_of_turn>), which need not be the tokenizer's eos: both stop a reply.
        self.end_of_turn = end_of_turn_id(self.tokenizer)
        eos = {self.tokenizer.eos_token_id, self.end_of_turn} | set(cfg_eos if isinstance(cfg_eos, list)
                                                                    else [cfg_eos])
        self.eos = frozenset(int(e) for e in eos if e is not None)
        stop = self.end_of_turn if self.end_of_turn is not None else self.tokenizer.eos_token_id
        self.constraint = Constraint(self.tokenizer, self.vocab, self.eos, stop)
        self._prefix: tuple[list[int], object] | None = None  # last prompt and its KV cache

    # --- prompts ------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat ending with the assistant's turn (the chat template). Holds
        the lock: a Rust tokenizer raises "Already borrowed" when encoding concurrently
        with a decode in another thread."""
        with self.lock:
            return self._prompt_ids(messages)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys"):  # a BatchEncoding in some transformers versions
                ids = ids["input_ids"]
            return list(ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.tokenizer.encode(text)

    # --- grammar (constraint.py) -------------------------------------------------
    def matcher(self, mode: str, nodes: tuple[int, ...] = ()):
        return self.constraint.matcher(mode, nodes)

    def warm_up(self) -> None:
        """Compile both grammars and the closer's token tables now, not on a first request."""
        self.constraint.warm_up()

    # --- generation ---------------------------------------------------------------
    def generate(self, prompt_ids: list[int], p: SamplingParams, limits: Limits = NO_LIMITS) -> Completion:
        """Sample a reply; a constrained one is sampled again while the checker rejects it
        (at most ``p.max_attempts`` replies; see the module docstring), and not after
        ``limits.deadline``. Raises ``GenerationCancelled`` once ``limits.cancel`` is set."""
        seed = p.seed if p.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        with self.lock, torch.inference_mode():
            if not p.grammar:
                c = self._generate(prompt_ids, p, attempt_rng(seed, 0), limits)
                return replace(c, generated_tokens=c.completion_tokens)
            tried: list[Completion] = []
            for attempt in range(max(1, p.max_attempts)):
                # Greedy decoding would give the rejected reply again: after a greedy first
                # attempt, sample at RETRY_TEMPERATURE with the attempt's own seed.
                q = p if attempt == 0 or p.temperature > 0 else replace(p, temperature=RETRY_TEMPERATURE)
                tried.append(self._generate(prompt_ids, q, attempt_rng(seed, attempt), limits))
                check = check_completion(tried[-1].text, p.grammar, dict(p.sketches), p.seen)
                if check.ok or limits.expired():
                    break
        if not check.ok:
            log.warning("none of %d %s replies type-checks; returning the last: %s", len(tried), p.grammar,
                        (check.error or "?").splitlines()[0])
        return replace(tried[-1], attempts=len(tried), check=check, rejected=tuple(c.text for c in tried[:-1]),
                       generated_tokens=sum(c.completion_tokens for c in tried),
                       sampled_tokens=sum(c.sampled_tokens for c in tried),
                       prefill_s=sum(c.prefill_s for c in tried), decode_s=sum(c.decode_s for c in tried),
                       cached_tokens=tried[0].cached_tokens)

    def _generate(self, prompt_ids: list[int], p: SamplingParams, rng: np.random.Generator,
                  limits: Limits = NO_LIMITS) -> Completion:
        matcher = self.matcher(p.grammar, tuple(i for i, _ in p.sketches)) if p.grammar else None
        _, _, calm, tame, newline = self.constraint.token_tables if matcher is not None else (None,) * 5
        close, allowed = self.constraint.close, self.constraint.allowed
        spaced = self.constraint.spacing if matcher is not None else None
        t0 = time.perf_counter()
        out, cached = self._prefill(prompt_ids)
        t1 = time.perf_counter()
        past, logits = _output_cache(out), out.logits[0, -1].float().cpu().numpy()
        tokens: list[int] = []
        text, finish, closed, ended = "", "length", False, "budget"
        sampled = 0                       # tokens drawn from the model's logits
        closing: list[int] | None = None  # completes `text`; kept fresh near the budget
        need = 0                          # its length when last computed
        safe: tuple[int, list[int]] = (0, [])  # a prefix length and a closing that fit the budgets
        line = 0                          # where the current formula (reply line) starts in `tokens`
        while len(tokens) < p.max_tokens:
            left = p.max_tokens - len(tokens)
            if matcher is not None:
                left = min(left, MAX_FORMULA_TOKENS - (len(tokens) - line))
            if limits.cancelled():
                raise GenerationCancelled(f"cancelled after {len(tokens)} tokens")
            if limits.expired():  # cut here as at the budget; a formula is closed first
                if matcher is not None:
                    now = None if matcher.is_error() else close(matcher, text)
                    if now is not None and len(now) <= left:
                        tokens, closed = tokens + now, bool(now)
                    else:
                        tokens, closed = self._fall_back(tokens, safe), True
                ended = "time"
                break
            zone = False
            if matcher is not None:
                if matcher.is_error():
                    log.warning("grammar matcher error, back to the last safe point: %s", matcher.get_error())
                    tokens, closed, ended = self._fall_back(tokens, safe), True, "fallback"
                    break
                if matcher.is_stopped():
                    finish, ended = "stop", "grammar"
                    break
                if closing is None and (len(tokens) % CLOSE_EVERY == 0 or need >= CLOSER_MAX // 2):
                    closing = close(matcher, text)
                    need = len(closing) if closing is not None else CLOSER_MAX
                zone = left <= CLOSE_WINDOW + need
                if zone and closing is None:
                    closing = close(matcher, text)
                if closing is not None and len(closing) <= left:
                    safe = (len(tokens), closing)
                if zone and (closing is None or len(closing) >= left):  # too late: give up cleanly
                    tokens, closed, ended = self._fall_back(tokens, safe), True, "fallback"
                    break
                ok = allowed(matcher)
                if (ok & tame).any():
                    ok &= tame
                if zone and (ok & calm).any():
                    ok &= calm
                blank = spaced[0] | spaced[1] if text.endswith(" ") else spaced[1]
                if (ok & ~blank).any():
                    ok &= ~blank
            tok = sample(logits, ok if matcher is not None else None, p, rng)
            sampled += 1
            if tok in self.eos:
                finish, ended = "stop", "eos"
                break
            if matcher is not None:
                if not matcher.consume_token(tok):
                    log.warning("grammar matcher rejected an allowed token %d: %s", tok, matcher.get_error())
                    tokens, closed, ended = self._fall_back(tokens, safe), True, "fallback"
                    break
                if zone:  # keep room to finish: take `tok` only if the formula can still close
                    after = close(matcher, self.tokenizer.decode(tokens + [tok], skip_special_tokens=True))
                    if after is None or len(after) > left - 1:
                        tokens, closed, ended = tokens + closing, True, "closer"
                        break
                    closing, need = after, len(after)
                else:
                    closing = None
                if newline[tok]:
                    line = len(tokens) + 1
            tokens.append(tok)
            if matcher is not None or p.stop:
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if p.stop and any(s in text for s in p.stop):
                text = text[:min(text.find(s) for s in p.stop if s in text)]
                finish, ended = "stop", "stop"
                break
            if len(tokens) == p.max_tokens:
                break
            out = self.model(input_ids=self.placement.to_device(torch.tensor([[tok]])), **{self._cache_kw: past},
                             use_cache=True)
            past, logits = _output_cache(out), out.logits[0, -1].float().cpu().numpy()
        if finish != "stop" or not p.stop:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(text=text, finish_reason=finish, prompt_tokens=len(prompt_ids),
                          completion_tokens=len(tokens), prefill_s=t1 - t0,
                          decode_s=time.perf_counter() - t1, closed=closed, cached_tokens=cached,
                          sampled_tokens=sampled, ended_by=ended)

    def _prefill(self, prompt_ids: list[int]):
        """Forward pass over the prompt, reusing the KV cache of the previous prompt's
        common prefix (clients repeat the same long system prompt)."""
        start, cache = 0, None
        if self._prefix is not None and self._prefix[1] is not None:
            ids, kv = self._prefix
            n = 0
            for a, b in zip(ids, prompt_ids):
                if a != b:
                    break
                n += 1
            n = min(n, len(prompt_ids) - 1)  # feed at least one token to get logits
            if n > 0:
                try:
                    cache = copy.deepcopy(kv)
                    if n < len(ids):
                        cache.crop(n - len(ids))  # a negative count: drop that many from the end
                    start = n
                except Exception:  # a cache kind that cannot be cut back: prefill everything
                    cache, start = None, 0
        out = self.model(input_ids=self.placement.to_device(torch.tensor([prompt_ids[start:]])),
                         **{self._cache_kw: cache}, use_cache=True)
        self._prefix = (list(prompt_ids), copy.deepcopy(_output_cache(out)))
        return out, start

    @staticmethod
    def _fall_back(tokens: list[int], safe: tuple[int, list[int]]) -> list[int]:
        """The tokens of the last safe point and its closing (checked on a copy of the
        matcher when it was found: the result is a complete formula within the budgets)."""
        n, closing = safe
        return tokens[:n] + closing
