"""Is a test-perplexity difference more than window noise? Paired bands for the report.

    band = paired_band(result["test_nll_sums"], wanda["test_nll_sums"], tokens_per_window=511)
    compare("wanda", band)      # "beats wanda: 0.934× [0.912, 0.957]" or "within noise of wanda: …"

Method (written into the report by ``METHOD``): two pruned models are measured on the
same test windows, so their per-window NLL sums are paired. The ratio of their
perplexities is exp(Σ_w (a_w − b_w) / tokens); a bootstrap resamples the windows with
replacement (the same window indices for both models, so what the windows share, hard
text, cancels), 1000 times with a fixed seed, and the 2.5th and 97.5th percentiles of
the resampled ratios are the 95% band (``runtime/fidelity.bootstrap_ppl_ratio``, the one
bootstrap the project has: ``bench/fitness_table.py`` uses it too). "Beats" is said only
when the whole band is below 1, "worse than" only when it is above 1; otherwise the
difference is within the noise of this many test windows.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..runtime.fidelity import Band, bootstrap_ppl_ratio

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0

METHOD = ("Noise band: each ratio is test ppl / reference test ppl on the same test windows, with a "
          f"paired bootstrap {LEVEL:.0%} band: the windows are resampled with replacement, the same "
          f"windows for both models, {RESAMPLES} times (seed {SEED}), and the band is the 2.5th–97.5th "
          "percentile of the resampled ratios. A row **beats** the reference only when the whole band is "
          "below 1× (worse than it only when the band is above 1×); otherwise the difference is within the "
          "noise of this many test windows.")


def paired_band(sums: Sequence[float] | None, reference: Sequence[float] | None,
                tokens_per_window: int) -> Band | None:
    """The paired bootstrap band of ppl / ppl_reference, or None when either side has no
    per-window sums (a result saved before they were kept) or the windows differ in number."""
    if not sums or not reference or len(sums) != len(reference):
        return None
    return bootstrap_ppl_ratio(sums, reference, tokens_per_window, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def verdict(band: Band) -> str:
    """'beats', 'worse than' or 'within noise of' (a band excluding 1, or not)."""
    if band.high < 1:
        return "beats"
    if band.low > 1:
        return "worse than"
    return "within noise of"


def band_text(band: Band | None) -> str:
    """"0.934× [0.912, 0.957]": 3 decimals, more when a bound other than 1 would print as 1.000."""
    if band is None:
        return "–"
    d = 3
    while d < 6 and any(x != 1 and round(x, d) == 1 for x in (band.low, band.high)):
        d += 1
    return f"{band.ppl:.{d}f}× [{band.low:.{d}f}, {band.high:.{d}f}]"


def compare(name: str, band: Band | None) -> str:
    """'beats wanda: 0.934× [0.912, 0.957]' (or 'within noise of', 'worse than'); '–' without a band."""
    if band is None:
        return "–"
    return f"{verdict(band)} {name}: {band_text(band)}"


def ratio_cell(result: dict[str, Any], reference: dict[str, Any], tokens_per_window: int) -> tuple[str, Band | None]:
    """A table cell "ratio× [band]" of two test results (``Fitness.test_ppl``'s dicts) on the
    same model, and the band; the plain ratio when the per-window sums are missing."""
    a, b = result.get("test_ppl"), reference.get("test_ppl")
    if a is None or not b:
        return "–", None
    band = paired_band(result.get("test_nll_sums"), reference.get("test_nll_sums"), tokens_per_window)
    return (band_text(band) if band is not None else f"{a / b:.3f}×"), band
