"""The "device and memory" options of ``prune``, ``eval`` and ``search`` (runtime/device.py)."""
from __future__ import annotations

import argparse

DEVICE_CHOICES_HELP = "auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps"


def add_device_arguments(parser: argparse.ArgumentParser, *, calibration: bool = True,
                         default=None) -> None:
    """Add the group; ``default``: what unset options hold (argparse.SUPPRESS for search)."""
    def d(value):
        return value if default is None else default

    g = parser.add_argument_group("device and memory")
    g.add_argument("--device", default=d("auto"), help=f"where to compute: {DEVICE_CHOICES_HELP} (default auto)")
    g.add_argument("--dtype", default=d("auto"), choices=("auto", "float32", "bfloat16", "float16"),
                   help="model dtype: auto (the checkpoint's on a GPU, float32 on CPU), float32, bfloat16 "
                        "or float16 (GPU only); statistics are float32 either way")
    g.add_argument("--offload", action="store_true", default=d(False),
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
