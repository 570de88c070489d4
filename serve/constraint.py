"""What constrained decoding needs for one tokenizer: llguidance matchers over the derived
grammars (``constrained.py``), their next-token masks, token tables, and the closer.

    c = Constraint(tokenizer, vocab=49152, eos=frozenset({2}))
    m = c.matcher("formula")           # an llguidance LLMatcher
    ok = c.allowed(m)                  # bool mask (vocab,) of the tokens it accepts next
    c.close(m, "sqrt(|W| * (")         # a short token sequence completing the prefix, or None

The closer makes no model calls: it closes brackets, finishes a pending operand with
``1`` (or ``W`` while the formula has no operand that varies per weight) and completes a
partial name with its shortest continuation. ``generate.py`` uses it to finish a formula
within the token budget (see its docstring).
"""
from __future__ import annotations

import functools
import re

import numpy as np

from ..errors import PruneRuntimeError
from .constrained import MODES, grammar_text, known_names, reply_grammar_for

CLOSER_MAX = 64     # a closer that needs more than this gives up


class Constraint:
    """Grammar matchers, masks and the closer for ``tokenizer`` (a Hugging Face tokenizer)."""

    def __init__(self, tokenizer, vocab: int, eos: frozenset[int], stop: int | None = None):
        """``eos``: the tokens that end a reply; ``stop``: the one llguidance allows once the
        grammar accepts (the chat template's end of turn; default the tokenizer's eos)."""
        self.tokenizer, self.vocab, self.eos = tokenizer, vocab, eos
        self.stop = stop if stop is not None else tokenizer.eos_token_id

    @functools.cached_property
    def ll_tokenizer(self):
        import llguidance.hf
        return llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab, eos_token=self.stop)

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one Constraint per server, kept for its life)
    def _grammar(self, mode: str, nodes: tuple[int, ...] = ()) -> str:
        import llguidance
        text = reply_grammar_for(nodes) if nodes and mode == "reply" else grammar_text(mode)
        g = llguidance.LLMatcher.grammar_from_lark(text)  # ~10 ms: a request's own node ids are cheap
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(g, self.ll_tokenizer)
        if is_error:
            raise PruneRuntimeError(f"the derived {mode} grammar does not compile: {messages[0]}")
        return g

    def matcher(self, mode: str, nodes: tuple[int, ...] = ()):
        """A matcher for ``mode``; ``nodes``: the reply's ``node <id>`` line is required and
        names one of them (the request's offered sketches)."""
        import llguidance
        if mode not in MODES:
            raise ValueError(f"unknown grammar mode {mode!r}")
        return llguidance.LLMatcher(self.ll_tokenizer, self._grammar(mode, tuple(nodes)), log_level=0)

    def allowed(self, matcher) -> np.ndarray:
        """Boolean mask (vocab,) of the tokens ``matcher`` accepts next."""
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        mask = np.zeros(self.vocab, dtype=bool)
        n = min(self.vocab, bits.shape[0])
        mask[:n] = bits[:n]
        return mask

    @functools.cached_property
    def token_tables(self):
        """``(single, lengths, calm, tame, newline)``: ids of the one-token closers, each
        token's stripped length, and masks of the tokens safe near the budget, of those
        without runs, and of those holding a newline."""
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        single = {s: enc(s)[0] for s in (")", "|", "1", "W") if len(enc(s)) == 1}
        texts = self.token_texts
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
    def token_texts(self) -> list[str]:
        """Each id's text alone. The model's output layer may be wider than the tokenizer
        (Qwen2: 151936 rows, ~151665 tokens): the padding ids are empty. A byte-level token
        holding part of a UTF-8 character decodes to U+FFFD; that is fine for the tables."""
        n = min(self.vocab, len(self.tokenizer))
        return [self.tokenizer.decode([i]) for i in range(n)] + [""] * (self.vocab - n)

    @functools.cached_property
    def spacing(self) -> tuple[np.ndarray, np.ndarray]:
        """``(leading, double)``: tokens that start with a space (not sampled right after a
        space) and tokens holding two spaces in a row (never sampled). Grammatically
        harmless, but a model whose wish the mask blocks (Qwen2 writing `1. ` as a list
        number) can otherwise fill its budget with Qwen2's many blank tokens."""
        texts = self.token_texts
        return np.array([t[:1] == " " for t in texts]), np.array(["  " in t for t in texts])

    @functools.cached_property
    def _operand_re(self) -> re.Pattern:
        """Text that mentions an operand varying per weight (a formula needs one)."""
        names = known_names().variables + ("X",)
        return re.compile(r"‖|\?|(?<![\w])(" + "|".join(map(re.escape, names)) + r")(?!\w)")

    def close(self, matcher, text: str) -> list[int] | None:
        """A short token sequence that completes the prefix ``text`` (accepted so far by
        ``matcher``, which is not changed), or None (module docstring)."""
        needs_operand = not self._operand_re.search(text.rsplit("\n", 1)[-1])
        seq = self._close(matcher, text, needs_operand)
        return seq if seq is not None or needs_operand else self._close(matcher, text, True)

    def _close(self, matcher, text: str, operand_first: bool) -> list[int] | None:
        single, lengths = self.token_tables[:2]
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
        self.token_tables  # noqa: B018
        self.spacing  # noqa: B018
