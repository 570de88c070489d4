"""Input statistics against direct float64 torch formulas."""
import pytest
import torch

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.stats import X_STATISTICS, check_requires, gram, hinv_diag, input_statistics


@pytest.fixture
def x():
    torch.manual_seed(0)
    x = torch.randn(300, 7) * torch.tensor([1, 2, 3, 0.1, 10, 1, 1]) + 5
    x[:, 5] = 0.0  # a dead channel
    return x


def test_statistics_match_formulas(x):
    s = input_statistics(x, set(X_STATISTICS))
    d = x.double()
    expected = {
        "x_norm2": d.pow(2).sum(0).sqrt(),
        "x_norm1": d.abs().sum(0),
        "x_norminf": d.abs().max(0).values,
        "x_mean": d.mean(0),
        "x_std": d.std(0, unbiased=False),
        "x_var": d.var(0, unbiased=False),
    }
    assert set(s) == set(expected)
    for name, ref in expected.items():
        assert s[name].shape == (1, 7) and s[name].dtype == torch.float32, name
        torch.testing.assert_close(s[name].double().view(-1), ref, rtol=1e-5, atol=1e-6)


def test_only_requested_are_computed(x):
    assert set(input_statistics(x, {"x_norm2", "W", "n_in"})) == {"x_norm2"}
    assert input_statistics(x, set()) == {}


def test_three_dim_input_is_flattened(x):
    a = input_statistics(x.view(3, 100, 7), {"x_norm2", "x_mean"})
    b = input_statistics(x, {"x_norm2", "x_mean"})
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_hinv_matches_inverse_with_dead_input(x):
    h = (x.double().T @ x.double())
    h2 = h.clone()
    dead = torch.diagonal(h2) == 0
    assert dead.sum() == 1
    torch.diagonal(h2)[dead] = 1.0
    h2 += 0.01 * torch.diagonal(h2).mean() * torch.eye(7, dtype=torch.float64)
    ref = torch.diagonal(torch.linalg.inv(h2))
    got = input_statistics(x, {"hinv"})["hinv"]
    assert got.shape == (1, 7) and got.dtype == torch.float32
    torch.testing.assert_close(got.double().view(-1), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(hinv_diag(gram(x)), got)


def test_gram_dtype(x):
    assert gram(x).dtype == torch.float32 and gram(x).shape == (7, 7)
    assert gram(x, torch.float64).dtype == torch.float64


def test_hinv_not_finite_input():
    x = torch.ones(4, 3)
    x[0, 0] = float("nan")
    with pytest.raises(PruneRuntimeError, match="positive definite"):
        input_statistics(x, {"hinv"})


def test_unknown_statistic_names():
    check_requires({"x_norm2", "hinv", "G", "W", "n_in", "n_out"})
    with pytest.raises(PruneRuntimeError, match="x_norm3"):
        check_requires({"x_norm3"})
