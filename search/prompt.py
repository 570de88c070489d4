"""The LLM proposer's prompt: language summary, GCoT graph, last errors, reply format.

The language summary is generated from the tables the checker uses (``dsl.operands``,
``dsl.functions``, ``dsl.types``, the metric library), so it cannot drift from the
language. The reply format and its reader are ``llm_contract``'s, shared with the
offline server (serve/), which constrains decoding to exactly it:

    node <id>          (optional first line: the node the answer refines)
    <formula or sketch>
    ...                (1 to 8 lines, one formula or sketch each, nothing else)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ..dsl.functions import (AXIS_FUNCTIONS, AXIS_RESULT, BINARY, DOCS, ELEMENTWISE, NORMALIZERS,
                             WHOLE)
from ..dsl.library import BUILTIN, Library
from ..dsl.operands import OPERANDS
from ..dsl.printer import to_text
from ..dsl.types import SHAPE_DIMS
from ..errors import PruneDSLError
from ..llm_contract import MAX_LINES, REPLY_FORMAT, library_call
from .gcot import Edge, Graph, Node
from .sketch import HOLE_DOCS


@functools.lru_cache(maxsize=None)
def language_summary(shape: str = "Mat", available: frozenset[str] | None = None,
                     library: Library = BUILTIN) -> str:
    """What the model needs to write formulas, from the checker's own tables; ``shape`` is
    what a metric must produce (the graph's root); ``available`` the statistic keys this
    run provides (None: all), so the model is not offered what would fail."""
    def usable(key: str) -> bool:
        return available is None or key in available
    out = ["A pruning metric scores every weight of one linear layer W (out × in); the lowest "
           "scores are pruned within each output row. Formulas are typed by shape:"]
    out += [f"  {s}: {d}" for s, d in SHAPE_DIMS.items()]
    out.append("Broadcasting: Scalar ⊕ T → T, Row ⊕ Col → Mat, Mat ⊕ Row|Col → Mat. The result "
               f"must be a {shape}. Signs matter: sqrt, log and fractional powers need a nonnegative "
               "argument (|W|, not W).")
    out.append("Operands:")
    for o in OPERANDS.values():
        if not usable(o.key) or o.type.shape not in SHAPE_DIMS:  # Struct: structure scores only
            continue
        spell = o.text if o.text == o.ascii else f"{o.text} (or {o.ascii})"
        out.append(f"  {spell}: {o.type.shape}, {o.type.sign}; {o.doc}")
    out.append("  numbers: Scalar constants")
    out.append("Operators: + - * / and ^ (the exponent must be a number), unary -, |e| (absolute "
               "value), parentheses.")
    out.append("Elementwise functions (shape preserved): " + ", ".join(
        f"{f}{' (argument ≥ 0)' if ELEMENTWISE[f][0] else ''}" for f in ELEMENTWISE))
    out.append("Two-argument elementwise: " + ", ".join(f"{f}(a, b)" for f in BINARY))
    for axis, what in (("row", "the input dimension"), ("col", "the output dimension")):
        fs = [f for f, (a, _) in AXIS_FUNCTIONS.items() if a == axis]
        shapes = ", ".join(f"{a} → {b}" for a, b in AXIS_RESULT[axis].items())
        out.append(f"Reductions along {what} ({shapes}): {', '.join(fs)}")
    out.append("Whole-tensor reductions (→ Scalar): " + ", ".join(f"{f}(e)" for f in WHOLE))
    out.append("Normalizations over the whole tensor (shape preserved): " + ", ".join(
        f"{f}(e): {DOCS[f]}" for f in NORMALIZERS))
    lib = {n: d for n, d in library.of_kind("metric").items()
           if available is None or _requires(n, library) <= available}
    if lib:
        out.append("Library metrics (usable by name, parameters by keyword):")
        for d in lib.values():
            cite = d.doc.split(', "')[0]  # "Wanda: Sun et al. 2023", without the title
            doc = f"   # {cite}" if d.doc else ""
            out.append(f"  {library_call(d) if d.params else d.name} = {to_text(d.body)}{doc}")
    out.append("Holes (in sketches only): " + "; ".join(f"?{k}: {v}" for k, v in HOLE_DOCS.items()))
    return "\n".join(out)


def _requires(name: str, library: Library) -> frozenset[str]:
    from ..api import parse
    try:
        return parse(name, library=library).requires
    except PruneDSLError:
        return frozenset({"?"})  # never shown


SYSTEM = ("You design pruning metrics for large language models in a small typed formula "
          "language, by refining sketches in a search graph.\n\n{summary}\n\n{reply}")


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
    system = SYSTEM.format(summary=language_summary(graph.shape, available, library),
                           reply=REPLY_FORMAT)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]
