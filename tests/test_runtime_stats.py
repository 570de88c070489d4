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


def test_the_runtime_table_implements_exactly_the_input_operands():
    """Every operand whose data comes from X or its Gram matrix has torch code, and the
    runtime computes nothing the language cannot name."""
    from prunedsl.dsl.operands import GRADIENT, GRAM, INPUT, LAYER, OPERANDS
    from prunedsl.runtime.stats import (GRADIENT_STATISTICS, INPUT_STATISTICS, KNOWN_STATISTICS,
                                        LAYER_STATISTICS, STATISTICS)
    from_input = {k for k, o in OPERANDS.items() if o.source in (INPUT, GRAM)}
    assert set(STATISTICS) == from_input == set(INPUT_STATISTICS)
    assert set(X_STATISTICS) == {k for k, o in OPERANDS.items() if o.source == INPUT}
    assert set(LAYER_STATISTICS) == {k for k, o in OPERANDS.items() if o.source == LAYER}
    assert set(GRADIENT_STATISTICS) == {k for k, o in OPERANDS.items() if o.source == GRADIENT}
    assert set(KNOWN_STATISTICS) == {k for k, o in OPERANDS.items() if o.source != "block"}  # per layer
    # today's names, so a table edit that drops or renames one is seen
    assert set(X_STATISTICS) == {"x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std", "x_var"}
    assert set(INPUT_STATISTICS) - set(X_STATISTICS) == {"hinv"}
    assert set(LAYER_STATISTICS) == {"W", "n_in", "n_out"} and set(GRADIENT_STATISTICS) == {"G"}


def test_statistics_are_the_same_float32_ops_as_before(x):
    """Bit-identical to the former if-chain (same ops, same order): printed digits of
    every metric depend on it."""
    x = x.view(3, 100, 7)
    s = input_statistics(x, set(X_STATISTICS) | {"hinv"})
    f = x.reshape(-1, 7).float()
    var, mean = torch.var_mean(f, dim=0, correction=0, keepdim=True)
    before = {"x_norm2": f.square().sum(0, keepdim=True).sqrt_(), "x_norm1": f.abs().sum(0, keepdim=True),
              "x_norminf": f.abs().amax(0, keepdim=True), "x_mean": mean, "x_var": var, "x_std": var.sqrt(),
              "hinv": hinv_diag(gram(f))}
    assert list(s) == list(before)  # the same dict order too
    for k, v in before.items():
        assert torch.equal(s[k], v), k
