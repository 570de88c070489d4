"""What a generation is asked for and what it returns, and the sampler (numpy, no torch).

    p = SamplingParams(max_tokens=32, grammar="formula", seed=0)
    tok = sample(logits, allowed_mask, p, attempt_rng(0, 0))    # one token id

``Completion`` is what ``Generator.generate`` returns (generate.py explains the attempts,
the closer and how a reply ends, ``ended_by``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .replies import Check, Seen

MAX_ATTEMPTS = 8    # constrained replies sampled until one type-checks


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 1.0      # OpenAI's default; 0 is greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None   # None, "formula" or "reply"
    max_attempts: int = MAX_ATTEMPTS  # constrained: replies sampled until one type-checks
    sketches: tuple = ()         # reply grammar: ((node id, parsed sketch), ...) a reply must refine
    seen: Seen | None = None     # formulas (canonical forms) a reply must not repeat


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
    #                           safe point), "budget" (max_tokens reached, free text), "time"
    #                           (cut at the generation's deadline, see generate.Limits)


def attempt_rng(seed: int, attempt: int) -> np.random.Generator:
    """The sampler's RNG for one attempt: the request's seed, then ``[seed, attempt]``."""
    seed %= 1 << 64  # numpy wants a nonnegative seed; OpenAI's may be negative
    return np.random.default_rng(seed if attempt == 0 else [seed, attempt])


def sample(logits: np.ndarray, allowed: np.ndarray | None, p: SamplingParams,
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
