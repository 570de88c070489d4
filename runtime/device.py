"""The one place that owns device and dtype (docs/design.md §6).

    placement = resolve_placement(device="auto", dtype="auto", offload=False)
    loaded = load_model("smollm2-135m", placement=placement)   # placement.home, its dtype
    with placement.onloaded(block):                             # block on the device for its pass
        ...

``--device``: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
``--dtype``: ``auto`` (the checkpoint's dtype on a GPU, float32 on CPU), ``float32``,
``bfloat16``, ``float16``. float16 on CPU is refused: CPU float16 kernels are slow and
some (e.g. matmul in older torch builds) are missing; bfloat16 is the CPU half type.

``offload``: the model lives on CPU (``home``) while each decoder block moves to the
compute device for its pass and back, so peak device memory is one block plus its
activations (SparseGPT's and llm-compressor's sequential onloading). On CPU it moves
nothing, but goes through the same calls (``onloaded``), which tests count.

Statistics are float32 whatever the model's dtype; only the model's weights (and so its
activations) follow ``dtype``. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA,
the process's peak RSS elsewhere.
"""
from __future__ import annotations

import contextlib
import resource
import sys
from dataclasses import dataclass, replace
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → cuda if available else cpu; ``cuda``/``cuda:N``/``mps`` must be available."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError("unknown {device} {value!r}", hint="use one of {choices}", value=spec,
                          choices=", ".join(DEVICES)) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("{device} {value!r} was asked for but CUDA is not available",
                              hint="use {device} cpu (or auto), or install a CUDA build of torch",
                              value=spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError("{device} {value!r}: this machine has {count} CUDA device(s)",
                              hint="use cuda:0 … cuda:{last}", value=spec,
                              count=torch.cuda.device_count(), last=torch.cuda.device_count() - 1)
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("{device} 'mps' was asked for but MPS is not available",
                              hint="use {device} cpu (or auto)")
    elif device.type != "cpu":
        raise ConfigError("unsupported {device} {value!r}", hint="use one of {choices}", value=spec,
                          choices=", ".join(DEVICES))
    return device


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The model dtype; None means "the checkpoint's" (``auto`` on a GPU)."""
    if isinstance(spec, torch.dtype):
        dtype = spec
    else:
        spec = "auto" if spec is None else str(spec).strip().lower().removeprefix("torch.")
        if spec == "auto":
            return torch.float32 if device.type == "cpu" else None
        aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
        spec = aliases.get(spec, spec)
        if spec not in DTYPES:
            raise ConfigError("unknown {dtype} {value!r}", hint="use one of {choices}", value=spec,
                              choices=", ".join(DTYPE_CHOICES))
        dtype = DTYPES[spec]
    if dtype not in DTYPES.values():
        raise ConfigError("unsupported {dtype} {value}", hint="use one of {choices}",
                          value=dtype_name(dtype), choices=", ".join(DTYPE_CHOICES))
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("{dtype} float16 on CPU is not supported (slow, and some CPU kernels "
                          "are missing)", hint="use {dtype} bfloat16 or float32 on CPU, or float16 on a GPU")
    return dtype


@dataclass(frozen=True)
class Placement:
    """Where the model computes (``device``), in which dtype, and whether it lives on CPU
    between block passes (``offload``). ``dtype`` None: the checkpoint's (set on load)."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype | None = torch.float32
    offload: bool = False

    @property
    def home(self) -> torch.device:
        """Where the weights stay between passes."""
        return torch.device("cpu") if self.offload else self.device

    def with_dtype(self, dtype: torch.dtype) -> "Placement":
        return replace(self, dtype=dtype)

    def describe(self) -> dict[str, Any]:
        """What pruning.json records."""
        return {"device": str(self.device), "dtype": dtype_name(self.dtype) if self.dtype else "auto",
                "offload": self.offload}

    # --- moving tensors and modules -------------------------------------------------------
    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A batch (token ids, hidden states) on the compute device."""
        return t.to(self.device)


    def to_home(self, t: torch.Tensor) -> torch.Tensor:
        """A batch where the weights live (a whole-model pass without onloading)."""
        return t.to(self.home)

    def move(self, module: nn.Module, device: torch.device) -> None:
        """Every parameter and buffer of ``module`` to ``device`` (tests spy on this)."""
        module.to(device)

    def place_model(self, model: nn.Module) -> None:
        """The loaded model to its home, in the placement's dtype."""
        if self.dtype is not None and next(model.parameters()).dtype != self.dtype:
            model.to(self.dtype)
        self.move(model, self.home)

    @contextlib.contextmanager
    def onloaded(self, module: nn.Module) -> Iterator[nn.Module]:
        """``module`` on the compute device inside the block; back home after (offload)."""
        if not self.offload:
            yield module
            return
        self.move(module, self.device)
        try:
            yield module
        finally:
            self.move(module, self.home)

    @contextlib.contextmanager
    def outside_blocks_onloaded(self, model: nn.Module, blocks: nn.Module) -> Iterator[None]:
        """Everything but the decoder blocks (embeddings, rotary tables, norm, head) on the
        device: what the capture forward runs before the first block (offload)."""
        if not self.offload:
            yield
            return
        parts = list(modules_outside(model, blocks))
        for m in parts:
            self.move(m, self.device)
        try:
            yield
        finally:
            for m in parts:
                self.move(m, self.home)

    @contextlib.contextmanager
    def streamed(self, model: nn.Module, blocks: nn.ModuleList) -> Iterator[None]:
        """A whole-model forward with offload: non-block parts on the device, each block
        onloaded by hooks for its own forward (perplexity of an offloaded model)."""
        if not self.offload:
            yield
            return
        handles = []
        for block in blocks:
            handles.append(block.register_forward_pre_hook(lambda m, a: self.move(m, self.device)))
            handles.append(block.register_forward_hook(lambda m, a, o: self.move(m, self.home)))
        try:
            with self.outside_blocks_onloaded(model, blocks):
                yield
        finally:
            for h in handles:
                h.remove()
            for block in blocks:
                self.move(block, self.home)

    # --- memory ---------------------------------------------------------------------------
    def empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int:
        """Peak device memory on CUDA; the process's peak RSS elsewhere."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return peak_rss_bytes()


def on_device_of(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` on ``ref``'s device (e.g. G computed at home, used next to an onloaded W)."""
    return t if t.device == ref.device else t.to(ref.device)


def peak_rss_bytes() -> int:
    """ru_maxrss of this process in bytes (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def modules_outside(model: nn.Module, inner: nn.Module) -> Iterator[nn.Module]:
    """The largest submodules of ``model`` that do not contain ``inner`` (and ``model``'s
    own direct parameters/buffers' holders are handled by moving those tensors)."""
    def contains(m: nn.Module) -> bool:
        return m is inner or any(c is inner for c in m.modules())

    def walk(m: nn.Module) -> Iterator[nn.Module]:
        for child in m.children():
            if child is inner:
                continue
            if contains(child):
                yield from walk(child)
            else:
                yield child
    yield from walk(model)


CPU = Placement()  # the default: float32 on CPU, no offload (what prunedsl always did)


def resolve_placement(device: str | None = "auto", dtype: str | None = "auto",
                      offload: bool = False) -> Placement:
    """A Placement from the command-line spellings (``ConfigError`` for bad ones)."""
    dev = resolve_device(device)
    return Placement(device=dev, dtype=resolve_dtype(dtype, dev), offload=bool(offload))


def model_placement(model: nn.Module) -> Placement:
    """The placement a model already has (where its first parameter is, its dtype); CPU for
    an object without parameters (a test double)."""
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if callable(params) else None
    if p is None:
        return CPU
    return Placement(device=p.device, dtype=p.dtype, offload=False)
