"""The library metrics, written in the language, give the masks of the published methods.

Each reference below is a straightforward torch implementation written from the paper's
definition (not from prunedsl code): Wanda sorts |W|·‖X‖ within each output row; magnitude
pruning thresholds |W| over the whole layer; RIA scores relative importance × ‖X‖^a per
row (with the activation statistic as RIA's code keeps it, mean over samples of ‖x‖²);
SparseGPT's OBS saliency is w²/[(XᵀX + λI)⁻¹]ᵢᵢ with its damping and dead-input rule;
Pruner-Zero's metric is |W·W|·mms(G). The library side goes through the real path: parse
the library name, compile it, compute the statistics with the runtime, select with
``prune_mask``.
"""
import pytest
import torch

import prunedsl
from prunedsl.runtime.masks import prune_mask
from prunedsl.runtime.stats import input_statistics

SHAPES = [(16, 64), (48, 32), (7, 96)]


def layer(seed: int, out: int, inp: int, dead: int | None = None):
    """A random weight (out, in) and calibration input (samples, tokens, in) with outlier channels."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    scale = torch.exp(torch.randn(inp, generator=g))            # channels of different size
    x = torch.randn(4, 32, inp, generator=g) * scale
    x[..., inp // 3] *= 30.0                                    # an outlier channel
    if dead is not None:
        x[..., dead] = 0.0                                      # an always-zero input
    return w, x


def library_mask(name: str, w, x, sparsity=0.5, group="row", pattern=None, extra=None):
    metric = prunedsl.parse(name)
    stats = {"W": w, "n_in": float(w.shape[1]), "n_out": float(w.shape[0]),
             **input_statistics(x, metric.requires), **(extra or {})}
    scores = metric.compile()(stats)
    return prune_mask(scores, sparsity, group=group, pattern=pattern)


# --- references, from the papers' definitions ----------------------------------------
# Counts: prunedsl prunes round(s·n); the papers' code takes int(s·n) (the same whenever
# s·n is a whole number). The references use round so that 70% of 64 columns compares too.
def per_row_sort(score, sparsity):
    k = round(score.shape[1] * sparsity)
    idx = torch.sort(score, dim=-1, stable=True).indices[:, :k]
    return torch.zeros_like(score, dtype=torch.bool).scatter_(1, idx, True)


def per_layer_threshold(score, sparsity):
    k = round(score.numel() * sparsity)
    idx = torch.sort(score.flatten(), stable=True).indices[:k]
    return torch.zeros(score.numel(), dtype=torch.bool).scatter_(0, idx, True).view_as(score)


def n_of_m(score, n, m):
    mask = torch.zeros_like(score, dtype=torch.bool)
    for j in range(0, score.shape[1], m):
        idx = torch.topk(score[:, j:j + m], n, dim=1, largest=False).indices
        mask.scatter_(1, j + idx, True)
    return mask


def ref_x_norm(x):                 # ‖X_j‖₂ over every calibration token
    return torch.sqrt(sum((xs ** 2).sum(0) for xs in x))


def ref_wanda(w, x):
    return w.abs() * ref_x_norm(x).reshape(1, -1)


def ref_ria(w, x, a=0.5):
    scaler_row = sum(torch.norm(xs, p=2, dim=0) ** 2 for xs in x) / x.shape[0]  # RIA keeps a mean
    rel = w.abs() / w.abs().sum(dim=0) + w.abs() / w.abs().sum(dim=1).reshape(-1, 1)
    return rel * torch.sqrt(scaler_row).reshape(1, -1) ** a


def ref_hinv(x, percdamp=0.01):
    """diag((H + λ·mean(diag H)·I)⁻¹) with SparseGPT's dead-input rule H[dead, dead] = 1."""
    flat = x.reshape(-1, x.shape[-1]).double()
    h = flat.T @ flat
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    return torch.diag(torch.linalg.inv(h)).reshape(1, -1)


def ref_sparsegpt(w, x):
    # SparseGPT also zeroes W[:, dead] before scoring: a weight change, which prunedsl's
    # --reconstruct makes (tests/test_obs.py); the metric alone scores W as it is.
    return (w.double() ** 2 / ref_hinv(x)).float()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_wanda_is_per_row_sort_of_w_times_x(shape, seed, sparsity):
    w, x = layer(seed, *shape)
    assert torch.equal(library_mask("wanda", w, x, sparsity), per_row_sort(ref_wanda(w, x), sparsity))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sparsity", [0.5, 0.6])
def test_magnitude_is_a_per_layer_threshold(shape, seed, sparsity):
    w, x = layer(seed, *shape)
    got = library_mask("magnitude", w, x, sparsity, group="layer")
    assert torch.equal(got, per_layer_threshold(w.abs(), sparsity))
    assert torch.equal(library_mask("magnitude", w, x, sparsity), per_row_sort(w.abs(), sparsity))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("a", [0.5, 0.3])
def test_ria_is_relative_importance_times_activation(shape, seed, a):
    w, x = layer(seed, *shape)
    name = "ria" if a == 0.5 else f"ria(a = {a})"
    assert torch.equal(library_mask(name, w, x), per_row_sort(ref_ria(w, x, a), 0.5))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_sparsegpt_is_the_obs_saliency(shape, seed):
    w, x = layer(seed, *shape)
    assert torch.equal(library_mask("sparsegpt", w, x), per_row_sort(ref_sparsegpt(w, x), 0.5))
    got = library_mask("sparsegpt", w, x, 0.6, group="layer")
    assert torch.equal(got, per_layer_threshold(ref_sparsegpt(w, x), 0.6))


def test_hinv_handles_dead_inputs_as_sparsegpt():
    w, x = layer(2, 16, 64, dead=5)
    got = input_statistics(x, {"hinv"})["hinv"]
    torch.testing.assert_close(got, ref_hinv(x).float(), rtol=1e-5, atol=0)
    assert torch.equal(library_mask("sparsegpt", w, x), per_row_sort(ref_sparsegpt(w, x), 0.5))


@pytest.mark.parametrize("name, ref", [("wanda", ref_wanda), ("sparsegpt", ref_sparsegpt),
                                       ("magnitude", lambda w, x: w.abs())])
@pytest.mark.parametrize("pattern", [(2, 4), (4, 8)])
def test_n_of_m_selection(name, ref, pattern):
    w, x = layer(3, 24, 64)
    got = library_mask(name, w, x, pattern=pattern)
    assert torch.equal(got, n_of_m(ref(w, x), *pattern))


@pytest.mark.parametrize("seed", [0, 1])
def test_pruner_zero_and_gblm(seed):
    w, x = layer(seed, 16, 64)
    g = torch.rand(16, 64, generator=torch.Generator().manual_seed(seed + 10)) * 1e-3
    ww = torch.abs(w * w)
    mms = (g - g.min()) / (g.max() - g.min())
    got = library_mask("pruner_zero", w, x, extra={"G": g})
    assert torch.equal(got, per_row_sort(ww * mms, 0.5))
    # GBLM-Pruner: |W|·‖X‖/√nsamples + |W|·(100·G), with their ‖X‖ a mean over the samples
    gblm = w.abs() * ref_x_norm(x) / x.shape[0] ** 0.5 + w.abs() * (100 * g)
    got = library_mask("gblm(alpha = 200)", w, x, extra={"G": g})   # 100·√4 for 4 samples
    assert torch.equal(got, per_row_sort(gblm, 0.5))


def test_library_entries_have_citations():
    from prunedsl.dsl.library import library
    metrics = library("metric")
    for name in ("magnitude", "wanda", "ria", "sparsegpt", "pruner_zero", "gblm"):
        assert name in metrics and metrics[name].doc, name
    assert prunedsl.parse("sparsegpt").requires == {"W", "hinv"}
    assert prunedsl.parse("pruner_zero").requires == {"W", "G"}


@pytest.mark.parametrize("checkpoint", [True, False])
def test_g_is_the_l2_over_samples_of_the_loss_gradient(checkpoint):
    from prunedsl.runtime.gradients import gradient_norms
    from prunedsl.runtime.testing import VOCAB, tiny_llama
    model = tiny_llama()
    ids = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(0))
    flags = [p.requires_grad for p in model.parameters()]
    got = gradient_norms(model, ids, progress=False, checkpoint=checkpoint)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    ref = {}
    for row in ids:  # one backward per calibration window, summing squared gradients
        model.zero_grad()
        model(input_ids=row[None], labels=row[None]).loss.backward()
        for name, p in model.named_parameters():
            key = name.removesuffix(".weight")
            if key in got:
                ref[key] = ref.get(key, 0) + p.grad ** 2
    assert set(got) == set(ref) and len(got) == 14  # every block linear, nothing else
    for key in got:
        torch.testing.assert_close(got[key], ref[key].sqrt(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("checkpoint, forwards", [(True, 2), (False, 1)])
def test_g_recomputes_each_block_forward_when_checkpointing(checkpoint, forwards):
    # Checkpointing keeps only each block's input alive and pays one recomputed forward
    # per block in the backward: each block's first linear runs twice per window, not once.
    # (The recomputation stops early, once every saved tensor is back, so later modules'
    # forward hooks may not fire again; the first linear's always does.)
    from prunedsl.runtime.gradients import gradient_norms
    from prunedsl.runtime.testing import VOCAB, tiny_llama
    model = tiny_llama()
    ids = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(0))
    calls = []
    hooks = [layer.self_attn.q_proj.register_forward_hook(lambda *a: calls.append(1))
             for layer in model.model.layers]
    gradient_norms(model, ids, progress=False, checkpoint=checkpoint)
    for h in hooks:
        h.remove()
    assert len(calls) == forwards * len(model.model.layers) * len(ids)
