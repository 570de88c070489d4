"""The test-ppl noise band (search/noise.py) and the per-window NLL sums it reads
(runtime/perplexity.py): the ppl stays what it was, the sums add up to the total, and the
paired bootstrap band says "beats" only when it excludes 1."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from prunedsl.runtime.data import eval_windows
from prunedsl.runtime.perplexity import perplexity
from prunedsl.runtime.testing import tiny_llama
from prunedsl.search.noise import compare, paired_band, ratio_cell, verdict


def _ppl_before(model, ids, seqlen, batch_size):
    """runtime/perplexity.py's loop before it kept per-window sums (the reference)."""
    windows = eval_windows(ids, seqlen)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, windows.shape[0], batch_size):
            batch = windows[i: i + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits
            vocab = logits.shape[-1]
            total += float(F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(),
                                           batch[:, 1:].reshape(-1), reduction="sum"))
            tokens += batch[:, 1:].numel()
    return total / tokens, math.exp(total / tokens)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_per_window_sums_leave_the_ppl_bit_identical_and_add_up(batch_size):
    torch.manual_seed(0)
    model = tiny_llama()
    ids = torch.randint(0, 256, (1, 7 * 24 + 5))
    res = perplexity(model, ids, seqlen=24, batch_size=batch_size, progress=False)
    nll, ppl = _ppl_before(model, ids, 24, batch_size)
    assert res["nll"] == nll and res["ppl"] == ppl                     # bit for bit
    sums = res["window_nll_sums"]
    assert len(sums) == res["windows"] == 7
    if batch_size == 1:  # each sum is the float that was added: their sum in order is the total
        assert sum(sums) / res["tokens"] == res["nll"]
    else:
        assert sum(sums) / res["tokens"] == pytest.approx(res["nll"], rel=1e-6)
    one = perplexity(model, ids, seqlen=24, batch_size=1, progress=False)["window_nll_sums"]
    assert sums == pytest.approx(one, rel=1e-5)                        # the same windows either way


def _sums(mean_nll: float, n: int = 40, tokens: int = 100, spread: float = 30.0, seed: int = 0):
    """Per-window NLL sums: hard and easy windows (shared by every model) around a mean."""
    r = random.Random(seed)
    return [mean_nll * tokens + r.gauss(0, spread) for _ in range(n)]


def test_the_band_is_deterministic_with_its_seed():
    a, b = _sums(3.0, seed=1), _sums(3.0, seed=2)
    assert paired_band(a, b, 100) == paired_band(a, b, 100)
    from prunedsl.runtime.fidelity import bootstrap_ppl_ratio
    assert paired_band(a, b, 100) != bootstrap_ppl_ratio(a, b, 100, seed=1)   # the seed matters


def test_identical_models_give_a_band_containing_one():
    a = _sums(3.0)
    band = paired_band(a, list(a), 100)
    assert band.low <= 1 <= band.high and band.ppl == 1
    assert verdict(band) == "within noise of" and compare("wanda", band).startswith("within noise of wanda: 1.000×")
    # two equally good models whose windows differ by noise only: within noise, not "beats"
    noise = random.Random(5)
    b = [x + noise.gauss(0, 5) for x in a]
    assert verdict(paired_band(b, a, 100)) == "within noise of"


def test_a_clearly_worse_model_gives_a_band_excluding_one():
    ref = _sums(3.0)
    worse = [x + 10 + random.Random(i).gauss(0, 3) for i, x in enumerate(ref)]  # +0.1 nats per token
    band = paired_band(worse, ref, 100)
    assert band.low > 1 and verdict(band) == "worse than"
    assert band.ppl == pytest.approx(math.exp(0.1), rel=0.02)
    better = paired_band(ref, worse, 100)
    assert better.high < 1 and compare("wanda", better).startswith("beats wanda: 0.9")


def test_ratio_cell_reads_test_results_and_says_when_there_is_no_band():
    a, b = {"test_ppl": 20.0, "test_nll_sums": _sums(3.0)}, {"test_ppl": 25.0, "test_nll_sums": _sums(3.2)}
    text, band = ratio_cell(a, b, 100)
    assert band is not None and text.endswith("]") and "× [" in text
    assert ratio_cell({"test_ppl": 20.0}, {"test_ppl": 25.0}, 100) == ("0.800×", None)  # saved before the sums
    assert ratio_cell({"error": "x"}, b, 100) == ("–", None)
    assert paired_band(_sums(3.0, n=10), _sums(3.0, n=12), 100) is None  # other windows: no pairing
