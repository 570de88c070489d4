"""Tables of bench/bench_fitness.py: every fitness per candidate, and each fitness's rank
agreement with test perplexity, from the saved results (per-window sums), no model needed."""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from prunedsl.runtime.divergence import window_difference
from prunedsl.runtime.fidelity import bootstrap_ppl, bootstrap_ppl_ratio, kendall, spearman

REFERENCE = "wanda"   # the paired NLL difference and the paired test ratio are taken to it


def _mean_nll(sums: list[float], tokens: int) -> float:
    return math.fsum(sums) / (len(sums) * tokens)


def _ppl(mean_nll: float) -> float:
    return math.exp(mean_nll) if mean_nll < 700 else math.inf


def fitness_values(state: dict) -> dict[str, dict]:
    """key -> {fitness name: (value, seconds)} plus 'test' (mean test NLL) for each measured
    candidate. Every value is lower-is-better; ppl-like fitnesses are given as mean NLL."""
    s = state["settings"]
    v, t, tt = s["val_windows"], s["seqlen"] - 1, s["test_seqlen"] - 1
    cands = state["candidates"]
    ref = cands.get(REFERENCE)
    out: dict[str, dict] = {}
    for key, c in cands.items():
        if "error" in c:
            continue
        text = state["panel"].get(key, {}).get("text", key)
        plus_r = state["panel"].get(key, {}).get("reconstruct", False)
        fwd, kls, prune = c["val_forward_seconds"], c["val_kl_seconds"], c["prune_seconds"]
        row = {}
        for name, per_text in state["proxies"].items():
            p = (per_text.get(text + " +R") if plus_r else None) or per_text.get(text)  # +R: an OBS proxy's own
            if p is not None and p["value"] is not None:
                row[name] = (p["value"], p["seconds"])
        for label, n in ((f"val_ppl@{v}", v), (f"val_ppl@{len(fwd)}", None)):
            row[label] = (_mean_nll(c["val_nll_sums"][:n], t), prune + sum(fwd[:n]))
        for label, n in ((f"kl@{v}", v), (f"kl@{len(fwd)}", None)):
            row[label] = (_mean_nll(c["val_kl_sums"][:n], t), prune + sum(fwd[:n]) + sum(kls[:n]))
        if ref is not None and "error" not in ref:
            for label, n in ((f"nll_diff_{REFERENCE}@{v}", v), (f"nll_diff_{REFERENCE}@{len(fwd)}", None)):
                d = window_difference(c["val_nll_sums"][:n], ref["val_nll_sums"][:n], t)
                row[label] = (d.mean, prune + sum(fwd[:n]))
        row["test"] = (_mean_nll(c["test_nll_sums"], tt), prune + c["test_seconds"])
        out[key] = row
    return out


def _fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:.2e}"


def candidate_table(state: dict, values: dict) -> str:
    s, cands = state["settings"], state["candidates"]
    tt = s["test_seqlen"] - 1
    proxies = list(state["proxies"])
    fitness = [f for f in next(iter(values.values()), {}) if f not in proxies and f != "test"]
    head = ["candidate", "source"] + proxies + [f.replace("val_ppl", "val ppl") for f in fitness] + \
           ["test ppl [95%]", f"test / {REFERENCE} [95% paired]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = cands.get(REFERENCE)
    for key, c in cands.items():
        src = state["panel"].get(key, {}).get("source", "")
        if key not in values:
            lines.append(f"| {key.replace('|', chr(92) + '|')} | {src} | error: {c.get('error', '?')} |")
            continue
        row = values[key]
        cells = [f"{row[p][0]:.6f}" if p in row else "—" for p in proxies]
        for f in fitness:
            val = row[f][0]
            cells.append(_fmt(_ppl(val)) if f.startswith("val_ppl") else
                         (f"{val:+.4f}" if f.startswith("nll_diff") else f"{val:.4g}"))
        band = bootstrap_ppl(c["test_nll_sums"], tt)
        cells.append(f"{_fmt(band.ppl)} [{_fmt(band.low)}, {_fmt(band.high)}]")
        if ref is not None and "error" not in ref:
            r = bootstrap_ppl_ratio(c["test_nll_sums"], ref["test_nll_sums"], tt)
            cells.append(f"{r.ppl:.4f} [{r.low:.4f}, {r.high:.4f}]")
        else:
            cells.append("—")
        lines.append(f"| {key.replace('|', chr(92) + '|')} | {src} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fidelity_table(state: dict, values: dict) -> str:
    """Spearman and Kendall of every fitness vs test (all candidates, and mask-only ones)."""
    panel = state["panel"]
    names = [f for f in next(iter(values.values()), {}) if f != "test"]
    head = "| fitness | Spearman | Kendall | n | Spearman (mask only) | Kendall (mask only) | n | s / candidate |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in names:
        cells = []
        for subset in (lambda k: True, lambda k: not panel.get(k, {}).get("reconstruct", False)):
            keys = [k for k in values if subset(k) and f in values[k]
                    and math.isfinite(values[k][f][0]) and math.isfinite(values[k]["test"][0])]
            x, y = [values[k][f][0] for k in keys], [values[k]["test"][0] for k in keys]
            cells += [_fmt(spearman(x, y), 3), _fmt(kendall(x, y), 3), str(len(keys))]
        cost = statistics.mean(values[k][f][1] for k in values if f in values[k])
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {cost:.2f} |")
    test_cost = statistics.mean(r["test"][1] for r in values.values())
    lines.append(f"| test (the truth) | 1 | 1 | {len(values)} | | | | {test_cost:.2f} |")
    return "\n".join(lines)


def summary(state: dict, values: dict) -> str:
    s, cands = state["settings"], state["candidates"]
    tt = s["test_seqlen"] - 1
    lines = []
    for name, per_text in state["proxies"].items():
        vals = [p["value"] for p in per_text.values() if p["value"] is not None]
        if vals:
            what = "formulas (+R candidates apart)" if any(k.endswith(" +R") for k in per_text) else "formulas"
            lines.append(f"- {name}: {len(set(vals))} distinct values over {len(vals)} distinct {what} "
                         f"({len({float(f'{x:.3g}') for x in vals})} at 3 significant digits); "
                         f"setup {state.get('proxy_setup_seconds', {}).get(name, math.nan):.1f} s once")
    halves = [bootstrap_ppl(c["test_nll_sums"], tt).relative_halfwidth for c in cands.values() if "error" not in c]
    if halves:
        lines.append(f"- test ppl noise (bootstrap over the {s['test_windows']} test windows, 95%): half-width "
                     f"median ±{100 * statistics.median(halves):.1f}%, max ±{100 * max(halves):.1f}% of the ppl")
    ref = cands.get(REFERENCE)
    if ref is not None and "error" not in ref:
        paired = [bootstrap_ppl_ratio(c["test_nll_sums"], ref["test_nll_sums"], tt).relative_halfwidth
                  for k, c in cands.items() if "error" not in c and k != REFERENCE]
        if paired:
            lines.append(f"- paired test ratio to {REFERENCE} (same windows resampled together): half-width "
                         f"median ±{100 * statistics.median(paired):.2f}%")
    dense = state.get("dense")
    if dense:
        lines.append(f"- dense: val ppl {_fmt(_ppl(_mean_nll(dense['val_nll_sums'], s['seqlen'] - 1)))}, test ppl "
                     f"{_fmt(_ppl(_mean_nll(dense['test_nll_sums'], tt)))}")
    ref_info = state.get("dense_reference")
    if ref_info:
        lines.append(f"- KL: dense top-{s['top_k']} + tail cached in {ref_info['seconds']:.1f} s; mean dense "
                     f"mass outside the top {s['top_k']}: {ref_info['tail_mass']:.4f}")
    return "\n".join(lines)


def markdown(state: dict) -> str:
    s = state["settings"]
    values = fitness_values(state)
    head = (f"### Fitness fidelity: {s['model']}, {s['sparsity']:.0%} unstructured, {len(values)} candidates\n\n"
            f"Calibration {s['nsamples']}×{s['seqlen']} (seed {s['seed']}); validation {s['val_windows']} and "
            f"{s['val_windows'] * s['scale']} windows of {s['seqlen']}; test {s['test_windows']} windows of "
            f"{s['test_seqlen']}; +R: OBS update, selection `{s['reconstruct_group']}`. Fitness values are "
            f"lower-is-better; correlations are against mean test NLL (= log test ppl); ppl-like fitnesses "
            f"are ranked by mean NLL. Seconds: per candidate, pruning included (proxies: no pruning).")
    if not values:
        return head + "\n\n(no candidate measured yet)"
    return "\n\n".join([head, fidelity_table(state, values), summary(state, values),
                        candidate_table(state, values)])


def write(state: dict, stem: Path) -> None:
    text = markdown(state)
    print(text)
    stem.with_suffix(".md").write_text(text + "\n")
    print(f"wrote {stem}.md", file=sys.stderr)
