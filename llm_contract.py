"""What a language model is asked to answer and how its answer is read: the one contract
between the search's LLM proposer (``search/``) and the offline server (``serve/``).

    split_reply("node 3\\n|W| * ?Col")      # (3, ['|W| * ?Col'], [])

The reply format: an optional first line ``node <id>`` (the sketch the answer refines),
then 1 to ``MAX_LINES`` lines with one formula or sketch each, nothing else. The server
constrains decoding to exactly this (``serve/constrained.py`` builds its grammar from
these bounds) and checks replies with ``split_reply``; the search prompts for it
(``REPLY_FORMAT``) and reads every answer with the same ``split_reply``, which also
tolerates what an unconstrained chat model adds around the format. No torch, no openai:
both sides import this module.
"""
from __future__ import annotations

import re

from .dsl.printer import format_number

MAX_LINES = 8           # formulas per reply (the server's grammar allows 1..8)
MAX_LINE_CHARS = 400    # a longer line is not a formula worth parsing
MAX_NODE_DIGITS = 6     # `node <integer>`
NODE_RE = re.compile(rf"node\s*#?\s*(\d{{1,{MAX_NODE_DIGITS}}})\s*:?", re.IGNORECASE)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)

REPLY_FORMAT = f"""Reply format, nothing else (no prose, no code fences, no numbering):
node <id>
<formula or sketch>
... 1 to {MAX_LINES} lines after the node line, one formula or sketch per line.
Each line must be a refinement of node <id>: the node's text with one or more of its
holes replaced by expressions of the hole's shape (a number for ?c); everything outside
the holes stays as it is. A line without holes is a complete formula and gets evaluated;
a line with holes becomes a new node of the graph."""

# The short answer instructions of the server's default system prompt, per grammar mode.
ANSWER_FORMATS = {
    "formula": "Answer with exactly one formula on one line, nothing else.",
    "reply": (f"Answer with an optional first line `node <number>` (the sketch you refine), then 1 to "
              f"{MAX_LINES} lines with one formula each, nothing else. A formula may keep typed holes "
              "?Mat ?Row ?Col ?Scalar (an expression of that shape) and ?c (a constant)."),
}


def library_call(definition) -> str:
    """A parameterized library metric called with its defaults: ``ria(alpha = 0.5)``."""
    return f"{definition.name}({', '.join(f'{p.name} = {format_number(p.default)}' for p in definition.params)})"


def split_reply(text: str) -> tuple[int | None, list[str], list[str]]:
    """``(node, lines, problems)`` of a reply. Tolerates what chat models add around the
    format (a <think> block, code fences, `node #3:`); formulas are not parsed here.
    Lines past ``MAX_LINES`` are dropped, with a problem saying so."""
    text = _THINK_RE.sub("", text)
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln.strip("`").strip() if ln.startswith("`") and not ln.startswith("```") else ln
             for ln in lines if ln and not ln.startswith("```")]
    node, problems = None, []
    if lines and (m := NODE_RE.fullmatch(lines[0])):
        node, lines = int(m.group(1)), lines[1:]
    if len(lines) > MAX_LINES:
        problems.append(f"the reply had {len(lines)} formula lines; only the first {MAX_LINES} were read")
        lines = lines[:MAX_LINES]
    return node, lines, problems
