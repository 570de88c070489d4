"""The LLM proposer's prompt: language summary, GCoT graph, last errors, reply format.

The language summary, the sketch holes and the reply format are ``llm_prompt``'s, the
same texts the offline server (serve/) puts in its system prompt; the summary is
generated from the tables the checker uses, so it cannot drift from the language. The
reply format's reader is ``llm_contract``'s; the server constrains decoding to it:

    node <id>          (optional first line: the node the answer refines)
    <formula or sketch>
    ...                (1 to 8 lines, one formula or sketch each, nothing else)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..dsl.library import BUILTIN, Library
from ..llm_contract import MAX_LINES
from ..llm_prompt import REPLY_FORMAT, ROLE, SKETCH_HOLES, language_summary
from .gcot import Edge, Graph, Node

__all__ = ["Feedback", "build_messages", "language_summary", "render_errors", "render_graph"]


SYSTEM = "{role} You refine sketches in a search graph.\n\n{summary}\n\n{holes}\n\n{reply}"


@dataclass
class Feedback:
    """One problem to show the model: a rejected line or a failed evaluation."""

    line: str
    message: str
    node: int | None = None
    round: int = 0


def _visible(graph: Graph, max_nodes: int) -> set[int]:
    """Which nodes the prompt shows: the best formulas with their ancestors, then open
    sketches (newest first), then recent formulas; failed formulas go to the errors."""
    ranked = [n for n in graph.nodes if n.complete and n.status in ("ok", "duplicate")]
    ranked.sort(key=lambda n: (n.val_ppl is None, n.val_ppl or math.inf, n.proxy or math.inf))
    sketches = [n for n in graph.nodes if not n.complete][::-1]
    pending = [n for n in graph.nodes if n.complete and n.status == "pending"][::-1]
    keep: set[int] = {0}
    for n in ranked[: max_nodes // 3] + sketches + pending + ranked[max_nodes // 3:]:
        path = [i for i in graph.path(n.id) if i not in keep]
        if len(keep) + len(path) > max_nodes:
            continue
        keep.update(path)
    return keep


def render_graph(graph: Graph, max_nodes: int = 40) -> str:
    def label(node: Node, edge: Edge | None) -> str:
        name = f" ({node.name})" if node.name else ""
        return f"node {node.id}: {node.text}{name}   [{graph.score_text(node, ref='node ')}]"

    lines = graph.render_tree(label, _visible(graph, max_nodes))
    return "\n".join(lines)


def render_errors(errors: list[Feedback]) -> str:
    if not errors:
        return ""
    out = ["Problems with your recent answers (fix them, do not repeat them):"]
    for e in errors:
        where = f" (for node {e.node})" if e.node is not None else ""
        body = "\n    ".join(e.message.splitlines())
        out.append(f"- `{e.line}`{where}:\n    {body}")
    return "\n".join(out)


def build_messages(graph: Graph, errors: list[Feedback], n: int, max_nodes: int = 40,
                   available: frozenset[str] | None = None,
                   library: Library = BUILTIN) -> list[dict[str, str]]:
    best = graph.best()
    parts = ["Search graph. Each node is a sketch with typed holes or a complete formula; a "
             "child refines its parent by filling holes. Scores: validation perplexity after "
             "pruning (ppl, lower is better) and layer-wise output error (proxy, lower is better).",
             render_graph(graph, max_nodes)]
    if best is not None:
        parts.append(f"Best formula so far: node {best.id}: {best.text} [{graph.score_text(best)}]")
    if errors:
        parts.append(render_errors(errors))
    k = max(1, min(n, MAX_LINES))
    parts.append(f"Choose the node (a sketch with holes) whose refinements look most promising "
                 f"and answer with `node <id>` and then {k} refinement{'s' * (k > 1)} of it. "
                 "Prefer new complete formulas that are not in the graph yet.")
    system = SYSTEM.format(role=ROLE, summary=language_summary(graph.shape, available, library),
                           holes=SKETCH_HOLES, reply=REPLY_FORMAT)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]
