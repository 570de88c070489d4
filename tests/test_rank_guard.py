"""A rank-equivalent formula whose float32 scores collapse still prunes like its canonical form."""
import logging

import torch

import prunedsl
from prunedsl.runtime.models import LoadedModel
from prunedsl.runtime.rank_guard import extra_ties, rank_safe
from prunedsl.runtime.testing import VOCAB, tiny_llama, tiny_tokenizer
from prunedsl.runtime.workbench import Workbench


def _bench():
    torch.manual_seed(0)
    model = tiny_llama()
    with torch.no_grad():  # weights spread over decades, as in a real model, so |W|^39 underflows for many
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.mul_(torch.exp(torch.randn_like(p) * 2)).clamp_(-0.9, 0.9)
    calib = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    return Workbench(LoadedModel(model, tiny_tokenizer(), "tiny", "test"), calib, progress=False)


def _masks(bench):
    return {n: (p == 0).clone() for n, p in bench.model.named_parameters() if n.endswith("proj.weight")}


def test_power_39_prunes_like_magnitude(caplog):
    bench = _bench()
    bench.prune(prunedsl.parse("|W|"), sparsity=0.3)
    magnitude = _masks(bench)
    with caplog.at_level(logging.WARNING, logger="prunedsl.runtime"):
        bench.prune(prunedsl.parse("|W| ^ 39"), sparsity=0.3)
    guarded = _masks(bench)
    assert all(torch.equal(guarded[name], magnitude[name]) for name in magnitude)
    assert "tie in float32" in caplog.text and "|W|" in caplog.text


def test_without_the_guard_the_ties_are_pruned_by_position():
    """What the guard prevents: the written scores alone give another mask."""
    bench = _bench()
    layer, = [m for n, m in bench.model.named_modules() if n.endswith("layers.0.mlp.down_proj")]
    w = layer.weight.detach()
    written, rank_form = w.abs() ** 39, w.abs()
    assert extra_ties(written, rank_form) > 0.05


def test_metrics_without_collapse_are_scored_as_written():
    metric = prunedsl.parse("(|W| / col_sum(|W|) + |W| / row_sum(|W|)) * ‖X‖ ^ 0.5")  # ria

    def scorer(layer, stats):
        return metric.compile()(stats, layer=layer)
    guarded = rank_safe(metric, "row", scorer)
    stats = {"W": torch.randn(8, 16), "x_norm2": torch.rand(1, 16) + 0.1}
    assert torch.equal(guarded("l", stats), scorer("l", stats))
