"""Save a pruned model as a plain Hugging Face directory plus ``pruning.json``.

The directory reloads with ``AutoModelForCausalLM.from_pretrained(out_dir)``: weights
are dense safetensors (pruned entries are zeros), and the GGUF quantization marker of
the source checkpoint is dropped because the weights were dequantized on load. A model
with per-block widths (structured removal, ``width_record.py``) is saved the same way; its
config's record makes it a prunedsl-format checkpoint, which ``models.load_model`` reads.

Saving never loses work: ``check_output_dir`` refuses (before anything is loaded) the
input model's own directory and a non-empty directory that is not an earlier prunedsl
output unless ``overwrite``; ``save_pruned`` writes into a temporary sibling and renames
it into place, so a crash mid-save leaves the old directory (or nothing), never half a
model. Files get the user's umask (temp files would otherwise be 0600).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import PruneRuntimeError
from .models import LoadedModel, drop_gguf_quantization

RECORD_NAME = "pruning.json"
CARD_NAME = "README.md"     # the Hugging Face model card (runtime/modelcard.py)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, *, directory: bool = False) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Pretty JSON via a temp file in the same directory + os.replace (no torn files)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
        _apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
                     overwrite: bool = False) -> Path:
    """Refuse an output directory that would lose data or cannot be written; cheap, call it first."""
    out = Path(out_dir).expanduser().resolve()
    if model is not None and Path(model).expanduser().is_dir():
        source = Path(model).expanduser().resolve()
        if out == source or source.is_relative_to(out):
            raise PruneRuntimeError(f"--output {out} would overwrite the input model {source}",
                                    hint="write the pruned model to another directory")
    if out.exists():
        if not out.is_dir():
            raise PruneRuntimeError(f"--output {out} exists and is not a directory")
        previous = (out / RECORD_NAME).is_file()
        if any(out.iterdir()) and not previous and not overwrite:
            raise PruneRuntimeError(f"--output {out} is a non-empty directory that is not a prunedsl output",
                                    hint="choose a new or empty directory, or pass --overwrite to replace it")
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise PruneRuntimeError(f"--output {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PruneRuntimeError(f"--output {out}: cannot write in {parent} (permission denied)")
    return out


def save_pruned(loaded: LoadedModel, out_dir: str | os.PathLike, record: dict[str, Any],
                card: str | None = None) -> Path:
    """Write model (safetensors), tokenizer, ``pruning.json`` (``record``) and the model card
    ``README.md`` (``card``, when given) to ``out_dir``."""
    out = Path(out_dir).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.saving-", dir=out.parent))
    except OSError as e:
        raise PruneRuntimeError(f"could not write the pruned model to {out}: {e}") from None
    try:
        drop_gguf_quantization(loaded.model)
        loaded.model.save_pretrained(staging)  # safetensors is the only format in transformers 5
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(staging)
        write_json_atomic(staging / RECORD_NAME, record)
        if card is not None:
            (staging / CARD_NAME).write_text(card, encoding="utf-8")
        for file in staging.rglob("*"):
            _apply_umask(file, directory=file.is_dir())
        _apply_umask(staging, directory=True)
        _move_into_place(staging, out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise PruneRuntimeError(f"could not write the pruned model to {out}: {e}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished directory to ``out``; an old ``out`` is moved aside first, then removed."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(old, out)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)
