"""The GCoT graph as text (``search/gcot.py``): node scores, the tree along first parents,
and the path that reached the best formula. ``prompt.py`` builds the LLM's view of the
graph from ``render_tree`` and ``score_text``; the report prints ``graph_text``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .gcot import Edge, Graph, Node


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def score_text(node: Node, ref: str = "#") -> str:
    """A node's scores: its own for a formula, the best below it for a sketch."""
    if node.complete:
        if node.status == "error":
            return "error: " + (node.error or "failed").splitlines()[0]
        if node.status == "pending":
            return "pending"
        dup = f"  (duplicate of {node.duplicate_of})" if node.duplicate_of else ""
        return f"ppl {_fmt(node.val_ppl)}  proxy {_fmt(node.proxy)}{dup}"
    parts = [f"best {what} {_fmt(v)} ({ref}{i})" for what, v, i in
             (("ppl", node.best_ppl, node.best_ppl_node), ("proxy", node.best_proxy, node.best_proxy_node))
             if i is not None]
    return "  ".join(parts) or "no score yet"


def render_tree(graph: Graph, label: Callable[[Node, Edge | None], str],
                visible: set[int] | None = None) -> list[str]:
    """Tree lines along first parents; a node shown under a later parent is a reference."""
    lines, shown = [], set()

    def walk(i: int, prefix: str, tail: str, edge: Edge | None) -> None:
        node = graph.nodes[i]
        if i in shown:
            lines.append(f"{prefix}{tail}#{i} (see above)")
            return
        shown.add(i)
        lines.append(f"{prefix}{tail}{label(node, edge)}")
        kids = [c for c in node.children if visible is None or c in visible]
        hidden = len(node.children) - len(kids)
        inner = prefix + ("" if not tail else ("   " if tail.startswith("└") else "│  "))
        for k, c in enumerate(kids):
            last = k == len(kids) - 1 and not hidden
            walk(c, inner, "└─ " if last else "├─ ", graph.edges[(i, c)])
        if hidden:
            lines.append(f"{inner}└─ … {hidden} more")

    walk(0, "", "", None)
    return lines


def graph_text(graph: Graph) -> str:
    """The whole graph as a tree, then the path that reached the best formula."""
    n_sketch = sum(not n.complete for n in graph.nodes)
    best = graph.best()
    head = (f"GCoT graph: {len(graph.nodes)} nodes ({n_sketch} sketches, "
            f"{len(graph.nodes) - n_sketch} formulas), {len(graph.edges)} edges")

    def label(node: Node, edge: Edge | None) -> str:
        via = f"   [{', '.join(edge.fills)}]" if edge else ""
        name = f" ({node.name})" if node.name else ""
        return f"#{node.id} {node.text}{name}{via}   {score_text(node)}"

    lines = [head, *render_tree(graph, label)]
    if best is not None:
        lines += ["", f"Best formula: #{best.id} {best.text}   {score_text(best)}",
                  "Reached by:"]
        path = graph.path(best.id)
        width = max(len(graph.nodes[i].text) for i in path)
        for a, b in zip([None] + path, path):
            fills = f"   {', '.join(graph.edges[(a, b)].fills)}" if a is not None else ""
            lines.append(f"  #{b:<4} {graph.nodes[b].text:<{width}}{fills}".rstrip())
    return "\n".join(lines)

