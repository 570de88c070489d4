"""Tables for people: aligned plain text on a terminal, Markdown for files written for docs.

    print(render_table(["task", "acc"], rows, "text"))   # or "md"

No torch, no I/O: the CLI, the search's terminal output and the model card share it.
"""
from __future__ import annotations

from typing import Any, Sequence

TABLE_FORMATS = ("text", "md")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; ``|`` inside a cell is escaped."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [list(header)] + [list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def text_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with two spaces, the header underlined; cells exactly as given (no escapes).

    A header of empty strings is a key/value table: no header line at all.
    """
    body = [[str(c) for c in row] for row in rows]
    head = [str(c) for c in header]
    has_header = any(head)
    cells = ([head] if has_header else []) + body
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(r) for r in cells]
    if has_header:
        out.insert(1, "  ".join("─" * w for w in widths))
    return "\n".join(out)


def render_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    if fmt == "md":
        return markdown_table(header, rows)
    if fmt == "text":
        return text_table(header, rows)
    raise ValueError(f"unknown table format {fmt!r}; expected one of {TABLE_FORMATS}")
