"""The type and the statistics a metric requires follow the simplified formula it prints."""
import pytest
import torch

import prunedsl
from prunedsl.errors import NonFiniteScoreError


def test_abs_of_a_nonneg_sum_is_dropped():
    m = prunedsl.parse("|W + |W||")
    assert m.formula() == "2 * max(0, W)"
    assert str(m.type) == "Mat[nonneg]"


def test_max_of_w_and_minus_w_is_abs():
    m = prunedsl.parse("max(W, -W)")
    assert m.formula() == "|W|"
    assert str(m.type) == "Mat[nonneg]"


def test_a_statistic_multiplied_by_zero_is_not_required():
    m = prunedsl.parse("|W| * norm(X) + 0 * G")
    assert m.requires == {"W", "x_norm2"}
    w = torch.tensor([[1.0, -2.0]])
    x = torch.tensor([[3.0, 4.0]])
    assert torch.equal(m.compile()({"W": w, "x_norm2": x}), w.abs() * x)


def test_cancelled_terms_leave_a_nonneg_metric_of_w_only():
    m = prunedsl.parse("|W| * norm(X) - |W| * norm(X) + |W|")
    assert m.pretty() == "|W|"
    assert str(m.type) == "Mat[nonneg]"
    assert m.requires == {"W"}


def test_a_dropped_term_that_can_be_nan_keeps_its_statistics():
    # 0 * log(|G|) is NaN where G = 0, so G must still be collected and read.
    m = prunedsl.parse("|W| + 0 * log(|G|)")
    assert m.requires == {"W", "G"}
    w = torch.tensor([[1.0, -2.0]])
    with pytest.raises(NonFiniteScoreError):
        m.compile()({"W": w, "G": torch.tensor([[0.0, 1.0]])})
