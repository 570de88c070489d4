"""Rank correlations and the bootstrap band against hand-computed values."""
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.fidelity import (average_ranks, bootstrap_ppl, bootstrap_ppl_ratio, kendall,
                                       spearman)


def test_average_ranks_share_tied_ranks():
    assert average_ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]


def test_spearman_without_ties_is_the_textbook_formula():
    # d = rank differences (0, 1, -1, 0, 0): rho = 1 - 6·Σd² / (n(n²-1)) = 1 - 12/120
    assert spearman([1, 2, 3, 4, 5], [5, 7, 6, 8, 9]) == pytest.approx(0.9)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)


def test_spearman_with_ties_is_pearson_of_average_ranks():
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 2, 3, 4 -> cov 2.5/4... by hand: r = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_kendall_by_hand_with_and_without_ties():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> 4/6
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # x = (1, 2, 2, 3), y = (1, 2, 3, 4): 5 concordant, 0 discordant, one tie in x:
    # tau-b = 5 / sqrt((6 - 1) · 6)
    assert kendall([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(kendall([1, 1, 1], [1, 2, 3]))


@pytest.mark.filterwarnings("ignore:An input array is constant")
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=3, max_size=12))
def test_rank_correlations_agree_with_scipy(pairs):
    stats = pytest.importorskip("scipy.stats")
    x, y = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    for ours, theirs in ((spearman(x, y), stats.spearmanr(x, y)[0]), (kendall(x, y), stats.kendalltau(x, y)[0])):
        if math.isnan(theirs):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(theirs, abs=1e-9)


def test_rank_correlation_refuses_bad_input():
    with pytest.raises(PruneRuntimeError, match="different lengths"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(PruneRuntimeError, match="non-finite"):
        kendall([1, math.nan], [1, 2])


def test_bootstrap_band_contains_the_point_estimate_and_narrows_with_less_spread():
    r = random.Random(0)
    tokens = 100
    sums = [tokens * (3 + r.gauss(0, 0.3)) for _ in range(40)]
    band = bootstrap_ppl(sums, tokens)
    assert band.ppl == pytest.approx(math.exp(sum(sums) / (40 * tokens)))
    assert band.low < band.ppl < band.high
    calm = bootstrap_ppl([tokens * 3 + (s - tokens * 3) / 10 for s in sums], tokens)
    assert calm.relative_halfwidth < band.relative_halfwidth / 5
    assert bootstrap_ppl(sums, tokens) == band          # seeded
    constant = bootstrap_ppl([tokens * 2.0] * 5, tokens)
    assert constant.low == constant.ppl == constant.high == pytest.approx(math.exp(2))


def test_paired_ratio_band_cancels_the_shared_window_noise():
    r = random.Random(1)
    tokens = 50
    hard = [tokens * (3 + r.gauss(0, 0.5)) for _ in range(40)]   # window difficulty, shared
    better = [h - tokens * (0.02 + r.gauss(0, 0.005)) for h in hard]
    alone = bootstrap_ppl(better, tokens)
    paired = bootstrap_ppl_ratio(better, hard, tokens)
    assert paired.ppl == pytest.approx(alone.ppl / bootstrap_ppl(hard, tokens).ppl)
    assert paired.high < 1                                        # better, beyond window noise
    assert paired.relative_halfwidth < alone.relative_halfwidth / 10
    with pytest.raises(PruneRuntimeError, match="paired"):
        bootstrap_ppl_ratio(better[:3], hard, tokens)
