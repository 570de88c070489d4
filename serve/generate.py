"""Token-by-token generation with a KV cache, optionally constrained by the prunedsl grammar.

    gen = Generator(load_model("smollm2-135m"))
    ids = gen.prompt_ids([{"role": "user", "content": "A pruning metric?"}])
    out = gen.generate(ids, SamplingParams(max_tokens=32, grammar="formula", seed=0))
    out.text, out.finish_reason                     # e.g. ('|W| * ‖X‖', 'stop')

Constrained decoding: an llguidance ``LLMatcher`` over the grammar of ``constrained.py``
gives the allowed next tokens; only those are sampled. Tokens holding a run like
``---`` or ``(((`` are never sampled (they nest past the parser's depth limit in a few
steps). So that a constrained reply always parses, the token budget is watched: near
its end a "closer" (no model calls) finds a short completion of the current prefix
(close the brackets, finish a pending operand with ``1`` or ``W``), each sampled token
is kept only if that completion still fits, and the completion is emitted when it no
longer would. Such replies end with ``finish_reason="length"``. A formula (a line of a reply) gets at
most ``MAX_FORMULA_TOKENS`` tokens whatever ``max_tokens`` is: the closer then always
has room, and the formula stays under the parser's nesting limit. Whenever the closer's
completion fits, the prefix is remembered as a safe point; if closing ever fails (or
the matcher reports an error) the reply falls back to the last safe point and its
completion, so it still parses. Stop strings apply in every mode (one can cut a
formula short).

The grammar guarantees parsing, not types (``sqrt(W)``). Each constrained reply is
checked with prunedsl's own checker (``replies.check_completion``: ``prunedsl.parse`` for
a formula; for a ``reply``, at least one line that checks, sketches as sketches); when
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

The KV cache of the last prompt is kept: a request that shares its prefix (the same
system prompt, or a resampled attempt) only runs the new tokens through the model.
"""
from __future__ import annotations

import copy
import functools
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import PruneRuntimeError
from .constrained import MODES, grammar_text, known_names
from .replies import Check, check_completion


def _cache_keyword(model) -> str:
    """``cache`` in transformers ≥ 5.2x, where ``past_key_values`` is deprecated (removed in
    5.40); older 5.x releases only know ``past_key_values``."""
    import inspect
    forward = getattr(model, "forward", model)  # test doubles are plain callables
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)

log = logging.getLogger("prunedsl.serve")

CLOSE_WINDOW = 12   # check every token when this many (+ the closing length) are left
CLOSE_EVERY = 4     # before that, measure the closing sequence every this many tokens
CLOSER_MAX = 64     # a closer that needs more than this gives up
MAX_FORMULA_TOKENS = 80   # one formula / reply line: ≤ ~2 tree levels a token, under the parser's 200
MAX_ATTEMPTS = 8    # constrained replies sampled until one type-checks
RETRY_TEMPERATURE = 0.3  # a greedy (temperature 0) request's attempts after the first sample at this


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 1.0      # OpenAI's default; 0 is greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None   # None, "formula" or "reply"
    max_attempts: int = MAX_ATTEMPTS  # constrained: replies sampled until one type-checks


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str       # "stop" (end of text, stop string) or "length" (budget)
    prompt_tokens: int
    completion_tokens: int   # tokens of `text`
    prefill_s: float         # forward passes over the prompt (all attempts)
    decode_s: float          # the rest: sampling, masks, one-token forward passes (all attempts)
    closed: bool = False     # the closer finished the formula at the budget
    cached_tokens: int = 0   # prompt tokens whose KV cache was reused from the last request
    attempts: int = 1        # replies sampled (constrained: until one checked)
    generated_tokens: int = 0  # tokens sampled over all attempts (≥ completion_tokens)
    check: Check | None = None  # constrained: the checker's verdict on `text`
    rejected: tuple[str, ...] = ()  # the texts of the attempts the checker rejected
    sampled_tokens: int = 0  # tokens drawn from the model's logits over all attempts (one forward
    #                          pass each), EOS and tokens later dropped by the fallback included;
    #                          the closer's tokens (no model call) are not: tokens/s use this
    ended_by: str = "budget"  # how the returned attempt ended: "eos" (the model), "grammar" (the
    #                           grammar accepts nothing more), "stop" (a stop string), "closer"
    #                           (completed by the closer at the budget), "fallback" (cut back to a
    #                           safe point), "budget" (max_tokens reached, free text)


def attempt_rng(seed: int, attempt: int) -> np.random.Generator:
    """The sampler's RNG for one attempt: the request's seed, then ``[seed, attempt]``."""
    seed %= 1 << 64  # numpy wants a nonnegative seed; OpenAI's may be negative
    return np.random.default_rng(seed if attempt == 0 else [seed, attempt])


def _sample(logits: np.ndarray, allowed: np.ndarray | None, p: SamplingParams,
            rng: np.random.Generator) -> int:
    """Temperature / nucleus sampling among the allowed tokens (numpy: on a busy 2-core
    machine torch's threaded small ops cost milliseconds each)."""
    ids = np.flatnonzero(allowed) if allowed is not None else np.arange(logits.shape[0])
    scores = logits[ids].astype(np.float64)
    if p.temperature <= 0:
        return int(ids[np.argmax(scores)])
    scores /= p.temperature
    if p.top_p < 1.0:
        order = np.argsort(-scores, kind="stable")
        probs = np.exp(scores[order] - scores[order[0]])
        probs /= probs.sum()
        keep = int(np.count_nonzero(np.cumsum(probs) - probs < p.top_p))  # at least 1
        ids, scores = ids[order[:keep]], scores[order[:keep]]
    # Gumbel-max: argmax(s + Gumbel noise) is a sample of softmax(s).
    u = np.clip(rng.random(scores.shape[0]), 1e-300, None)
    return int(ids[np.argmax(scores - np.log(-np.log(u)))])


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
        eos = {self.tokenizer.eos_token_id} | set(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])
        self.eos = frozenset(int(e) for e in eos if e is not None)
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

    # --- grammar ------------------------------------------------------------------
    @functools.cached_property
    def ll_tokenizer(self):
        import llguidance.hf
        return llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab,
                                            eos_token=self.tokenizer.eos_token_id)

    @functools.cache
    def _grammar(self, mode: str) -> str:
        import llguidance
        g = llguidance.LLMatcher.grammar_from_lark(grammar_text(mode))
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(g, self.ll_tokenizer)
        if is_error:
            raise PruneRuntimeError(f"the derived {mode} grammar does not compile: {messages[0]}")
        return g

    def matcher(self, mode: str):
        import llguidance
        if mode not in MODES:
            raise ValueError(f"unknown grammar mode {mode!r}")
        return llguidance.LLMatcher(self.ll_tokenizer, self._grammar(mode), log_level=0)

    def allowed(self, matcher) -> np.ndarray:
        """Boolean mask (vocab,) of the tokens ``matcher`` accepts next."""
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        mask = np.zeros(self.vocab, dtype=bool)
        n = min(self.vocab, bits.shape[0])
        mask[:n] = bits[:n]
        return mask

    @functools.cached_property
    def _token_tables(self):
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        single = {s: enc(s)[0] for s in (")", "|", "1", "W") if len(enc(s)) == 1}
        texts = [self.tokenizer.decode([i]) for i in range(self.vocab)]
        lengths = np.array([len(t.strip()) or 10**6 for t in texts])
        # Tokens with two or more brackets (`((`, `||`) can lengthen the closing sequence by
        # a lot at once; they are not sampled while the budget is nearly spent.
        calm = np.array([sum(t.count(c) for c in "(|‖") < 2 for t in texts])
        # Runs like `------` or `((((` in one token are never needed (write them one or two
        # at a time) and nest a formula deeper than the parser's limit within a few tokens;
        # runs of spaces only make a formula longer.
        tame = np.array([re.search(r"([-+(| ])\1\1", t) is None for t in texts])
        newline = np.array(["\n" in t for t in texts])
        return single, lengths, calm, tame, newline

    @functools.cached_property
    def _operand_re(self) -> re.Pattern:
        """Text that mentions an operand varying per weight (a formula needs one)."""
        names = known_names().variables + ("X",)
        return re.compile(r"‖|\?|(?<![\w])(" + "|".join(map(re.escape, names)) + r")(?!\w)")

    def close(self, matcher, text: str) -> list[int] | None:
        """A short token sequence that completes the prefix ``text`` (accepted so far by
        ``matcher``, which is not changed), or None. No model calls: brackets are closed,
        a pending operand becomes ``1`` (or ``W`` while the formula has no operand that
        varies per weight), a partial name takes its shortest continuation."""
        needs_operand = not self._operand_re.search(text.rsplit("\n", 1)[-1])
        seq = self._close(matcher, text, needs_operand)
        return seq if seq is not None or needs_operand else self._close(matcher, text, True)

    def _close(self, matcher, text: str, operand_first: bool) -> list[int] | None:
        single, lengths = self._token_tables[:2]
        m, seq = matcher.deep_copy(), []
        while len(seq) <= CLOSER_MAX:
            if m.is_accepting():
                return seq
            ff = m.compute_ff_tokens()
            if ff:
                chosen = ff
            else:
                ok = self.allowed(m)
                can = {s: t for s, t in single.items() if ok[t]}
                tail = text.rstrip()
                if ")" in can and not tail.endswith("("):
                    chosen = [can[")"]]
                elif "|" in can and ("1" not in can or tail[-1:].isdigit() or tail.endswith(".")):
                    chosen = [can["|"]]  # after an operand, a bar closes |...|
                elif operand_first and "W" in can:
                    chosen, operand_first = [can["W"]], False
                elif "1" in can:
                    chosen = [can["1"]]
                elif can:
                    chosen = [next(iter(can.values()))]
                else:
                    ok[list(self.eos)] = False
                    if not ok.any():
                        return None
                    chosen = [int(np.argmin(np.where(ok, lengths, lengths.max() + 1)))]
            if not m.consume_tokens(chosen):
                return None
            seq += chosen
            text += self.tokenizer.decode(chosen)
        return None

    def warm_up(self) -> None:
        """Compile both grammars and the closer's token tables now, not on a first request."""
        for mode in MODES:
            self.matcher(mode)
        self._token_tables  # noqa: B018

    # --- generation ---------------------------------------------------------------
    def generate(self, prompt_ids: list[int], p: SamplingParams) -> Completion:
        """Sample a reply; a constrained one is sampled again while the checker rejects it
        (at most ``p.max_attempts`` replies; see the module docstring)."""
        seed = p.seed if p.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        with self.lock, torch.inference_mode():
            if not p.grammar:
                c = self._generate(prompt_ids, p, attempt_rng(seed, 0))
                return replace(c, generated_tokens=c.completion_tokens)
            tried: list[Completion] = []
            for attempt in range(max(1, p.max_attempts)):
                # Greedy decoding would give the rejected reply again: after a greedy first
                # attempt, sample at RETRY_TEMPERATURE with the attempt's own seed.
                q = p if attempt == 0 or p.temperature > 0 else replace(p, temperature=RETRY_TEMPERATURE)
                tried.append(self._generate(prompt_ids, q, attempt_rng(seed, attempt)))
                check = check_completion(tried[-1].text, p.grammar)
                if check.ok:
                    break
        if not check.ok:
            log.warning("none of %d %s replies type-checks; returning the last: %s", len(tried), p.grammar,
                        (check.error or "?").splitlines()[0])
        return replace(tried[-1], attempts=len(tried), check=check, rejected=tuple(c.text for c in tried[:-1]),
                       generated_tokens=sum(c.completion_tokens for c in tried),
                       sampled_tokens=sum(c.sampled_tokens for c in tried),
                       prefill_s=sum(c.prefill_s for c in tried), decode_s=sum(c.decode_s for c in tried),
                       cached_tokens=tried[0].cached_tokens)

    def _generate(self, prompt_ids: list[int], p: SamplingParams, rng: np.random.Generator) -> Completion:
        matcher = self.matcher(p.grammar) if p.grammar else None
        _, _, calm, tame, newline = self._token_tables if matcher is not None else (None,) * 5
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
            zone = False
            if matcher is not None:
                left = min(left, MAX_FORMULA_TOKENS - (len(tokens) - line))
                if matcher.is_error():
                    log.warning("grammar matcher error, back to the last safe point: %s", matcher.get_error())
                    tokens, closed, ended = self._fall_back(tokens, safe), True, "fallback"
                    break
                if matcher.is_stopped():
                    finish, ended = "stop", "grammar"
                    break
                if closing is None and (len(tokens) % CLOSE_EVERY == 0 or need >= CLOSER_MAX // 2):
                    closing = self.close(matcher, text)
                    need = len(closing) if closing is not None else CLOSER_MAX
                zone = left <= CLOSE_WINDOW + need
                if zone and closing is None:
                    closing = self.close(matcher, text)
                if closing is not None and len(closing) <= left:
                    safe = (len(tokens), closing)
                if zone and (closing is None or len(closing) >= left):  # too late: give up cleanly
                    tokens, closed, ended = self._fall_back(tokens, safe), True, "fallback"
                    break
                ok = self.allowed(matcher)
                if (ok & tame).any():
                    ok &= tame
                if zone and (ok & calm).any():
                    ok &= calm
            tok = _sample(logits, ok if matcher is not None else None, p, rng)
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
                    after = self.close(matcher, self.tokenizer.decode(tokens + [tok], skip_special_tokens=True))
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
