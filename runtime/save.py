"""Save a pruned model as a plain Hugging Face directory plus ``pruning.json``.

The directory reloads with ``AutoModelForCausalLM.from_pretrained(out_dir)``: weights
are dense safetensors (pruned entries are zeros), and the GGUF quantization marker of
the source checkpoint is dropped because the weights were dequantized on load.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import PruneRuntimeError
from .models import LoadedModel, drop_gguf_quantization


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Pretty JSON via a temp file in the same directory + os.replace (no torn files)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_pruned(loaded: LoadedModel, out_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write model (safetensors), tokenizer and ``pruning.json`` (``record``) to ``out_dir``."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        drop_gguf_quantization(loaded.model)
        loaded.model.save_pretrained(out)  # safetensors is the only format in transformers 5
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(out)
    except OSError as e:
        raise PruneRuntimeError(f"could not write the pruned model to {out}: {e}") from None
    write_json_atomic(out / "pruning.json", record)
    return out
