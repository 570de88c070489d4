"""The final choice, made on a slice of validation text the search never saw (docs/design.md §4).

The fitness slice (the first ``val_windows`` windows of the validation stream) ranks every
candidate the search evaluates, and the search keeps the best of many: the best of many
noisy measurements is partly the luckiest, so its fitness value is biased low and its
lead over the runner-up may be noise. So the search does not choose on it. At the end of
the search the finalists, the ``select_top`` best *discovered* formulas by fitness val ppl
plus the best seed (the library candidate, formula and recipe, with the lowest fitness val ppl), are pruned once
more, the same way (``Fitness.select_ppl``), and measured on the **selection slice**: the
next ``select_windows`` windows of the same stream, which no proposal, screening, full
evaluation or proxy ever read (``search/fitness.py``'s module doc has the split). The
best there is the **winner**; the report's verdict is about the winner, and the test
split still only reports.

Each finalist's result is saved in ``SearchState.selection`` (by candidate key: canonical
form and recipe) as soon as it is measured, so a killed run resumes without measuring it again, and a ``--resume``
with a larger budget measures only the new finalists. ``select_windows = 0`` turns this
off (no winner; the report is as before).
"""
from __future__ import annotations

import math
from typing import Any

from .hall import fmt, label, markdown_table
from .recipe import MASK, evaluable
from .records import Candidate, SearchState


def select_windows(state: SearchState) -> int:
    return int(state.config.fitness.get("select_windows") or 0)


def best_seed(state: SearchState) -> Candidate | None:
    """The library candidate (metric and recipe) with the lowest fitness val ppl."""
    seeds = [r for r in state.candidates if r.seed and r.val_ppl is not None]
    return min(seeds, key=lambda r: (r.val_ppl, r.complexity, r.id)) if seeds else None


def finalists(state: SearchState) -> list[Candidate]:
    """The ``select_top`` best discovered candidates by fitness val ppl, then the best seed."""
    if select_windows(state) <= 0:
        return []
    found = sorted((r for r in state.candidates if not r.seed and r.val_ppl is not None),
                   key=lambda r: (r.val_ppl, r.complexity, r.id))
    seed = best_seed(state)
    return found[:max(0, state.config.select_top)] + ([seed] if seed is not None else [])


def select_ppl(state: SearchState, rec: Candidate) -> float | None:
    return state.selection.get(rec.key, {}).get("select_ppl")


def pending(state: SearchState) -> bool:
    """Whether some finalist has not been measured on the selection slice yet."""
    return any(r.key not in state.selection for r in finalists(state))


def run_selection(engine) -> None:
    """Measure every finalist not measured yet on the selection slice (saved one by one)."""
    state = engine.state
    todo = [r for r in finalists(state) if r.key not in state.selection]
    for i, rec in enumerate(todo):
        engine.log(f"selection slice ({i + 1}/{len(todo)}): {label(rec)}")
        try:
            res = engine.fitness.select_ppl(engine.screening.parse(rec.text),
                                            evaluable(rec.recipe, engine.library))
        except Exception as err:  # one broken finalist must not lose the others
            res = {"error": f"{type(err).__name__}: {err}"}
        if not math.isfinite(res.get("select_ppl", 0.0)):
            res = {**res, "error": "the selection slice's perplexity overflowed"}
            del res["select_ppl"]
        state.selection[rec.key] = res
        engine.save()
    w = winner(state)
    if w is not None:
        engine.log(f"winner on the selection slice: {label(w)} (select ppl {select_ppl(state, w):.3f}, "
                   f"val ppl {w.val_ppl:.3f})")


def winner(state: SearchState) -> Candidate | None:
    """The finalist with the lowest selection-slice ppl (None: selection off or none measured)."""
    measured = [r for r in finalists(state) if select_ppl(state, r) is not None]
    if not measured:
        return None
    return min(measured, key=lambda r: (select_ppl(state, r), r.val_ppl, r.complexity, r.id))


def _ranks(values: list[float | None]) -> list[int | None]:
    order = sorted((v, i) for i, v in enumerate(values) if v is not None)
    ranks: list[int | None] = [None] * len(values)
    for rank, (_, i) in enumerate(order, 1):
        ranks[i] = rank
    return ranks


def selection_markdown(state: SearchState) -> str:
    """The finalists with both slices' ppl and ranks, the winner marked, and what was done."""
    fin = finalists(state)
    if not fin:
        return ""
    f = state.config.fitness
    v, s, L = f.get("val_windows"), select_windows(state), f.get("seqlen")
    w = winner(state)
    vals, sels = [r.val_ppl for r in fin], [select_ppl(state, r) for r in fin]
    rows = []
    for r, vr, sr in zip(fin, _ranks(vals), _ranks(sels)):
        err = state.selection.get(r.key, {}).get("error")
        role = ("★ winner" if r is w else "") + (" (best seed)" if r.seed else "")
        rows.append([role.strip(), label(r), fmt(r.val_ppl), vr,
                     fmt(select_ppl(state, r)) if not err else "error",
                     sr if sr is not None else "–"])
    by_fitness = min(fin, key=lambda r: (r.val_ppl, r.complexity, r.id))
    lines = [f"The finalists, the {len(fin) - (1 if fin[-1].seed else 0)} best discovered formulas by "
             f"fitness val ppl and the best library metric, were pruned again and measured on the "
             f"**selection slice**: {s} windows of {L} tokens (tokens {v * L}–{(v + s) * L} of the "
             f"validation stream), after the {v} fitness windows (tokens 0–{v * L}) and before the "
             f"calibration windows. The search never read it: no candidate was proposed, screened or "
             f"ranked on it, so the winner was chosen on text the search never saw.", "",
             markdown_table(["", "formula", "val ppl (fitness slice)", "rank",
                             "select ppl (selection slice)", "rank"], rows), ""]
    if w is None:
        lines.append("No finalist has a selection-slice ppl yet: there is no winner.")
    elif w is by_fitness:
        lines.append(f"The winner, `{label(w)}`, is also the best on the fitness slice.")
    else:
        lines.append(f"The winner, `{label(w)}`, is not the best on the fitness slice (`{label(by_fitness)}`, "
                     f"val ppl {by_fitness.val_ppl:.3f}): its lead there did not hold on new text.")
    return "\n".join(lines)


def selection_json(state: SearchState) -> dict[str, Any] | None:
    """hall.json's view: the winner and each finalist's two ppl values."""
    fin = finalists(state)
    if not fin or not state.selection:
        return None
    w = winner(state)
    return {"winner": w and w.key, "select_windows": select_windows(state),
            "finalists": [{"id": r.id, "formula": r.pretty, "canonical": r.canonical, "key": r.key,
                           **({"recipe": r.recipe.to_json()} if r.recipe != MASK else {}), "seed": r.seed,
                           "val_ppl": r.val_ppl, "select_ppl": select_ppl(state, r)} for r in fin]}
