"""WikiText-2 text, tokenization and windows (docs/design.md §5).

Perplexity uses the test split, calibration and search use the validation split. The
text is normalized once (line ends to ``\\n``, lines joined with blank lines), tokenized
once, and cut into non-overlapping windows (evaluation) or seeded random windows
(calibration, as in Wanda's loader).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import PruneRuntimeError
from ..textfile import read_text_file

SPLIT_FILES = {"test": "wiki.test.raw", "validation": "wiki.valid.tokens"}
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the repo root / prunedsl package


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first WikiText-2 directory that exists, or None (then try `datasets`)."""
    candidates: list[Path] = []
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise PruneRuntimeError(f"data directory not found: {path}",
                                    hint="pass a directory holding wiki.test.raw and wiki.valid.tokens")
        return path
    if os.environ.get("PRUNEDSL_DATA_DIR"):
        candidates.append(Path(os.environ["PRUNEDSL_DATA_DIR"]).expanduser())
    candidates.append(_PACKAGE_ROOT.parent / "shared" / "data" / "wikitext-2")
    candidates.append(Path.cwd().parent / "shared" / "data" / "wikitext-2")
    for path in candidates:
        if path.is_dir():
            return path
    return None


def normalize(text: str) -> str:
    """§5: line ends to \\n, split on \\n, join with blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n\n".join(text.split("\n"))


NO_DATA_HINT = ("WikiText-2 is read from, in this order: --data-dir DIR, $PRUNEDSL_DATA_DIR, or "
                "../shared/data/wikitext-2/ beside the checkout (each a directory holding wiki.test.raw "
                "and wiki.valid.tokens); online, `pip install datasets` downloads it from the hub instead")


def _from_datasets(split: str) -> str:
    try:
        import datasets  # optional, online fallback only
    except ImportError:
        raise PruneRuntimeError("WikiText-2 not found locally and the `datasets` package is not installed",
                                hint=NO_DATA_HINT) from None
    try:
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
    except Exception as e:  # offline, hub errors: one message, not a traceback from three libraries
        raise PruneRuntimeError(f"WikiText-2 not found locally and the download failed "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                                hint=NO_DATA_HINT) from None
    # The HF rows keep their trailing "\n"; joining the rows gives the raw file's text.
    return "".join(ds["text"])


def load_text(split: str = "test", data_dir: str | os.PathLike | None = None,
              path: str | os.PathLike | None = None, what: str = "--calib-data") -> str:
    """Normalized text of a WikiText-2 split, or of any text file given as ``path`` (``what``
    names its role in error messages: --calib-data, --eval-data)."""
    if path is not None:
        text = read_text_file(path, what, error=PruneRuntimeError)
        if not text.strip():
            raise PruneRuntimeError(f"{what}: {Path(path).expanduser()} is empty")
        return normalize(text)
    if split not in SPLIT_FILES:
        raise PruneRuntimeError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    directory = find_data_dir(data_dir)
    if directory is None:
        return normalize(_from_datasets(split))
    file = directory / SPLIT_FILES[split]
    if not file.is_file():
        raise PruneRuntimeError(f"{file} is missing",
                                hint=f"the data directory must contain {SPLIT_FILES[split]}")
    # newline="" keeps \r\n so that normalize() sees the file's own line ends
    return normalize(read_text_file(file, f"WikiText-2 {split}", error=PruneRuntimeError, newline=""))


# (tokenizer name, text sha256) -> ids; in memory only, a handful of entries.
_TOKEN_CACHE: dict[tuple[str, str], torch.Tensor] = {}
_TOKEN_CACHE_SIZE = 4


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids of ``text`` as a (1, N) LongTensor, tokenized once with the default call."""
    # the name alone can be "" (tokenizers built in memory): add the class and vocab size
    key = (f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}:"
           f"{getattr(tokenizer, 'vocab_size', '')}",
           hashlib.sha256(text.encode("utf-8")).hexdigest())
    if key not in _TOKEN_CACHE:
        ids = tokenizer(text, return_tensors="pt").input_ids  # (1, N)
        if len(_TOKEN_CACHE) >= _TOKEN_CACHE_SIZE:
            _TOKEN_CACHE.pop(next(iter(_TOKEN_CACHE)))
        _TOKEN_CACHE[key] = ids
    return _TOKEN_CACHE[key]


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows (n, seqlen), remainder dropped, first ``max_windows`` kept."""
    flat = ids.reshape(-1)
    n = flat.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise PruneRuntimeError(f"text has {flat.numel()} tokens, fewer than one window of {seqlen}")
    return flat[: n * seqlen].view(n, seqlen)


def calibration_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``nsamples`` random windows (nsamples, seqlen) with seeded start positions."""
    flat = ids.reshape(-1)
    if flat.numel() <= seqlen:
        raise PruneRuntimeError(f"calibration text has {flat.numel()} tokens, "
                                f"needs more than seqlen={seqlen}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, flat.numel() - seqlen, (nsamples,), generator=gen)
    return torch.stack([flat[s: s + seqlen] for s in starts.tolist()])
