"""`prunedsl prune --reconstruct` through the CLI, on a saved tiny Llama (no download)."""
import json

import pytest
import torch

from prunedsl.cli import main
from prunedsl.runtime.testing import save_tiny_workspace


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # 160 inputs: two 128-column OBS blocks
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny_rec"), hidden=160)


def prune(capsys, tiny_dir, *extra):
    code = main(["prune", "--model", str(tiny_dir / "model"), "--nsamples", "4", "--seqlen", "64",
                 "--eval-windows", "2", "--data-dir", str(tiny_dir / "data"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_sparsegpt_reconstruct_defaults_to_sparsegpts_block_wide_selection(capsys, tiny_dir, tmp_path):
    code, out, err = prune(capsys, tiny_dir, "--metric", "sparsegpt", "--reconstruct",
                           "--output", str(tmp_path / "out"), "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["reconstruct"] is True and rec["group"] == "layer"
    assert abs(rec["sparsity"] - 0.5) < 1e-6
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    w = model.model.layers[0].mlp.down_proj.weight                       # (160, 320)
    zeros = (w == 0).sum(dim=1)
    assert int(zeros.sum()) == w.numel() // 2 and len(set(zeros.tolist())) > 1  # rows differ


def test_reconstruct_with_group_row_keeps_per_row_counts_and_says_so(capsys, tiny_dir):
    code, out, err = prune(capsys, tiny_dir, "--metric", "wanda", "--reconstruct", "--group", "row")
    assert code == 0, err
    assert "group=row, + OBS update" in out and "SparseGPT's OBS weight update" in out


def test_metric_not_finite_on_pruned_weights_is_a_clear_error(capsys, tiny_dir):
    code, out, err = prune(capsys, tiny_dir, "--metric", "|W| / row_min(|W|)", "--reconstruct")
    assert code == 2 and "Traceback" not in err
    assert "partly pruned weights" in err and "columns 128..159" in err


def test_without_reconstruct_the_default_group_is_row(capsys, tiny_dir):
    code, out, err = prune(capsys, tiny_dir, "--metric", "wanda", "--json")
    rec = json.loads(out)
    assert code == 0 and rec["group"] == "row" and rec["reconstruct"] is False
    assert torch.isclose(torch.tensor(rec["sparsity"]), torch.tensor(0.5))
