"""run_prune / run_eval: typed results, cheap checks before the load, eval settings from pruning.json."""
import json

import pytest

import prunedsl
from prunedsl.cli import main
from prunedsl.errors import ConfigError, PruneRuntimeError
from prunedsl.runtime.job import PruneJob, run_eval, run_prune
from prunedsl.runtime.results import PruneResult
from prunedsl.runtime.testing import save_tiny_workspace


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_workspace(tmp_path_factory.mktemp("job"))


def _job(tiny, **kw):
    base = dict(model=str(tiny / "model"), metric=prunedsl.parse("wanda"), nsamples=2, seqlen=32,
                data_dir=str(tiny / "data"), progress=False, eval_windows=2)
    return PruneJob(**{**base, **kw})


def test_result_is_typed_and_to_dict_is_the_json_record(tiny, capsys):
    result = run_prune(_job(tiny))
    assert isinstance(result, PruneResult) and result.ppl == result.evaluation.ppl
    record = result.to_dict()
    keys = list(record)
    assert keys[:3] == ["model", "model_source", "input"]
    assert keys[keys.index("allocation_seconds") + 1:] == ["ppl", "eval_seconds", "eval_windows", "seqlen",
                                                           "torch", "python", "nll", "eval_tokens"]
    assert record["calibration"] == {"source": "wikitext-2 validation", "nsamples": 2, "seqlen": 32, "seed": 0}
    assert main(["prune", "--model", str(tiny / "model"), "--metric", "wanda", "--nsamples", "2", "--seqlen", "32",
                 "--data-dir", str(tiny / "data"), "--eval-windows", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    as_json = json.loads(json.dumps(record, default=str))  # tuples print as lists
    assert list(printed) == list(as_json)
    assert {k: v for k, v in printed.items() if not k.endswith("seconds")} == \
        {k: v for k, v in as_json.items() if not k.endswith("seconds")}
    unevaluated = run_prune(_job(tiny, evaluate=False)).to_dict()
    assert unevaluated["ppl"] is None and "nll" not in unevaluated


def test_eval_of_a_saved_directory_uses_its_pruning_json_settings(tiny, tmp_path, capsys):
    out = tmp_path / "pruned"
    pruned = run_prune(_job(tiny, seqlen=16, eval_windows=3, output=str(out)))
    again = run_eval(str(out), data_dir=str(tiny / "data"), progress=False)
    assert (again.seqlen, again.windows) == (16, 3) and again.settings_from.endswith("pruning.json")
    assert again.ppl == pytest.approx(pruned.ppl, rel=1e-6)  # "reloads with the same perplexity"
    explicit = run_eval(str(out), seqlen=32, eval_windows=2, data_dir=str(tiny / "data"), progress=False)
    assert (explicit.seqlen, explicit.windows, explicit.settings_from) == (32, 2, None)
    assert main(["eval", "--model", str(out), "--data-dir", str(tiny / "data")]) == 0
    captured = capsys.readouterr()
    assert "as in" in captured.err and "windows of 16 tokens" in captured.out


def test_output_checks_come_before_the_model_load(tiny, tmp_path, monkeypatch):
    from prunedsl.runtime import job as job_mod

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the bad request was noticed")
    monkeypatch.setattr(job_mod, "load_model", no_load)
    with pytest.raises(PruneRuntimeError, match="would overwrite the input model"):
        run_prune(_job(tiny, output=str(tiny / "model")))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(PruneRuntimeError, match="not a prunedsl output"):
        run_prune(_job(tiny, output=str(tmp_path / "mine")))
    binary = tmp_path / "calib.bin"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(PruneRuntimeError, match="binary file"):
        run_prune(_job(tiny, calib_data=str(binary)))


def test_seqlen_past_the_context_fails_before_calibration(tiny, monkeypatch):
    from prunedsl.runtime import job as job_mod

    def no_data(*a, **k):
        raise AssertionError("calibration data was read for an impossible seqlen")
    monkeypatch.setattr(job_mod, "calibration_ids", no_data)
    with pytest.raises(ConfigError, match=r"seqlen 100000 is longer than the model's context of 256 tokens"):
        run_prune(_job(tiny, seqlen=100000))
    with pytest.raises(ConfigError, match="longer than the model's context"):
        run_eval(str(tiny / "model"), seqlen=100000, data_dir=str(tiny / "data"), progress=False)
