"""The search's ``--device``/``--dtype``/``--offload``/``--calib-batch`` in its saved settings
(``state.json``'s ``config.cli``), so that a plain ``--resume`` computes as the search did.

On ``--resume`` the options not given take the saved values. ``--device``, ``--offload`` and
``--calib-batch`` may change: they say where and in what pieces the statistics are computed,
not what they are (masks are the same by contract). ``--dtype`` may not: fitness values
measured with the model in another dtype would be ranked together in one hall of fame.
``auto`` resolves per device (float32 on CPU, the checkpoint's dtype on a GPU), so the dtype
the model was loaded in is saved too (``model_dtype``) and every resume must load it in that
dtype again (checked before the load where the options say it, else right after it).

A state written before these were saved holds none of them: the options given (or the
defaults) are taken, and saved from then on.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import SearchError

DEVICE_DEFAULTS = {"device": "auto", "dtype": "auto", "offload": False, "calib_batch": None}
DEVICE_OVERRIDABLE = frozenset({"device", "offload", "calib_batch"})
_HINT = "start a new search in another --output to measure in another dtype"


def check_resumed_dtype(given: str, saved: dict[str, Any]) -> None:
    """``--dtype`` given on ``--resume``: the saved spelling, or the dtype it loaded the model in."""
    if "dtype" not in saved or given in (saved["dtype"], saved.get("model_dtype")):
        return
    loaded = f", which loaded the model in {saved['model_dtype']}" if saved.get("model_dtype") else ""
    raise SearchError(f"--dtype {given} differs from the saved search's --dtype {saved['dtype']}{loaded}: "
                      "its fitness values were measured in that dtype",
                      hint=f"leave --dtype out with --resume, or {_HINT}")


def device_options(s: dict[str, Any]) -> dict[str, Any]:
    """The merged settings' device options, as the jobs and ``Fitness`` take them."""
    return {k: s.get(k, default) for k, default in DEVICE_DEFAULTS.items()}


def check_model_dtype(s: dict[str, Any], dtype) -> None:
    """Record the model's dtype (a ``torch.dtype``) in the settings, or refuse one that differs
    from the dtype the saved search measured its fitness in."""
    from ..runtime.device import dtype_name
    name = dtype_name(dtype)
    saved = s.get("model_dtype")
    if saved is not None and saved != name:
        raise SearchError(f"this search measured its fitness with the model in {saved}; --dtype {s['dtype']} "
                          f"on --device {s['device']} gives {name}",
                          hint=f"give --dtype {saved} to resume it, or {_HINT}")
    s["model_dtype"] = name


def recording_model_dtype(make: Callable[[], Any], s: dict[str, Any]) -> Callable[[], Any]:
    """``make`` (a fitness factory), then ``check_model_dtype`` with the dtype it loaded the model in."""
    def factory():
        fitness = make()
        check_model_dtype(s, fitness.loaded.placement.dtype)
        return fitness
    return factory
