"""``prunedsl serve-llm`` with Qwen2.5-Coder's tokenizer (byte-level BPE, 151k tokens, ChatML
with a default system prompt): nothing in the server may assume SmolLM2's tokens.

Fast tests: the real Qwen tokenizer with a fake model (random logits) and a tiny random
Qwen2 saved with it. The ``slow`` test serves the real qwen2.5-coder-0.5b (~5 s to load
once converted) and asks for a formula (``+formula``) and a node reply (``+reply``). All
skip, saying why, when the Qwen part packages are not installed (CI: PRUNEDSL_QWEN=0.5b).

    pytest tests/test_serve_llm_qwen.py -m "not slow"
"""
from __future__ import annotations

import types

import pytest

pytest.importorskip("llguidance")
pytest.importorskip("starlette")
torch = pytest.importorskip("torch")

from serve_fakes import QWEN, EchoModel, FakeModel, fake_generator, tiny_chat_model_dir, tokenizer_or_skip  # noqa: E402

from prunedsl.llm_contract import split_reply  # noqa: E402
from prunedsl.serve.generate import Generator, SamplingParams, end_of_turn_id  # noqa: E402
from prunedsl.serve.prompts import system_prompt  # noqa: E402
from prunedsl.serve.replies import check_reply  # noqa: E402

PROMPT = [{"role": "user", "content": "Propose a pruning metric formula."}]


@pytest.fixture(scope="module")
def qwen_tok():
    return tokenizer_or_skip(QWEN)


@pytest.fixture(scope="module")
def qwen_gen(qwen_tok):
    return fake_generator(EchoModel, tokenizer=qwen_tok)


def test_end_of_turn_comes_from_the_chat_template(qwen_tok, qwen_gen):
    im_end = qwen_tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(qwen_tok) == im_end
    assert im_end in qwen_gen.eos
    assert qwen_gen.constraint.stop == im_end  # what llguidance allows once a formula is complete
    ids = qwen_gen.prompt_ids(PROMPT)
    assert qwen_tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_end_of_turn_differs_from_eos():
    """A tokenizer whose eos is not what ends a turn (a base model's <|endoftext|>, a
    template that closes turns with its own token): both stop a reply."""
    class Tok:
        chat_template = "x"
        all_special_ids = [7, 9]
        added_tokens_decoder = {}
        eos_token_id = 7

        def apply_chat_template(self, messages, tokenize=False, **_):
            return "".join(f"<s>{m['content']}<end>\n" for m in messages)

        def encode(self, text, add_special_tokens=False):
            return [9, 1] if text.startswith("<end>") else [3]

    assert end_of_turn_id(Tok()) == 9
    assert end_of_turn_id(types.SimpleNamespace(chat_template=None)) is None


def test_token_tables_cover_a_model_wider_than_the_tokenizer(qwen_tok):
    """Qwen2's output layer has more rows than the tokenizer has tokens (padding ids)."""
    gen = Generator(types.SimpleNamespace(model=FakeModel(len(qwen_tok) + 64), tokenizer=qwen_tok, spec=QWEN))
    assert len(gen.constraint.token_texts) == gen.vocab == len(qwen_tok) + 64
    assert gen.constraint.token_texts[-1] == ""
    single = gen.constraint.token_tables[0]
    assert set(single) == {")", "|", "1", "W"}  # the closer's one-token pieces exist in Qwen's vocabulary
    c = gen.generate(gen.prompt_ids(PROMPT), SamplingParams(max_tokens=16, grammar="formula", seed=1,
                                                            temperature=1.0, max_attempts=1))
    assert check_reply(c.text, "formula")[0], c.text


@pytest.mark.parametrize("mode,max_tokens", [("formula", 10), ("formula", 32), ("reply", 48)])
def test_random_logits_give_replies_that_parse_with_qwen_tokens(qwen_gen, mode, max_tokens):
    ids = qwen_gen.prompt_ids([{"role": "system", "content": system_prompt(mode)}, *PROMPT])
    for seed in range(15):
        c = qwen_gen.generate(ids, SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed,
                                                  grammar=mode, max_attempts=1))
        assert c.completion_tokens <= max_tokens
        parses, _, err = check_reply(c.text, mode)
        assert parses, (c.text, err)
        assert "  " not in c.text  # no space after a space (Qwen2 has many blank tokens)


def test_tiny_qwen2_served_over_http(qwen_tok, tmp_path):
    """A tiny random Qwen2 saved with the Qwen tokenizer, loaded like any model directory
    and served: both constrained modes answer with text that parses."""
    openai = pytest.importorskip("openai")
    from prunedsl.runtime.models import load_model
    from prunedsl.serve.app import start_server
    gen = Generator(load_model(tiny_chat_model_dir(tmp_path / "tinyqwen", qwen_tok)))
    assert type(gen.model).__name__ == "Qwen2ForCausalLM"
    with start_server(gen, max_tokens_limit=48) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        for mode in ("formula", "reply"):
            r = client.chat.completions.create(model=f"{name}+{mode}", messages=PROMPT, max_tokens=32, seed=3)
            assert check_reply(r.choices[0].message.content, mode)[0], r.choices[0].message.content
        # the second request repeats the first's prompt: its prefix comes from the cache
        assert r.usage.prompt_tokens_details.cached_tokens > 0


# --- the real model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_server():
    from prunedsl.runtime.models import load_model
    from prunedsl.serve.app import start_server
    try:
        loaded = load_model(QWEN)
    except Exception as err:
        pytest.skip(f"cannot load {QWEN} (install its parts: PRUNEDSL_QWEN=0.5b scripts/install.sh): {err}")
    gen = Generator(loaded)
    gen.warm_up()
    with start_server(gen) as srv:
        yield srv


@pytest.mark.slow
def test_real_qwen_formula_and_reply_modes(qwen_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=qwen_server.url, api_key="x", max_retries=0, timeout=600)
    r = client.chat.completions.create(model=QWEN + "+formula", messages=PROMPT, max_tokens=24,
                                       temperature=0.7, seed=0)
    formula = r.choices[0].message.content
    parses, typed, err = check_reply(formula, "formula")
    assert parses and typed, (formula, err)
    sketch = [{"role": "user", "content": "Refine node 1, the sketch `|W| * ?Col`: answer `node 1` and "
                                          "then two refinements of it, one per line."}]
    r = client.chat.completions.create(model=QWEN + "+reply", messages=sketch, max_tokens=48,
                                       temperature=0.7, seed=0)
    text = r.choices[0].message.content
    node, lines, _ = split_reply(text)
    parses, typed, err = check_reply(text, "reply")
    assert lines and parses and typed, (text, err)
    print(f"\nqwen2.5-coder-0.5b: formula {formula!r}, reply node {node}, {lines}")
