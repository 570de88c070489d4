"""Whether a new search offers G (``--gradients auto``, the default): G's cost against the budget.

G is one forward and backward of the whole model per calibration window, plus one more
forward per block with activation checkpointing (runtime/gradients.py): about 4·nsamples
window-forwards, once per search. A full evaluation is one calibration pass (nsamples
windows, more with +R) and one validation pass (val_windows). So G costs about
4·nsamples / (nsamples + val_windows) full evaluations: 2 with the defaults (16, 16).
``auto`` turns it on when that is at most ``SHARE`` of the search's full evaluations, and
off when the model is offloaded (the backward then runs where the model lives, the CPU:
hours on a 7B model). The answer is decided once, when the search starts, and saved with
its settings, so ``--resume`` does not re-decide it.
"""
from __future__ import annotations

SHARE = 0.2   # G may cost up to a fifth of the full-evaluation budget


def gradient_cost(nsamples: int, val_windows: int) -> float:
    """G's cost in full evaluations (window-forwards of the gradient pass / of one evaluation)."""
    return 4 * nsamples / max(1, nsamples + val_windows)


def decide_gradients(*, nsamples: int, val_windows: int, full_evals: int,
                     offload: bool = False) -> tuple[bool, str]:
    """(on, why) for ``--gradients auto``."""
    cost = gradient_cost(nsamples, val_windows)
    if offload:
        return False, "off (auto): the model is offloaded, so the backward would run on the CPU"
    if cost <= SHARE * full_evals:
        return True, (f"on (auto): G costs ≈{cost:.1f} full evaluations, within {SHARE:.0%} of "
                      f"--full-evals {full_evals}")
    return False, (f"off (auto): G costs ≈{cost:.1f} full evaluations, more than {SHARE:.0%} of "
                   f"--full-evals {full_evals}; --gradients turns it on")
