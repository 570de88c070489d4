"""The reply formats a constrained request produces, and checking them.

    split_reply("node 3\\n|W| * ?Col")      # (3, ['|W| * ?Col'])
    check_reply("sqrt(W)", "formula")       # (True, False, 'type error: ...')
"""
from __future__ import annotations

import re

from ...dsl.parser import parse_expr
from ...errors import PruneDSLError

_NODE_RE = re.compile(r"node\s+(\d+)")


def split_reply(text: str) -> tuple[int | None, list[str]]:
    """``(node, formulas)`` of a reply in the ``reply`` format (no parsing of formulas)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    node = None
    if lines and (m := _NODE_RE.fullmatch(lines[0])):
        node, lines = int(m.group(1)), lines[1:]
    return node, lines


def check_reply(text: str, mode: str) -> tuple[bool, bool, str | None]:
    """``(parses, type_checks, first error)`` of a reply: each line with ``parse_expr``;
    in ``formula`` mode the whole text also with ``prunedsl.parse`` (the type checker)."""
    from ...api import parse
    if mode == "formula":
        lines = [text]
    else:
        _, lines = split_reply(text)
        if not lines:
            return False, False, "no formula in the reply"
    try:
        for line in lines:
            parse_expr(line)
    except PruneDSLError as err:
        return False, False, err.render()
    if mode != "formula":
        return True, True, None  # sketches have holes: parsing is the check
    try:
        parse(text)
    except PruneDSLError as err:
        return True, False, err.render()
    return True, True, None
