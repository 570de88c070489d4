"""The search's --device/--dtype/--offload/--calib-batch: saved in state.json, the saved ones on
--resume (all but --dtype may change; search/device_state.py), and the structure search
loads its model with them."""
import json
from types import SimpleNamespace

import pytest
import torch

from prunedsl import cli
from prunedsl.errors import SearchError
from prunedsl.search.cli import _settings
from prunedsl.search.device_state import check_model_dtype, recording_model_dtype


def _args(*argv):
    return cli.build_parser().parse_args(["search", "--output", "x", *argv])


NEW = ("--model", "m", "--sparsity", "0.5")


def test_a_new_search_saves_the_device_options_given_or_their_defaults():
    s = _settings(_args(*NEW, "--dtype", "bfloat16", "--calib-batch", "2"), None)
    assert {k: s[k] for k in ("device", "dtype", "offload", "calib_batch")} == \
        {"device": "auto", "dtype": "bfloat16", "offload": False, "calib_batch": 2}


def test_resume_takes_the_saved_options_and_lets_all_but_dtype_change():
    saved = {**_settings(_args(*NEW, "--dtype", "bfloat16", "--offload", "--device", "cpu"), None),
             "model_dtype": "bfloat16"}
    s = _settings(_args("--resume"), saved)
    assert (s["device"], s["dtype"], s["offload"], s["calib_batch"]) == ("cpu", "bfloat16", True, None)
    s = _settings(_args("--resume", "--device", "auto", "--no-offload", "--calib-batch", "4"), saved)
    assert (s["device"], s["dtype"], s["offload"], s["calib_batch"]) == ("auto", "bfloat16", False, 4)
    assert _settings(_args("--resume", "--dtype", "bfloat16"), saved)["dtype"] == "bfloat16"
    with pytest.raises(SearchError) as err:
        _settings(_args("--resume", "--dtype", "float32"), saved)
    text = str(err.value)
    assert "--dtype float32 differs from the saved search's --dtype bfloat16" in text
    assert "another --output" in text


def test_resume_may_name_the_dtype_auto_loaded_the_model_in():
    saved = {**_settings(_args(*NEW), None), "model_dtype": "bfloat16"}  # auto, measured on a GPU
    assert _settings(_args("--resume", "--dtype", "bfloat16"), saved)["dtype"] == "bfloat16"
    with pytest.raises(SearchError, match="--dtype float32 differs .* --dtype auto, which loaded the model in bfloat16"):
        _settings(_args("--resume", "--dtype", "float32"), saved)


def test_a_state_saved_before_the_device_options_still_resumes():
    old = {k: v for k, v in _settings(_args(*NEW), None).items()
           if k not in ("device", "dtype", "offload", "calib_batch")}
    s = _settings(_args("--resume"), old)
    assert (s["device"], s["dtype"], s["offload"], s["calib_batch"]) == ("auto", "auto", False, None)
    assert _settings(_args("--resume", "--dtype", "bfloat16"), old)["dtype"] == "bfloat16"


def test_the_model_dtype_is_recorded_and_a_different_one_refused():
    s = {"device": "auto", "dtype": "auto"}
    check_model_dtype(s, torch.bfloat16)
    assert s["model_dtype"] == "bfloat16"
    check_model_dtype(s, torch.bfloat16)
    fake = SimpleNamespace(loaded=SimpleNamespace(placement=SimpleNamespace(dtype=torch.float32)))
    with pytest.raises(SearchError) as err:
        recording_model_dtype(lambda: fake, s)()
    text = str(err.value)
    assert "measured its fitness with the model in bfloat16" in text and "gives float32" in text
    assert "give --dtype bfloat16 to resume it" in text and s["model_dtype"] == "bfloat16"


# --- end to end on a saved tiny Llama ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny_search_device"))


@pytest.fixture
def loads(monkeypatch):
    """The placements the structure fitness loads its model with."""
    import prunedsl.search.structure_fitness as sf
    seen = []
    real = sf.load_model
    monkeypatch.setattr(sf, "load_model",
                        lambda spec, placement=None: seen.append(placement) or real(spec, placement=placement))
    return seen


def _search(tiny, out, *extra):
    return cli.main(["search", "--model", str(tiny / "model"), "--data-dir", str(tiny / "data"),
                     "--nsamples", "3", "--seqlen", "16", "--val-windows", "2", "--threads", "1", "--batch", "2",
                     "--structure", "channels", "--ratio", "0.25", "--full-evals", "1", "--output", str(out),
                     "--json", *extra])


def test_structure_search_loads_with_the_options_saves_them_and_keeps_the_dtype_on_resume(tiny, tmp_path, capsys, loads):
    out = tmp_path / "s"
    assert _search(tiny, out, "--budget", "1", "--dtype", "bfloat16", "--calib-batch", "2") == 0
    assert [(p.device.type, p.dtype, p.offload) for p in loads] == [("cpu", torch.bfloat16, False)]
    saved = json.loads((out / "state.json").read_text())["config"]["cli"]
    assert {k: saved[k] for k in ("device", "dtype", "offload", "calib_batch", "model_dtype")} == \
        {"device": "auto", "dtype": "bfloat16", "offload": False, "calib_batch": 2, "model_dtype": "bfloat16"}
    capsys.readouterr()
    assert _search(tiny, out, "--resume", "--budget", "2", "--dtype", "float32") == 2
    assert "--dtype float32 differs from the saved search's --dtype bfloat16" in capsys.readouterr().err
    assert len(loads) == 1  # refused before the load
    assert _search(tiny, out, "--resume", "--budget", "2") == 0
    assert loads[-1].dtype == torch.bfloat16


def test_a_saved_auto_dtype_that_now_gives_another_dtype_is_refused_before_the_load(tiny, tmp_path, capsys, loads):
    out = tmp_path / "a"
    assert _search(tiny, out, "--budget", "1") == 0
    state = json.loads((out / "state.json").read_text())
    assert state["config"]["cli"]["model_dtype"] == "float32"  # auto on CPU
    state["config"]["cli"]["model_dtype"] = "bfloat16"         # as if auto had loaded it on a bf16 GPU
    (out / "state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert _search(tiny, out, "--resume", "--budget", "2") == 2
    err = capsys.readouterr().err
    assert "measured its fitness with the model in bfloat16; --dtype auto on --device auto gives float32" in err
    assert len(loads) == 1
    assert _search(tiny, out, "--resume", "--budget", "2", "--dtype", "bfloat16") == 0
    assert loads[-1].dtype == torch.bfloat16


def test_structure_search_refuses_offload(tiny, tmp_path, capsys, loads):
    assert _search(tiny, tmp_path / "o", "--budget", "1", "--offload") == 2
    assert "--offload applies to masked pruning only" in capsys.readouterr().err and not loads


def test_ray_workers_load_the_model_in_the_dtype_this_process_loaded_it_in(tiny, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    import prunedsl.search.ray_pool as ray_pool
    given = []

    class NoPool:
        def __init__(self, *args, device=None, **kwargs):
            given.append(device)
            raise SearchError("no Ray pool in this test")
    monkeypatch.setattr(ray_pool, "RayPool", NoPool)
    code = cli.main(["search", "--model", str(tiny / "model"), "--data-dir", str(tiny / "data"), "--sparsity", "0.5",
                     "--nsamples", "2", "--seqlen", "16", "--val-windows", "2", "--threads", "1", "--budget", "1",
                     "--workers", "2", "--output", str(tmp_path / "r")])
    assert code == 2 and "no Ray pool in this test" in capsys.readouterr().err
    # --dtype auto loaded float32 here (CPU): the workers get float32, not "auto"
    assert given == [{"device": "auto", "dtype": "float32", "offload": False, "calib_batch": None}]
