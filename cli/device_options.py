"""The "device and memory" options of ``prune``, ``eval``, ``search`` and ``serve-llm``
(runtime/device.py owns what they mean)."""
from __future__ import annotations

import argparse

DEVICE_CHOICES_HELP = "auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps"
DTYPE_HELP = ("model dtype: auto (the checkpoint's on a GPU, float32 on CPU), float32, bfloat16 "
              "or float16 (GPU only: refused on CPU, use bfloat16 there)")


def add_device_arguments(parser: argparse.ArgumentParser, *, calibration: bool = True,
                         offload: bool = True, default=None, note: str | None = None) -> None:
    """Add the group; ``calibration``: with --calib-batch; ``offload``: with --offload;
    ``default``: what unset options hold (argparse.SUPPRESS for search, whose --resume
    takes the saved values: there --no-offload turns a saved --offload off); ``note``:
    the group's description in --help."""
    def d(value):
        return value if default is None else default

    g = parser.add_argument_group("device and memory", description=note)
    g.add_argument("--device", default=d("auto"), help=f"where to compute: {DEVICE_CHOICES_HELP} (default auto)")
    g.add_argument("--dtype", default=d("auto"), choices=("auto", "float32", "bfloat16", "float16"),
                   help=DTYPE_HELP + ("; statistics are float32 either way" if calibration else ""))
    if offload:
        g.add_argument("--offload", default=d(False),
                       action=argparse.BooleanOptionalAction if default is argparse.SUPPRESS else "store_true",
                       help="keep the model on CPU and move each decoder block to the device for its pass "
                            "(peak device memory: one block plus its activations)")
    if calibration:
        g.add_argument("--calib-batch", type=int, default=d(None), metavar="B",
                       help="calibrate in micro-batches of B windows: statistics accumulate across them, "
                            "so activation memory no longer grows with --nsamples (default: all at once)")


def device_settings(args, *, calibration: bool = True) -> dict:
    """The keyword arguments the jobs take (device, dtype, offload[, calib_batch])."""
    out = {"device": getattr(args, "device", "auto"), "dtype": getattr(args, "dtype", "auto"),
           "offload": bool(getattr(args, "offload", False))}
    if calibration:
        out["calib_batch"] = getattr(args, "calib_batch", None)
    return out
