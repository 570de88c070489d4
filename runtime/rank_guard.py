"""Keep a metric's ranking when float32 breaks it.

``|W| ^ 39`` ranks weights exactly as ``|W|`` (its canonical form), but in float32 a third
of its scores underflow to 0 and the ties are then pruned by position. Where the metric's
canonical form under the comparison group is a different expression, each layer is scored
with both; if the written scores have clearly more ties than the canonical ones (more than
1% of the layer's weights), the canonical scores — the same ranking, computed without the
collapse — decide the mask, and a warning says so once per run. The OBS sweep re-scores
inside its blocks and is left as written.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger("prunedsl.runtime")

TIE_SHARE = 0.01  # extra ties, as a share of the layer's weights, that count as a collapse

Scorer = Callable[[str, dict], torch.Tensor]


def extra_ties(written: torch.Tensor, canonical: torch.Tensor) -> float:
    """Share of the entries tied in ``written`` beyond the ties ``canonical`` has."""
    n = written.numel()
    tied_w = n - torch.unique(written).numel()
    tied_c = n - torch.unique(canonical).numel()
    return (tied_w - tied_c) / max(n, 1)


def rank_safe(metric, group: str, scorer: Scorer, *, on_nonfinite: str = "error") -> Scorer:
    """``scorer``, or one that falls back to the canonical form where float32 collapses ties."""
    try:
        canonical_text = metric.canonical(group)
    except Exception:  # a form that cannot be canonicalized: nothing to compare with
        return scorer
    if canonical_text == metric.formula():
        return scorer
    from ..api import parse
    try:
        canonical = parse(canonical_text)
    except Exception:
        return scorer
    if not canonical.requires <= metric.requires:
        return scorer
    compiled = canonical.compile()
    warned: list[str] = []

    def score(layer: str, stats: dict) -> torch.Tensor:
        written = scorer(layer, stats)
        n = written.numel()
        if written.dim() == 0 or n < 2 or n - torch.unique(written).numel() <= TIE_SHARE * n:
            return written  # too few ties to hide a collapse: the canonical form is not computed
        rank_form = compiled(stats, layer=layer, on_nonfinite=on_nonfinite).expand_as(written)
        share = extra_ties(written, rank_form)
        if share <= TIE_SHARE:
            return written
        if not warned:
            warned.append(layer)
            log.warning("%s: %.0f%% of the scores of %s tie in float32 where its rank-equivalent form %s "
                        "does not (under- or overflow); the masks follow %s, which ranks the weights the same "
                        "way", layer, 100 * share, metric.formula(), canonical_text, canonical_text)
        return rank_form
    return score
