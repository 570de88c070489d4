"""Text normalization, data lookup, token cache and windows (docs/design.md §5)."""
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


# --- bad text files and missing data: clear errors, never a traceback -------------------------

def test_binary_calib_data_names_the_file_and_offset(tmp_path):
    from prunedsl.errors import PruneRuntimeError
    from prunedsl.runtime.data import load_text
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(PruneRuntimeError, match=r"weights\.bin looks like a binary file \(NUL byte at offset 8\)"):
        load_text(path=binary)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(PruneRuntimeError, match=r"latin1\.txt is not UTF-8 text \(invalid byte 0xe9 at byte offset 3\)"):
        load_text(path=latin)


def test_empty_or_missing_calib_data(tmp_path):
    from prunedsl.errors import PruneRuntimeError
    from prunedsl.runtime.data import load_text
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(PruneRuntimeError, match="empty.txt is empty"):
        load_text(path=empty)
    with pytest.raises(PruneRuntimeError, match="file not found"):
        load_text(path=tmp_path / "nope.txt")
    with pytest.raises(PruneRuntimeError, match="is not a regular file"):
        load_text(path=tmp_path)


def test_no_local_data_and_no_network_names_the_three_ways(monkeypatch, tmp_path):
    import sys
    import types
    from prunedsl.errors import PruneRuntimeError
    from prunedsl.runtime import data
    monkeypatch.delenv("PRUNEDSL_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "find_data_dir", lambda data_dir=None: None)

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(PruneRuntimeError) as info:
        data.load_text("test")
    text = info.value.render()
    assert "download failed (ConnectionError" in text
    for way in ("--data-dir", "$PRUNEDSL_DATA_DIR", "../shared/data/wikitext-2", "pip install datasets"):
        assert way in text
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(PruneRuntimeError, match="`datasets` package is not installed"):
        data.load_text("validation")
