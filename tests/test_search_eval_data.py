"""search --eval-data: the fitness reads a held-out part of the user's text, never the calibration part."""
from __future__ import annotations

import pytest
import torch

from prunedsl.errors import SearchError
from prunedsl.search.fitness import Fitness, FitnessSettings


class NumberTokenizer:
    """Each whitespace-separated number is its own token id, so an id tells its position in the file."""
    name_or_path = "numbers"
    vocab_size = 10 ** 6

    def __call__(self, text, return_tensors=None):
        return type("Enc", (), {"input_ids": torch.tensor([[int(w) for w in text.split()]])})


def task_data(tmp_path, n_tokens: int, nsamples: int = 8, **kw):
    task = tmp_path / "task.txt"
    task.write_text("\n".join(" ".join(str(i) for i in range(s, min(s + 50, n_tokens)))
                              for s in range(0, n_tokens, 50)))
    wiki = tmp_path / "wiki"
    wiki.mkdir(exist_ok=True)
    (wiki / "wiki.valid.tokens").write_text(" ".join(str(10 ** 5 + i) for i in range(3000)))
    fit = Fitness.__new__(Fitness)  # the data split only: no model
    fit.settings = FitnessSettings(model="none", nsamples=nsamples, seqlen=32, val_windows=4, data_dir=str(wiki),
                                   eval_data=str(task), **{k: v.replace("TASK", str(task)) for k, v in kw.items()})
    fit.loaded = type("Loaded", (), {"tokenizer": NumberTokenizer()})
    parts = fit._data()
    return parts.fitness, parts.calib


def test_eval_data_is_the_held_out_part_and_calibration_stays_wikitext(tmp_path):
    val, calib = task_data(tmp_path, 1000)
    assert val.reshape(-1).tolist() == list(range(4 * 32))  # the first val_windows·seqlen tokens of the file
    assert int(calib.min()) >= 10 ** 5  # WikiText-2 validation, as without --eval-data


def test_same_file_calibrates_on_the_part_after_the_cut_only(tmp_path):
    val, calib = task_data(tmp_path, 1000, nsamples=64, calib_data="TASK")  # 64 windows: one would land early
    assert val.reshape(-1).tolist() == list(range(128)) and calib.shape == (64, 32)
    assert int(calib.min()) >= 128 and int(calib.max()) < 1000


def test_other_calibration_file_is_used_whole(tmp_path):
    other = tmp_path / "calib.txt"
    other.write_text(" ".join(str(5000 + i) for i in range(400)))
    _, calib = task_data(tmp_path, 1000, calib_data=str(other))
    assert int(calib.min()) >= 5000


def test_too_short_task_text_is_a_clear_error(tmp_path):
    with pytest.raises(SearchError, match="--eval-data .* has 100 tokens: too few for 4 evaluation windows"):
        task_data(tmp_path, 100)
    with pytest.raises(SearchError, match="plus calibration windows from the same file"):
        task_data(tmp_path, 140, calib_data="TASK")


def test_search_cli_knows_eval_data_and_format():
    from prunedsl.cli import build_parser
    from prunedsl.search.cli import FITNESS_DEFAULTS
    args = build_parser().parse_args(["search", "--output", "x", "--eval-data", "t.txt", "--format", "text"])
    assert args.eval_data == "t.txt" and args.format == "text"
    assert FITNESS_DEFAULTS["eval_data"] is None  # part of the fitness: must agree on --resume
