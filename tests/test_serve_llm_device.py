"""``prunedsl serve-llm --device/--dtype``: the placement reaches ``load_model`` (runtime/device.py),
refused combinations are clear errors before the load, and a bfloat16 model generates."""
from __future__ import annotations

import argparse

import pytest

pytest.importorskip("llguidance")
pytest.importorskip("starlette")
torch = pytest.importorskip("torch")

from serve_fakes import tiny_chat_model_dir_or_skip  # noqa: E402

from prunedsl.cli import main  # noqa: E402
from prunedsl.errors import PruneRuntimeError  # noqa: E402


def _parser():
    from prunedsl.serve import add_parser
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_serve_llm_takes_device_and_dtype_but_no_offload_or_calib_batch(capsys):
    args = _parser().parse_args(["serve-llm"])
    assert (args.device, args.dtype) == ("auto", "auto")
    args = _parser().parse_args(["serve-llm", "--device", "cpu", "--dtype", "bfloat16"])
    assert (args.device, args.dtype) == ("cpu", "bfloat16")
    for extra in (["--offload"], ["--calib-batch", "2"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["serve-llm", *extra])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve-llm", "--help"])
    assert "refused on CPU, use bfloat16 there" in " ".join(capsys.readouterr().out.split())


@pytest.fixture
def loads(monkeypatch):
    """The placements serve-llm asks load_model for (the load stops there)."""
    import prunedsl.runtime.models as models
    seen = []

    def fake(spec, *, placement=None, dtype=None):
        seen.append(placement)
        raise PruneRuntimeError("stopped at the load")
    monkeypatch.setattr(models, "load_model", fake)
    return seen


def test_the_placement_reaches_load_model(loads, capsys):
    assert main(["serve-llm", "--model", "m", "--device", "cpu", "--dtype", "bfloat16"]) != 0
    assert "stopped at the load" in capsys.readouterr().err
    assert [(p.device.type, p.dtype, p.offload) for p in loads] == [("cpu", torch.bfloat16, False)]


@pytest.mark.parametrize("extra, message", [
    (["--dtype", "float16", "--device", "cpu"], "float16 on CPU is not supported"),
] + ([(["--device", "cuda"], "CUDA is not available")] if not torch.cuda.is_available() else []))
def test_refused_placements_are_said_before_the_load(loads, capsys, extra, message):
    assert main(["serve-llm", "--model", "m", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not loads


def test_a_bfloat16_model_generates_a_formula_that_parses(tmp_path):
    from prunedsl.runtime.device import resolve_placement
    from prunedsl.runtime.models import load_model
    from prunedsl.serve.generate import Generator, SamplingParams
    from prunedsl.serve.replies import check_reply
    loaded = load_model(tiny_chat_model_dir_or_skip(tmp_path / "tiny"), placement=resolve_placement("cpu", "bfloat16"))
    gen = Generator(loaded)
    assert gen.model.dtype == torch.bfloat16 and gen.placement.dtype == torch.bfloat16
    ids = gen.prompt_ids([{"role": "user", "content": "a pruning metric"}])
    c = gen.generate(ids, SamplingParams(max_tokens=24, seed=0, grammar="formula", max_attempts=1))
    assert check_reply(c.text, "formula")[0], c.text
