"""Exact, deterministic mask selection against a slow reference (stable argsort)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunedsl.errors import NonFiniteScoreError, PruneRuntimeError
from prunedsl.runtime.masks import global_sparsities, prune_mask


def ref_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: the first k of a stable ascending sort in each row."""
    idx = scores.argsort(dim=1, stable=True)[:, :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)


def tied(shape, levels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, shape, generator=g).float()


@pytest.mark.parametrize("levels", [1, 2, 3, 1000])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.73, 1.0])
def test_row_matches_reference(levels, sparsity):
    s = tied((17, 40), levels)
    mask = prune_mask(s, sparsity, group="row")
    k = round(sparsity * 40)
    assert (mask.sum(1) == k).all()
    assert torch.equal(mask, ref_lowest(s, k))


@pytest.mark.parametrize("levels", [1, 2, 5, 10**6])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.99, 1.0])
def test_layer_matches_reference(levels, sparsity):
    s = tied((13, 24), levels, seed=1)
    mask = prune_mask(s, sparsity, group="layer")
    k = round(sparsity * s.numel())
    assert int(mask.sum()) == k
    assert torch.equal(mask.view(1, -1), ref_lowest(s.view(1, -1), k))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 30), levels=st.integers(1, 6),
       sparsity=st.floats(0, 1), seed=st.integers(0, 10**6), group=st.sampled_from(["row", "layer"]))
def test_property_exact_and_deterministic(rows, cols, levels, sparsity, seed, group):
    s = tied((rows, cols), levels, seed) - 2.0  # negative values and zeros too
    mask = prune_mask(s, sparsity, group=group)
    assert torch.equal(mask, prune_mask(s.clone(), sparsity, group=group))
    if group == "row":
        assert torch.equal(mask, ref_lowest(s, round(sparsity * cols)))
    else:
        assert torch.equal(mask.view(1, -1), ref_lowest(s.view(1, -1), round(sparsity * s.numel())))


def test_signed_zero_and_infinities_are_ordered():
    s = torch.tensor([[0.0, -0.0, float("inf"), -float("inf"), 1.0, 0.0]])
    mask = prune_mask(s, 0.5, group="row")
    assert mask.tolist() == [[True, True, False, True, False, False]]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (0, 4), (4, 4)])
def test_nm_exact_per_group(n, m):
    s = tied((6, 32), 2, seed=3)
    mask = prune_mask(s, 0.5, pattern=(n, m))
    groups = mask.view(6, -1, m)
    assert (groups.sum(-1) == n).all()
    ref = ref_lowest(s.view(-1, m), n).view(6, 32)  # stable sort inside each group
    assert torch.equal(mask, ref)


def test_nm_needs_divisible_input():
    with pytest.raises(PruneRuntimeError, match="divisible by 4"):
        prune_mask(torch.rand(3, 10), 0.5, pattern=(2, 4))


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 1.0])
def test_structured_rows_and_columns(sparsity):
    out, inp = 8, 12
    rows = tied((out, 1), 2, seed=4)
    mask = prune_mask(rows, sparsity, shape=(out, inp))
    assert mask.shape == (out, inp)
    k = round(sparsity * out)
    ref_rows = ref_lowest(rows.view(1, -1), k).view(out)
    assert torch.equal(mask, ref_rows.view(out, 1).expand(out, inp))
    cols = tied((1, inp), 2, seed=5)
    mask = prune_mask(cols, sparsity, shape=(out, inp))
    k = round(sparsity * inp)
    assert torch.equal(mask, ref_lowest(cols, k).expand(out, inp))


def test_bad_shapes_and_values():
    with pytest.raises(PruneRuntimeError, match="do not fit"):
        prune_mask(torch.rand(3, 3), 0.5, shape=(4, 5))
    with pytest.raises(PruneRuntimeError, match="sparsity"):
        prune_mask(torch.rand(3, 3), 1.5)
    with pytest.raises(PruneRuntimeError, match="group"):
        prune_mask(torch.rand(3, 3), 0.5, group="global")
    s = torch.rand(3, 3)
    s[1, 1] = float("nan")
    with pytest.raises(NonFiniteScoreError, match="NaN"):
        prune_mask(s, 0.5)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.77, 1.0])
def test_global_sparsities_exact_total(sparsity):
    scores = {"a": tied((4, 6), 3, 1), "b": tied((5, 3), 3, 2), "c": tied((2, 10), 3, 3)}
    fractions = global_sparsities(scores, sparsity)
    counts = {n: round(f * scores[n].numel()) for n, f in fractions.items()}
    total = sum(s.numel() for s in scores.values())
    assert sum(counts.values()) == round(sparsity * total)
    # the same selection as one stable sort over the concatenation (layer order, index)
    flat = torch.cat([s.view(-1) for s in scores.values()]).view(1, -1)
    ref = ref_lowest(flat, round(sparsity * total)).view(-1)
    start = 0
    for name, s in scores.items():
        assert counts[name] == int(ref[start: start + s.numel()].sum())
        start += s.numel()
