"""``serve-llm``: constrained replies are type-checked and sampled again until one checks;
long budgets and grammar-matcher errors still give replies that parse.

Fake models only (random logits, the real SmolLM2 tokenizer; see serve_fakes.py):

    pytest tests/test_serve_llm_resample.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llguidance")
torch = pytest.importorskip("torch")

from serve_fakes import EchoModel, FakeModel, fake_generator, smollm2_tokenizer  # noqa: E402

from prunedsl.dsl.parser import parse_expr  # noqa: E402
from prunedsl.errors import PruneDSLError  # noqa: E402
from prunedsl.serve.generate import MAX_FORMULA_TOKENS, Completion, SamplingParams  # noqa: E402
from prunedsl.serve.replies import Check, Seen, check_completion, check_line, check_reply, parse_sketches  # noqa: E402

PROMPT_IDS = [1, 2, 3]


@pytest.fixture(scope="module")
def fake_gen():
    try:
        smollm2_tokenizer()
    except Exception as err:  # the GGUF package is not installed
        pytest.skip(str(err))
    return fake_generator()


def _script(gen, monkeypatch, texts: list[str]) -> list[float]:
    """Replace one attempt's sampling by the next text of ``texts`` (the last repeats);
    returns the first draw of each attempt's RNG."""
    draws: list[float] = []

    def attempt(prompt_ids, p, rng, limits=None):
        draws.append(rng.random())
        text = texts[min(len(draws), len(texts)) - 1]
        return Completion(text=text, finish_reason="stop", prompt_tokens=len(prompt_ids),
                          completion_tokens=len(text), prefill_s=0.5, decode_s=1.0)

    monkeypatch.setattr(gen, "_generate", attempt)
    return draws


# --- the checker ---------------------------------------------------------------------------
def test_check_completion():
    assert check_completion("|W| * ‖X‖", "formula") == Check(True, None, 1, 1)
    c = check_completion("sqrt(W)", "formula")
    assert not c.ok and "negative" in c.error and (c.lines, c.valid_lines) == (1, 0)
    c = check_completion("node 1\nsqrt(W)\n|W| * ?Col", "reply")  # one line checks: acceptable
    assert c.ok and (c.lines, c.valid_lines) == (2, 1) and "negative" in c.error
    assert check_reply("node 1\nsqrt(W)\n|W| * ?Col", "reply")[:2] == (True, False)
    assert not check_completion("node 1\nsqrt(W)\nsum(?Mat)", "reply").ok  # a Scalar sketch is no metric
    assert not check_completion("node 1", "reply").ok


def test_lines_of_numbers_do_not_check():
    # what Qwen2.5-Coder 0.5B wrote (docs/prompt_cache.md): they parse and type-check
    assert "significant digits" in check_line("241.111111 * W")
    assert "numbers in one formula" in check_line("0.0599 - 0.0741 + 0.0599 + 0.0741 + 0.0599 + W")
    assert check_line("|W| ^ (1/3) * ‖X‖ ^ (2/3)") is None and check_line("gblm(alpha = 282.8)") is None
    assert not check_completion("1.156054 - W", "formula").ok


def test_offered_sketches_make_a_reply_answer_the_question():
    sketches = parse_sketches({0: "?Mat", 3: "|W| * ?Col"})
    ok = check_completion("node 3\n|W| * ‖X‖\n|W| * ?Col", "reply", sketches)
    assert ok.ok and (ok.lines, ok.valid_lines) == (2, 1) and "no hole is filled" in ok.error
    for text, why in [("node 7\n|W| * ‖X‖", "node 7 is not offered"),   # a score copied as an id
                      ("|W| * ‖X‖", "no `node <id>` line"),
                      ("node 3\nW ^ 2 * ‖X‖", "does not refine the sketch `|W| * ?Col`"),
                      ("node 0\n|W| * ?Col", "no complete formula")]:  # sketches alone: sampled again
        c = check_completion(text, "reply", sketches)
        assert not c.ok and why in c.error, (text, c)
    assert check_completion("node 0\nwanda", "reply", sketches).ok      # ?Mat: any metric
    assert check_completion("|W| * ‖X‖", "reply").ok                    # nothing offered: as before
    seen = Seen("row", frozenset({"|W|", "|W| * ‖X‖"}))
    c = check_completion("node 0\n|W| ^ 0.5\n|W| * |W| ^ 0.5", "reply", sketches, seen)  # both rank like |W|
    assert not c.ok and "already has (`|W|`)" in c.error and c.valid_lines == 0
    assert check_completion("node 0\n|W| ^ 0.5\nsqrt(|W|) * G", "reply", sketches, seen).ok
    assert not check_completion("wanda", "formula", seen=seen).ok
    assert check_completion("|W| ^ 0.5", "formula", seen=Seen("row", frozenset({"G"}))).ok
    with pytest.raises(PruneDSLError, match="sketch of node 2"):
        parse_sketches({2: "|W| * ?Col +"})


@pytest.mark.parametrize("line", ["|W| * ?Col", "sqrt(?Mat) * W", "W ^ ?c", "|W| ^ ?c * ‖X‖ ^ ?c",
                                  "sqrt(W) * ?Col", "W ^ ?Mat", "row_sum(?Col) * ?Mat", "log(?Row) + W",
                                  "?Col + ?Row", "col_sum(?Col) * W", "ria(a = 0.3) * ?Col", "|W| * ‖X‖"])
def test_lines_are_checked_as_the_search_checks_them(line):
    from prunedsl.api import parse
    from prunedsl.dsl.sketch import check_sketch, has_holes
    try:
        tree = parse_expr(line)
        check_sketch(tree, line) if has_holes(tree) else parse(line)
        expected = None
    except PruneDSLError as err:
        expected = err
    assert (check_line(line) is None) == (expected is None), (line, expected)


# --- resampling ----------------------------------------------------------------------------
def test_resampled_until_the_checker_accepts(fake_gen, monkeypatch):
    _script(fake_gen, monkeypatch, ["sqrt(W)", "min(W, G, 1)", "|W| * ‖X‖", "W"])
    c = fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="formula", seed=1))
    assert (c.text, c.attempts, c.rejected) == ("|W| * ‖X‖", 3, ("sqrt(W)", "min(W, G, 1)"))
    assert c.check.ok and c.completion_tokens == len("|W| * ‖X‖")
    assert c.generated_tokens == len("sqrt(W)") + len("min(W, G, 1)") + len("|W| * ‖X‖")
    assert (c.decode_s, c.prefill_s) == (3.0, 1.5)  # every attempt's time: tok/s stays honest


def test_resampling_stops_at_the_bound(fake_gen, monkeypatch):
    _script(fake_gen, monkeypatch, ["sqrt(W)"])
    c = fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="formula", seed=1, max_attempts=4))
    assert (c.text, c.attempts, len(c.rejected)) == ("sqrt(W)", 4, 3)
    assert not c.check.ok and "negative" in c.check.error  # the last one, flagged as failed
    assert fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="formula", max_attempts=1)).attempts == 1


def test_reply_mode_resamples_only_when_no_line_checks(fake_gen, monkeypatch):
    _script(fake_gen, monkeypatch, ["node 1\nsqrt(W)\nsum(?Mat)", "node 1\nsqrt(W)\n|W| * ?Col", "W"])
    c = fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="reply", seed=0))
    assert c.attempts == 2 and (c.check.lines, c.check.valid_lines) == (2, 1)


def test_offered_sketches_narrow_the_node_line_and_the_check(fake_gen):
    """A real (random) model under the narrowed grammar: every attempt names an offered node."""
    sketches = tuple(parse_sketches({0: "?Mat", 3: "|W| * ?Col"}).items())
    for seed in range(3):
        c = fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="reply", seed=seed, max_tokens=48,
                                                         max_attempts=2, sketches=sketches))
        for text in (c.text, *c.rejected):
            assert text.split("\n")[0].strip() in ("node 0", "node 3"), text
        assert c.check == check_completion(c.text, "reply", dict(sketches))


def test_free_text_is_not_checked(fake_gen, monkeypatch):
    _script(fake_gen, monkeypatch, ["sqrt(W)", "W"])
    c = fake_gen.generate(PROMPT_IDS, SamplingParams(seed=0))
    assert (c.text, c.attempts, c.check, c.generated_tokens) == ("sqrt(W)", 1, None, 7)


@pytest.mark.parametrize("seed", [5, -1, 2**70])
def test_attempt_seeds_derive_from_the_request_seed(fake_gen, monkeypatch, seed):
    draws = _script(fake_gen, monkeypatch, ["sqrt(W)"])
    fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="formula", seed=seed, max_attempts=5))
    first = list(draws)
    draws.clear()
    fake_gen.generate(PROMPT_IDS, SamplingParams(grammar="formula", seed=seed, max_attempts=5))
    assert draws == first and len(set(first)) == 5  # reproducible, and a new RNG per attempt
    # attempt 0 samples as an unconstrained request with that seed does
    assert first[0] == np.random.default_rng(seed % 2**64).random()


def test_greedy_request_resamples_differently(fake_gen, monkeypatch):
    """temperature 0: the first attempt is greedy, later ones sample (RETRY_TEMPERATURE, a
    seed per attempt) instead of repeating the rejected reply 8 times."""
    from prunedsl.serve import generate as g
    gen = fake_generator(EchoModel)  # logits depend on the text: greedy is deterministic
    greedy = gen.generate(PROMPT_IDS, SamplingParams(max_tokens=16, temperature=0, grammar="formula",
                                                     max_attempts=1))
    temps = []
    real = gen._generate
    monkeypatch.setattr(gen, "_generate", lambda ids, p, rng, limits: temps.append(p.temperature) or real(ids, p, rng, limits))
    monkeypatch.setattr(g, "check_completion", lambda text, mode, sketches=None, seen=None: Check(False, "rejected by the test", 1, 0))
    c = gen.generate(PROMPT_IDS, SamplingParams(max_tokens=16, temperature=0, grammar="formula", seed=3,
                                                max_attempts=5))
    assert temps == [0] + [g.RETRY_TEMPERATURE] * 4
    assert c.attempts == 5 and c.rejected[0] == greedy.text  # attempt 0 is the greedy reply
    assert len(set(c.rejected + (c.text,))) > 1, c.rejected  # not the same reply five times
    again = gen.generate(PROMPT_IDS, SamplingParams(max_tokens=16, temperature=0, grammar="formula", seed=3,
                                                    max_attempts=5))
    assert (again.rejected, again.text) == (c.rejected, c.text)  # still reproducible with a seed
    assert all(parse_expr(t) for t in c.rejected + (c.text,))


class CountingModel(FakeModel):
    calls = 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return super().__call__(*a, **kw)


def test_sampled_tokens_count_forward_passes_not_the_closer():
    """tokens/s count what the model sampled (one forward pass each), not the tokens the
    closer appends, and include the tokens the closer's budget check dropped."""
    gen = fake_generator(CountingModel)
    ends = set()
    for seed in range(10):
        gen.model.calls = 0
        c = gen.generate(PROMPT_IDS, SamplingParams(max_tokens=12, grammar="formula", seed=seed, max_attempts=1))
        ends.add(c.ended_by)
        calls = gen.model.calls  # the prompt's pass + one per kept token
        assert calls - 1 <= c.sampled_tokens <= calls, (c, calls)
        if c.ended_by in ("closer", "eos"):  # the last sample was dropped / was the EOS
            assert c.sampled_tokens == calls and c.completion_tokens >= calls - 1
        assert c.ended_by in ("eos", "grammar", "closer", "fallback")
    assert "closer" in ends
    gen.model.calls = 0
    c = gen.generate(PROMPT_IDS, SamplingParams(max_tokens=6, seed=0))
    assert c.ended_by in ("eos", "budget") and c.sampled_tokens == gen.model.calls


def test_replies_type_check_after_resampling_with_random_logits(fake_gen):
    attempts = []
    for seed in range(16):  # 12 and 15 need a second attempt (the noise, seeded, depends on the grammar)
        c = fake_gen.generate(PROMPT_IDS, SamplingParams(max_tokens=24, grammar="formula", seed=seed))
        parses, typed, err = check_reply(c.text, "formula")
        assert parses and typed == c.check.ok and (typed or c.attempts == 8), (c.text, err)
        assert c.generated_tokens >= c.completion_tokens and len(c.rejected) == c.attempts - 1
        assert all(not check_reply(t, "formula")[1] for t in c.rejected)
        attempts.append(c.attempts)
    assert max(attempts) > 1  # noise writes ill-typed formulas: resampling happened


def test_same_seed_same_reply_end_to_end():
    gen = fake_generator(EchoModel)
    replies = []
    for seed in range(4):
        a, b = (gen.generate(PROMPT_IDS, SamplingParams(max_tokens=12, grammar="formula", seed=seed))
                for _ in range(2))
        assert (a.text, a.attempts, a.rejected) == (b.text, b.attempts, b.rejected)
        replies.append(a.text)
    assert len(set(replies)) > 1


# --- budgets and matcher errors ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["formula", "reply"])
def test_long_budgets_still_parse(fake_gen, mode):
    """With max_tokens 512 the closer once ran out of room (a 400-token line nested deeper
    than it closes); a formula now gets at most MAX_FORMULA_TOKENS tokens."""
    for seed in range(4):
        c = fake_gen.generate(PROMPT_IDS, SamplingParams(max_tokens=512, seed=seed, grammar=mode, max_attempts=1))
        parses, _, err = check_reply(c.text, mode)
        assert parses, (c.text[-200:], err)
        if mode == "formula":
            assert c.completion_tokens <= MAX_FORMULA_TOKENS


class _FailingMatcher:
    """A matcher that reports an error on its n-th token (as llguidance does on a resource
    limit); everything else is the real matcher's."""

    def __init__(self, matcher, n: int):
        self.matcher, self.n = matcher, n

    def consume_token(self, tok: int) -> bool:
        self.n -= 1
        return self.n > 0 and self.matcher.consume_token(tok)

    def __getattr__(self, name):
        return getattr(self.matcher, name)


def test_a_matcher_error_falls_back_to_the_last_safe_point(fake_gen, monkeypatch):
    """Once a 500 ("grammar matcher rejected an allowed token"); now the reply is cut back
    to the last prefix whose completion was known, and still parses."""
    real = fake_gen.matcher
    monkeypatch.setattr(fake_gen, "matcher", lambda mode, nodes=(): _FailingMatcher(real(mode, nodes), 7))
    closed = 0
    for seed in range(4):
        c = fake_gen.generate(PROMPT_IDS, SamplingParams(max_tokens=24, seed=seed, grammar="formula",
                                                         max_attempts=1))
        assert check_reply(c.text, "formula")[0], c.text
        closed += c.closed
    assert closed > 0
