"""runtime/device.py: device and dtype resolution, half precision on CPU, block onloading."""
import json

import pytest
import torch

import prunedsl
from prunedsl.cli import main
from prunedsl.errors import ConfigError
from prunedsl.runtime.capture import run_blocks
from prunedsl.runtime.device import (CPU, Placement, modules_outside, peak_rss_bytes, resolve_dtype,
                                     resolve_placement)
from prunedsl.runtime.models import LoadedModel, find_blocks, load_model
from prunedsl.runtime.perplexity import perplexity
from prunedsl.runtime.prune import linear_state, prune_model, restore_linear_state
from prunedsl.runtime.testing import save_tiny_workspace, tiny_llama

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")


def _calib(n=4, seqlen=16, seed=0):
    return torch.randint(0, 256, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_auto_is_float32_on_cpu_and_the_checkpoints_dtype_on_a_gpu():
    p = resolve_placement("auto", "auto")
    if not torch.cuda.is_available():
        assert p == CPU and p.describe() == {"device": "cpu", "dtype": "float32", "offload": False}
    assert resolve_dtype("auto", torch.device("cuda")) is None  # the checkpoint's, set on load
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_placement("cpu", "bfloat16", offload=True).home == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("device, dtype, message", [
    ("cuda", "auto", "CUDA is not available"), ("cuda:1", "auto", "CUDA is not available"),
    ("tpu", "auto", "device"), ("cpu", "float16", "float16 on CPU"), ("cpu", "float8", "unknown dtype"),
])
def test_bad_device_or_dtype_is_a_clear_error(device, dtype, message):
    with pytest.raises(ConfigError, match=message):
        resolve_placement(device, dtype)


@no_cuda
def test_cli_says_cuda_is_missing_before_loading_anything(tmp_path, capsys):
    code = main(["prune", "--model", str(tmp_path / "missing"), "--metric", "wanda", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "--device 'cuda' was asked for but CUDA is not available" in err
    assert "Traceback" not in err


def _bf16_model():
    model = tiny_llama()
    Placement(dtype=torch.bfloat16).place_model(model)
    return model


@pytest.mark.parametrize("text, reconstruct", [("wanda", False), ("sparsegpt", True)])
def test_bfloat16_prunes_exact_counts_with_float32_statistics(text, reconstruct):
    model = _bf16_model()
    metric = prunedsl.parse(text)
    compiled = metric.compile()
    seen = []

    def scorer(name, stats):
        seen.append({k: v.dtype for k, v in stats.items() if isinstance(v, torch.Tensor)})
        return compiled(stats, layer=name)

    report = prune_model(model, _calib(), scorer, metric.requires, sparsity=0.5, progress=False,
                         reconstruct=reconstruct, group="layer" if reconstruct else "row")
    assert seen and all(d == torch.float32 for stats in seen for d in stats.values())
    for layer in report.layers:
        assert layer.pruned == round(0.5 * layer.total)
    weights = linear_state(model)
    assert all(w.dtype == torch.bfloat16 for w in weights.values())
    assert sum(int((w == 0).sum()) for w in weights.values()) >= report.pruned


def test_bfloat16_micro_batched_masks_equal_single_batch():
    metric = prunedsl.parse("wanda")
    compiled = metric.compile()
    masks = []
    for batch in (None, 1):
        model = _bf16_model()
        prune_model(model, _calib(), lambda n, s: compiled(s, layer=n), metric.requires, sparsity=0.5,
                    progress=False, calib_batch=batch)
        masks.append({k: v == 0 for k, v in linear_state(model).items()})
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])


class SpyPlacement(Placement):
    """CPU "device" that records every move, to check what onloading moves when."""
    def __init__(self, log):
        super().__init__(torch.device("cpu"), torch.float32, True)
        object.__setattr__(self, "log", log)

    def move(self, module, device):
        self.log.append(module)
        super().move(module, device)


def test_offload_onloads_one_block_at_a_time_and_changes_nothing():
    model = tiny_llama(layers=3)
    blocks, _ = find_blocks(model)
    log = []
    spy = SpyPlacement(log)
    order = []
    run_blocks(model, _calib(), lambda i, name, layer, x: order.append((i, log[-1] is blocks[i])),
               progress=False, placement=spy)
    outside = list(modules_outside(model, blocks))
    assert {id(m) for m in outside} == {id(model.model.embed_tokens), id(model.model.norm),
                                        id(model.model.rotary_emb), id(model.lm_head)}
    moved_blocks = [m for m in log if any(m is b for b in blocks)]
    assert moved_blocks == [b for b in blocks for _ in range(2)]  # in, out; block after block
    assert all(onloaded for _, onloaded in order)  # each linear ran while its own block was in

    metric = prunedsl.parse("sparsegpt")
    compiled = metric.compile()
    scorer = lambda n, s: compiled(s, layer=n)
    dense = linear_state(model)
    prune_model(model, _calib(), scorer, metric.requires, sparsity=0.5, group="layer", progress=False,
                reconstruct=True)
    ref = linear_state(model)
    restore_linear_state(model, dense)
    prune_model(model, _calib(), scorer, metric.requires, sparsity=0.5, group="layer", progress=False,
                reconstruct=True, placement=spy, calib_batch=2)
    restore_linear_state(model, dense)
    prune_model(model, _calib(), scorer, metric.requires, sparsity=0.5, group="layer", progress=False,
                reconstruct=True, placement=spy)
    assert all(torch.equal(w, ref[k]) for k, w in linear_state(model).items())  # bit-identical
    ids = _calib(n=1, seqlen=64)
    log.clear()
    assert perplexity(model, ids, seqlen=16, progress=False, placement=spy)["ppl"] == \
        perplexity(model, ids, seqlen=16, progress=False)["ppl"]
    assert sum(m is blocks[0] for m in log) == 2 * 4 + 1  # in and out per window, home at the end


def test_peak_memory_reads_rss_on_cpu():
    assert CPU.peak_memory_bytes() == peak_rss_bytes() > 10 * 2 ** 20
    CPU.empty_cache()
    CPU.reset_peak_memory()


def test_load_model_in_bfloat16_and_the_cli_records_the_placement(tmp_path, capsys):
    tiny = save_tiny_workspace(tmp_path / "ws")
    loaded = load_model(str(tiny / "model"), placement=resolve_placement("cpu", "bfloat16"))
    assert isinstance(loaded, LoadedModel) and loaded.model.dtype == torch.bfloat16
    assert loaded.placement.dtype == torch.bfloat16
    out = tmp_path / "out"
    argv = ["prune", "--model", str(tiny / "model"), "--metric", "wanda", "--nsamples", "4", "--seqlen", "32",
            "--data-dir", str(tiny / "data"), "--eval-windows", "2", "--device", "cpu", "--dtype", "bfloat16",
            "--offload", "--calib-batch", "2", "--output", str(out), "--json"]
    assert main(argv) == 0
    record = json.loads((out / "pruning.json").read_text())
    assert record["placement"] == {"device": "cpu", "dtype": "bfloat16", "offload": True, "calib_batch": 2}
    printed = json.loads(capsys.readouterr().out)
    assert printed["placement"] == record["placement"]
    assert main(["eval", "--model", str(out), "--data-dir", str(tiny / "data"), "--dtype", "bfloat16",
                 "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == pytest.approx(record["ppl"], rel=1e-6)


def test_search_takes_the_device_options_and_passes_them_on():
    from prunedsl.cli import build_parser
    from prunedsl.cli.device_options import device_settings
    args = build_parser().parse_args(["search", "--output", "x", "--device", "cpu", "--dtype", "bfloat16",
                                      "--offload", "--calib-batch", "2"])
    assert device_settings(args) == {"device": "cpu", "dtype": "bfloat16", "offload": True, "calib_batch": 2}
    plain = build_parser().parse_args(["eval", "--model", "m"])
    assert device_settings(plain, calibration=False) == {"device": "auto", "dtype": "auto", "offload": False}
