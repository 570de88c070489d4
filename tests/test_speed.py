"""runtime/speed.py: decode is timed with the KV cache on (load_model turns it off) and left
as it was; the paired timing gives one result per model."""
import torch

from prunedsl.runtime.speed import greedy_decode, measure_speed, paired_speed
from prunedsl.runtime.testing import VOCAB, tiny_llama


def _cache_off(model):
    model.config.use_cache = False
    model.generation_config.use_cache = False
    return model


def test_decode_uses_the_cache_even_when_the_config_turns_it_off():
    model = _cache_off(tiny_llama().eval())
    steps = greedy_decode(model, torch.randint(0, VOCAB, (1, 7)), 5)
    assert steps == [7, 1, 1, 1, 1]
    assert model.config.use_cache is False and model.generation_config.use_cache is False


def test_measure_and_paired_speed():
    a, b = _cache_off(tiny_llama().eval()), _cache_off(tiny_llama(layers=1).eval())
    ids, prompt = torch.randint(0, VOCAB, (1, 32)), torch.randint(0, VOCAB, (1, 4))
    one = measure_speed(a, ids, prompt, new_tokens=3, reps=1)
    assert one["prefill_tok_s"] > 0 and one["decode_tok_s"] > 0 and one["prefill_tokens"] == 32
    both = paired_speed({"a": a, "b": b}, ids, prompt, new_tokens=3, reps=2)
    assert set(both) == {"a", "b"} and all(v["decode_tok_s"] > 0 for v in both.values())
