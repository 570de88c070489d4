"""Structured pruning from the metric's type: Row metrics prune output channels, Col metrics
input channels. Masks zero whole rows / columns; nothing is physically removed (shapes stay)."""
import pytest
import torch

import prunedsl
from prunedsl.errors import PruneDSLError
from prunedsl.runtime.job import PruneJob, run_prune
from prunedsl.runtime.masks import prune_mask
from prunedsl.runtime.prune import prune_model
from prunedsl.runtime.testing import VOCAB, tiny_llama

ROW = "row_norm(|W| * ‖X‖)"          # one score per output channel
COL = "col_sum(|W|) * ‖X‖"           # one score per input channel


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))


def test_types():
    assert prunedsl.parse(ROW).type.shape == "Row"
    assert prunedsl.parse(COL).type.shape == "Col"


def test_prune_mask_expands_row_and_col_scores():
    scores = torch.tensor([[3.0], [1.0], [2.0], [0.5]])                       # (4, 1)
    m = prune_mask(scores, 0.5, shape=(4, 6))
    assert torch.equal(m, torch.tensor([False, True, False, True]).view(4, 1).expand(4, 6))
    cols = torch.tensor([[1.0, 0.0, 5.0, 2.0, -1.0]])                           # (1, 5)
    m = prune_mask(cols, 0.4, shape=(3, 5))
    assert torch.equal(m, torch.tensor([False, True, False, False, True]).expand(3, 5))
    with pytest.raises(Exception):
        prune_mask(scores, 0.5, pattern=(2, 4), shape=(4, 8))


def _prune(text, ids, sparsity=0.5, reconstruct=False):
    model = tiny_llama()
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    metric = prunedsl.parse(text)
    f = metric.compile()
    report = prune_model(model, ids, lambda n, s: f(s, layer=n), metric.requires, sparsity=sparsity,
                         group="layer", reconstruct=reconstruct, progress=False)
    return model, dense, report


def _weights(model):
    return {n[:-len(".weight")]: p.detach() for n, p in model.named_parameters()
            if n.endswith("proj.weight")}


@pytest.mark.parametrize("reconstruct", [False, True])
def test_row_metric_zeroes_whole_output_channels(ids, reconstruct):
    model, dense, report = _prune(ROW, ids, 0.25, reconstruct)
    for name, w in _weights(model).items():
        zero_rows = (w == 0).all(dim=1)
        assert int(zero_rows.sum()) == round(0.25 * w.shape[0]), name
        # kept rows are untouched (a pruned row has nothing left to compensate with), except
        # that with OBS the columns fed by pruned channels upstream are dead inputs (always
        # 0), which SparseGPT zeroes: o_proj after pruned v rows, down_proj after gate/up
        dead = (w == 0).all(dim=0) if reconstruct else torch.zeros(w.shape[1], dtype=torch.bool)
        ref = dense[name + ".weight"]
        torch.testing.assert_close(w[~zero_rows][:, ~dead], ref[~zero_rows][:, ~dead])
        if reconstruct and name.endswith("down_proj"):
            assert dead.any()
    assert report.sparsity == pytest.approx(0.25, abs=0.01)
    with torch.no_grad():  # nothing is removed: same shapes, the model still runs
        assert model(input_ids=ids).logits.shape == (3, 24, VOCAB)


@pytest.mark.parametrize("reconstruct", [False, True])
def test_col_metric_zeroes_whole_input_channels(ids, reconstruct):
    model, dense, _ = _prune(COL, ids, 0.5, reconstruct)
    changed = False
    for name, w in _weights(model).items():
        zero_cols = (w == 0).all(dim=0)
        assert int(zero_cols.sum()) == round(0.5 * w.shape[1]), name
        kept = dense[name + ".weight"][:, ~zero_cols]
        changed |= not torch.equal(w[:, ~zero_cols], kept)
    assert changed is reconstruct  # OBS moves the pruned columns' work onto the kept ones


def test_structured_with_n_of_m_or_global_is_rejected():
    with pytest.raises(PruneDSLError, match="per-weight"):
        run_prune(PruneJob(model="unused", metric=prunedsl.parse(ROW), pattern=(2, 4), sparsity=0.5))
    with pytest.raises(PruneDSLError, match="use group layer") as err:  # the API names no flag
        run_prune(PruneJob(model="unused", metric=prunedsl.parse(COL), group="global"))
    assert "--" not in str(err.value)
