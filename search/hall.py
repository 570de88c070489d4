"""Hall of fame (Pareto front of complexity vs validation perplexity) and crash-safe files.

Everything the search knows lives in one JSON document, ``DIR/state.json``, rewritten
after every evaluation with an atomic replace (write a temporary file in DIR, fsync,
``os.replace``), so a SIGKILL leaves either the previous or the new state, never half
of one. ``hall.json`` and ``hall.md`` are derived views written the same way.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .recipe import with_tag
from .records import Candidate, SearchState, to_json
from .state import read_state  # noqa: F401  (search.cli reads the state through here)


def atomic_write(path: str | os.PathLike, text: str | bytes) -> None:
    """Write ``path`` so that readers (and a crash) see the old or the new content only."""
    path = Path(path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these are ordinary result files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if callable(getattr(o, "to_json", None)):  # the records of search/records.py
        return o.to_json()
    return str(o)


# --- the hall of fame -------------------------------------------------------------------
def pareto_front(records: Iterable[Candidate]) -> list[Candidate]:
    """Fully evaluated records no other record beats in both complexity and val ppl,
    simplest first (each row is strictly better on validation than every simpler one)."""
    done = [r for r in records if r.val_ppl is not None]
    done.sort(key=lambda r: (r.complexity, r.val_ppl, r.id))
    front, best = [], math.inf
    for r in done:
        if r.val_ppl < best:
            front.append(r)
            best = r.val_ppl
    return front


def best_record(records: Iterable[Candidate]) -> Candidate | None:
    done = [r for r in records if r.val_ppl is not None]
    return min(done, key=lambda r: (r.val_ppl, r.complexity, r.id)) if done else None


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits}e}"
    return f"{v:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def label(r: Candidate) -> str:
    """Name, formula and recipe: ``wanda: |W|·‖X‖  +R(layer) · alloc owl``."""
    return with_tag(f"{r.name}: {r.pretty}" if r.name else r.pretty, r.recipe)


def hall_rows(records: list[Candidate]) -> list[list[Any]]:
    best = best_record(records)
    return [[("★ " if r is best else "") + label(r), r.complexity, fmt(r.proxy, 4),
             fmt(r.val_ppl), r.origin] for r in pareto_front(records)]


HALL_HEADER = ["formula", "complexity", "proxy", "val ppl", "origin"]


def hall_markdown(records: list[Candidate]) -> str:
    rows = hall_rows(records)
    if not rows:
        return "(no candidate fully evaluated yet)"
    return markdown_table(HALL_HEADER, rows)


def write_hall(directory: str | os.PathLike, state: SearchState) -> None:
    """hall.json and hall.md in ``directory`` from the search state (with the final choice
    on the selection slice once it is measured: ``search/selection.py``)."""
    from .selection import selection_json, selection_markdown
    records = state.candidates
    front = pareto_front(records)
    best = best_record(records)
    c = state.counters
    hall = {"front": [r.to_json() for r in front], "best": best and best.to_json(),
            "counters": to_json(c), "phase": state.phase}
    chosen = selection_json(state)
    if chosen is not None:
        hall["selection"] = chosen
    write_json(Path(directory) / "hall.json", hall)
    summary = (f"{c.screened} candidates screened ({c.seeds} seeds), {c.full_evals} fully "
               f"evaluated, {c.duplicates} duplicates, {c.failed} failed")
    final = ("\n## Final choice (selection slice)\n\n" + selection_markdown(state) + "\n"
             if chosen is not None else "")
    atomic_write(Path(directory) / "hall.md",
                 "# Hall of fame: complexity vs validation perplexity\n\n" + summary + "\n\n"
                 + hall_markdown(records) + "\n" + final)
