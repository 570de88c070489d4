"""bench/bench_structured.py's parameter budget: the per-structure parameter count is what
removal really takes off, and a decoder fraction maps to the nearest valid per-block count."""
import importlib.util
from pathlib import Path

import pytest
import torch

from prunedsl.runtime.remove import decoder_parameters, remove_structures
from prunedsl.runtime.structure_plan import select_removal
from prunedsl.runtime.structures import find_structures
from prunedsl.runtime.testing import tiny_gemma3, tiny_llama, tiny_qwen2

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_structured", ROOT / "bench" / "bench_structured.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3, tiny_qwen2])
@pytest.mark.parametrize("kind,mode,count", [("channels", "kv_groups", 5), ("heads", "kv_groups", 1),
                                             ("heads", "query_heads", 2)])
def test_structure_params_is_what_removal_takes(bench, make, kind, mode, count):
    model = make()
    groups = find_structures(model, kind, mode)
    per = bench.structure_params(model, groups[0])
    before = decoder_parameters(model)
    plan = select_removal(groups, [torch.rand(g.count) for g in groups], count=count, heads_mode=mode)
    remove_structures(model, plan)
    assert before - decoder_parameters(model) == count * len(groups) * per


def test_count_for_fraction(bench):
    model = tiny_llama()
    dec = decoder_parameters(model)
    channels = find_structures(model, "channels")
    n, _ = bench.count_for_fraction(model, channels, 0.2, dec)
    per = bench.structure_params(model, channels[0])
    assert abs(n * 2 * per / dec - 0.2) <= per / dec      # the nearest whole count
    heads = find_structures(model, "heads", "query_heads")
    n, _ = bench.count_for_fraction(model, heads, 0.05, dec)
    assert n == 2                                          # at least one per KV group (2 groups)
    n, why = bench.count_for_fraction(model, heads, 0.3, dec)
    assert n is None and "of 4 structures" in why
