"""Saving never loses work: the input model, foreign directories and crashes mid-save."""
import json
import os
import stat

import pytest
import torch

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.models import LoadedModel
from prunedsl.runtime.save import check_output_dir, save_pruned, write_json_atomic
from prunedsl.runtime.testing import tiny_llama, tiny_tokenizer


def _loaded():
    torch.manual_seed(0)
    return LoadedModel(tiny_llama(), tiny_tokenizer(), "tiny", "test")


def test_output_equal_to_the_input_model_is_refused(tmp_path):
    model_dir = save_pruned(_loaded(), tmp_path / "model", {"n": 1})
    with pytest.raises(PruneRuntimeError, match="would overwrite the input model"):
        check_output_dir(model_dir, model=str(model_dir))
    with pytest.raises(PruneRuntimeError, match="would overwrite the input model"):
        check_output_dir(tmp_path, model=str(model_dir))  # a parent of the input: replacing it deletes it
    with pytest.raises(PruneRuntimeError, match="would overwrite the input model"):
        check_output_dir(model_dir, model=str(model_dir), overwrite=True)  # never, not even with --overwrite


def test_foreign_non_empty_directory_needs_overwrite(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("months of work")
    with pytest.raises(PruneRuntimeError, match="not a prunedsl output") as info:
        check_output_dir(tmp_path / "notes")
    assert "--overwrite" in info.value.render()
    assert check_output_dir(tmp_path / "notes", overwrite=True) == (tmp_path / "notes").resolve()
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    check_output_dir(tmp_path / "new" / "deeper")  # created on save


def test_previous_output_is_replaced_whole(tmp_path):
    out = save_pruned(_loaded(), tmp_path / "out", {"run": 1})
    (out / "stale.txt").write_text("from the first run")
    check_output_dir(out)  # an earlier prunedsl output: fine without --overwrite
    save_pruned(_loaded(), out, {"run": 2})
    assert json.loads((out / "pruning.json").read_text()) == {"run": 2}
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old copies left


def test_a_file_or_unwritable_place_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PruneRuntimeError, match="not a directory"):
        check_output_dir(tmp_path / "file")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PruneRuntimeError, match="permission denied"):
            check_output_dir(locked / "out")


def test_crash_mid_save_keeps_the_old_output(tmp_path, monkeypatch):
    out = save_pruned(_loaded(), tmp_path / "out", {"run": 1})
    loaded = _loaded()

    def crash(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(loaded.tokenizer, "save_pretrained", crash)
    with pytest.raises(PruneRuntimeError, match="No space left"):
        save_pruned(loaded, out, {"run": 2})
    assert json.loads((out / "pruning.json").read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = save_pruned(_loaded(), tmp_path / "out", {"run": 1})
        write_json_atomic(tmp_path / "state.json", {"a": 1})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["pruning.json"] == 0o644 and modes["model.safetensors"] == 0o644
    assert set(modes.values()) == {0o644}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o644
