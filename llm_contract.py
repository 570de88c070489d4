"""What a language model is asked to answer and how its answer is read: the one contract
between the search's LLM proposer (``search/``) and the offline server (``serve/``).

    split_reply("node 3\\n|W| * ?Col")      # (3, ['|W| * ?Col'], [])

The reply format: an optional first line ``node <id>`` (the sketch the answer refines),
then 1 to ``MAX_LINES`` lines with one formula or sketch each, nothing else. The server
constrains decoding to exactly this (``serve/constrained.py`` builds its grammar from
these bounds) and checks replies with ``split_reply``; the search prompts for it
(``llm_prompt.REPLY_FORMAT``: the prompt texts, the language summary included, live in
``llm_prompt``) and reads every answer with the same ``split_reply``, which also
tolerates what an unconstrained chat model adds around the format. No torch, no openai:
both sides import this module.
"""
from __future__ import annotations

import re

# Request body fields prunedsl's own server reads (serve/protocol.py validates them; the
# search's client sends them to that server only): the grammar, the sketches the prompt
# offers ({node id: sketch}), the formulas the search has ({"group", "forms"}).
GRAMMAR_FIELD = "prunedsl_grammar"
SKETCHES_FIELD = "prunedsl_sketches"
SEEN_FIELD = "prunedsl_seen"

MAX_LINES = 8           # formulas per reply (the server's grammar allows 1..8)
MAX_LINE_CHARS = 400    # a longer line is not a formula worth parsing
MAX_NODE_DIGITS = 6     # `node <integer>`
NODE_RE = re.compile(rf"node\s*#?\s*(\d{{1,{MAX_NODE_DIGITS}}})\s*:?", re.IGNORECASE)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
# List numbering (`1. `, `2) `) that chat models put before lines although the prompt says
# not to. The language reads `1.` as a number, and under the server's grammar (which has
# no `1.`: ``serve/constrained.py``) the marker is allowed only before a line, so a line
# `1. |W|` means the formula `|W|`. A space must follow: `1.5 * W` and `2.W` are not
# numbered. The price: a formula written `2. * W` (2 times W) loses its `2.`, and the
# rest does not parse; the printer never writes `2.`, and `2 * W` is how to say it.
LIST_MARK_RE = re.compile(r"[0-9]{1,2}[.)]\s+")


def _unnumbered(line: str) -> str:
    m = LIST_MARK_RE.match(line)
    return line[m.end():] if m else line


def split_reply(text: str) -> tuple[int | None, list[str], list[str]]:
    """``(node, lines, problems)`` of a reply. Tolerates what chat models add around the
    format (a <think> block, code fences, `node #3:`, list numbering `1. `); formulas are
    not parsed here. Lines past ``MAX_LINES`` are dropped, with a problem saying so."""
    text = _THINK_RE.sub("", text)
    lines = [_unnumbered(ln.strip()) for ln in text.splitlines()]
    lines = [ln.strip("`").strip() if ln.startswith("`") and not ln.startswith("```") else ln
             for ln in lines if ln and not ln.startswith("```")]
    node, problems = None, []
    if lines and (m := NODE_RE.fullmatch(lines[0])):
        node, lines = int(m.group(1)), lines[1:]
    if len(lines) > MAX_LINES:
        problems.append(f"the reply had {len(lines)} formula lines; only the first {MAX_LINES} were read")
        lines = lines[:MAX_LINES]
    return node, lines, problems
