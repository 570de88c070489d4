"""Text normalization, data lookup, token cache and windows (DESIGN.md §5)."""
import pytest
import torch

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime import data
from prunedsl.runtime.data import (calibration_windows, eval_windows, find_data_dir, load_text,
                                   normalize, tokenize)


def test_normalize_line_ends():
    assert normalize("a\r\nb\rc\n\nd") == "a\n\nb\n\nc\n\n\n\nd"


def test_load_text_from_path_keeps_crlf_for_normalize(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b" = A = \r\n\r\n text\r\n")
    assert load_text(path=f) == " = A = \n\n\n\n text\n\n"
    with pytest.raises(PruneRuntimeError, match="not found"):
        load_text(path=tmp_path / "missing.txt")


def test_data_dir_lookup_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env.mkdir()
    (env / "wiki.valid.tokens").write_text("x y\nz\n")
    monkeypatch.setenv("PRUNEDSL_DATA_DIR", str(env))
    assert find_data_dir(explicit) == explicit
    assert find_data_dir() == env
    assert load_text("validation") == "x y\n\nz\n\n"
    with pytest.raises(PruneRuntimeError, match="data directory not found"):
        find_data_dir(tmp_path / "nope")
    with pytest.raises(PruneRuntimeError, match="unknown split"):
        load_text("train")


def test_no_data_and_no_datasets_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("PRUNEDSL_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "_PACKAGE_ROOT", tmp_path / "a" / "b")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # import fails
    with pytest.raises(PruneRuntimeError, match="PRUNEDSL_DATA_DIR"):
        load_text("test")


class CountingTokenizer:
    name_or_path = "counting"

    def __init__(self):
        self.calls = 0

    def __call__(self, text, return_tensors=None):
        self.calls += 1
        return type("Enc", (), {"input_ids": torch.tensor([[ord(c) for c in text]])})


def test_tokenize_is_cached_by_name_and_text():
    tok = CountingTokenizer()
    a = tokenize(tok, "hello")
    b = tokenize(tok, "hello")
    assert a is b and tok.calls == 1 and a.shape == (1, 5)
    tokenize(tok, "other")
    assert tok.calls == 2


def test_eval_windows_drop_remainder():
    ids = torch.arange(10).view(1, -1)
    w = eval_windows(ids, 3)
    assert w.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert eval_windows(ids, 3, max_windows=2).shape == (2, 3)
    with pytest.raises(PruneRuntimeError, match="fewer than one window"):
        eval_windows(ids, 11)


def test_calibration_windows_are_seeded():
    ids = torch.arange(1000).view(1, -1)
    a = calibration_windows(ids, 4, 16, seed=0)
    assert a.shape == (4, 16)
    assert torch.equal(a, calibration_windows(ids, 4, 16, seed=0))
    assert not torch.equal(a, calibration_windows(ids, 4, 16, seed=1))
    assert ((a[:, 1:] - a[:, :-1]) == 1).all()  # contiguous windows
    with pytest.raises(PruneRuntimeError, match="needs more than"):
        calibration_windows(ids, 1, 1000)
