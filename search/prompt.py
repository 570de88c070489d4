"""The LLM proposer's prompt: language summary, GCoT graph, last errors, reply format.

The language summary, the sketch holes and the reply format are ``llm_prompt``'s, the
same texts the offline server (serve/) puts in its system prompt; the summary is
generated from the tables the checker uses, so it cannot drift from the language. The
reply format's reader is ``llm_contract``'s; the server constrains decoding to it:

    node <id>          (optional first line: the node the answer refines)
    <formula or sketch>
    ...                (1 to 8 lines, one formula or sketch each, nothing else)

Two views of the graph (``view``):

- ``compact`` (the default): what changes least comes first, so consecutive prompts share
  a long prefix and the server reuses its KV cache (``serve/generate.py``): the system
  message (role, language summary, holes, reply format), then the library metrics with
  the validation perplexity the search measured for them (worked examples: the seeds are
  evaluated first), then the nodes in the order they were made (new ones append), without
  the one-step intermediate sketches, then the best formula, the sketches to refine, the
  last errors and the request. Nothing in it depends on the round except what was added
  since.
- ``tree``: the view of earlier versions (the graph as a tree along first parents, the
  intermediate sketches included), kept so the two can be compared.

What a small model did with the earlier layout (docs/prompt_cache.md, Qwen2.5-Coder 0.5B)
shaped the compact view: it answered ``node 6`` because "Best formula so far: node 6"
named a library metric (complete: nothing to refine), and it wrote the scores
``[ppl 241.3  proxy 0.07948]`` back as formulas (``12.122414 - -241.3 - -0.07948 - ... -
W``). So only sketches carry ``node <id>``: a complete formula is a ``formula:`` line, the
best one is named without an id, and the request lists the sketches by id. Scores are
words on their own line under the formula (``scores: val ppl 241.3, proxy 0.0795``),
never next to formula text, with 4 and 3 significant digits. The reader rejects lines
that still copy them (``reply_guard.py``, shared with the server).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..dsl.library import BUILTIN, Library
from ..llm_contract import MAX_LINES
from ..llm_prompt import REPLY_FORMAT, ROLE, SKETCH_HOLES, language_summary
from .gcot import Edge, Graph, Node

__all__ = ["Feedback", "VIEWS", "build_messages", "language_summary", "offered_sketches", "open_sketches", "render_best",
           "render_errors", "render_graph", "render_library", "render_nodes", "score_line", "score_words"]

VIEWS = ("compact", "tree")


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


PPL_DIGITS, PROXY_DIGITS = 4, 3  # significant digits of the scores the compact view shows


def score_words(node: Node) -> str:
    """A complete formula's scores in labelled words (``val ppl 241.3, proxy 0.0795``), not
    a bracket of numbers that looks like formula text."""
    parts = ([f"val ppl {node.val_ppl:.{PPL_DIGITS}g}"] if node.val_ppl is not None else []) + \
        ([f"proxy {node.proxy:.{PROXY_DIGITS}g}"] if node.proxy is not None else [])
    dup = [f"ranks weights like `{node.duplicate_of}`"] if node.duplicate_of else []
    return ", ".join(parts + dup) or "no score"


def score_line(node: Node) -> str:
    """The line under a complete formula in the compact view."""
    if node.status == "error":
        return "failed: " + (node.error or "the evaluation failed").splitlines()[0]
    return "not evaluated yet" if node.status == "pending" else f"scores: {score_words(node)}"


def render_graph(graph: Graph, max_nodes: int = 40) -> str:
    def label(node: Node, edge: Edge | None) -> str:
        name = f" ({node.name})" if node.name else ""
        return f"node {node.id}: {node.text}{name}   [{graph.score_text(node, ref='node ')}]"

    lines = graph.render_tree(label, _visible(graph, max_nodes))
    return "\n".join(lines)


def _compact_visible(graph: Graph, max_nodes: int) -> list[Node]:
    """The nodes of the compact view in id order: no intermediate steps (origin ``step``),
    no library metrics (shown with their scores above), at most ``max_nodes``; over that,
    the best formulas, the newest sketches and the pending formulas are kept."""
    shown = [n for n in graph.nodes if n.origin not in ("step", "library")]
    if len(shown) <= max_nodes:
        return shown
    ranked = [n for n in shown if n.complete and n.status in ("ok", "duplicate")]
    ranked.sort(key=lambda n: (n.val_ppl is None, n.val_ppl or math.inf, n.proxy or math.inf))
    sketches = [n for n in shown if not n.complete][::-1]
    pending = [n for n in shown if n.complete and n.status == "pending"][::-1]
    keep: dict[int, Node] = {0: graph.nodes[0]}
    for n in ranked[: max_nodes // 3] + sketches + pending + ranked[max_nodes // 3:]:
        if len(keep) >= max_nodes:
            break
        keep.setdefault(n.id, n)
    return sorted(keep.values(), key=lambda n: n.id)


def render_nodes(graph: Graph, max_nodes: int = 40) -> str:
    """The compact view's node list, oldest first: a sketch is ``node N: text``, a complete
    formula ``formula: text`` (no id: it cannot be refined) with ``  scores: ...`` (or
    ``failed: ...``, ``not evaluated yet``) below."""
    nodes = _compact_visible(graph, max_nodes)
    # A sketch's best-below score would change under every new best formula and cut the
    # shared prefix at node 0; the formulas carry the scores, the sketches only their text.
    lines = [f"formula: {n.text}\n  {score_line(n)}" if n.complete else f"node {n.id}: {n.text}"
             for n in nodes]
    hidden = sum(n.origin not in ("step", "library") for n in graph.nodes) - len(nodes)
    return "\n".join(lines + ([f"… {hidden} more nodes not shown"] if hidden > 0 else []))


def render_library(graph: Graph) -> str:
    """The library metrics the search evaluated, with their measured scores (worked examples);
    empty before any is scored. Only measured numbers: a pending seed says so."""
    lib = [n for n in graph.nodes if n.origin == "library"]
    if not lib:
        return ""
    out = ["Library metrics, each pruned and evaluated by this search: complete formulas (worked "
           "examples, not sketches to refine), each with its scores on the line below (val ppl: "
           "validation perplexity after pruning; proxy: layer-wise output error; lower is better):"]
    for n in lib:
        name = f"{n.name} = " if n.name and n.name != n.text else ""
        out.append(f"  {name}{n.text}\n    {score_line(n)}")
    return "\n".join(out)


def render_best(best: Node) -> str:
    """The best formula without its node id (it is complete: an id invites ``node <id>``),
    its scores before it and the formula on a line of its own."""
    name = f"{best.name} = " if best.name and best.name != best.text else ""
    return (f"Best complete formula so far ({score_words(best)}); it has no holes, so refine a "
            f"sketch to beat it:\n  {name}{best.text}")


def open_sketches(nodes) -> list[int]:
    """The ids of the shown sketches: what a reply may name."""
    return sorted(n.id for n in nodes if not n.complete)


def offered_sketches(graph: Graph, max_nodes: int = 40, view: str = "compact") -> list[int]:
    """The sketches a round's prompt lists for refinement (``build_messages``), by id; the
    LLM proposer also sends them to prunedsl's server, which then checks that a reply
    refines one of them (``serve/replies.py``)."""
    shown = (graph.nodes[i] for i in _visible(graph, max_nodes)) if view == "tree" else \
        _compact_visible(graph, max_nodes)
    return open_sketches(shown)


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
                   library: Library = BUILTIN, view: str = "compact") -> list[dict[str, str]]:
    """The chat messages of one round; ``view``: ``compact`` or ``tree`` (module docstring)."""
    if view not in VIEWS:
        raise ValueError(f"unknown prompt view {view!r}; choose one of {', '.join(VIEWS)}")
    best = graph.best()
    if view == "tree":
        parts = ["Search graph. Each node is a sketch with typed holes or a complete formula; a "
                 "child refines its parent by filling holes. Scores: validation perplexity after "
                 "pruning (ppl, lower is better) and layer-wise output error (proxy, lower is better).",
                 render_graph(graph, max_nodes)]
    else:
        parts = [p for p in (render_library(graph),) if p] + [
            "Search nodes, oldest first: `node <id>:` lines are sketches with typed holes, the ones "
            "you refine; `formula:` lines are complete formulas already proposed, each with its scores "
            "on the line below.",
            render_nodes(graph, max_nodes)]
    sketches = offered_sketches(graph, max_nodes, view)
    if best is not None:
        parts.append(render_best(best))
    # After the node list (it changes as they do), before the errors: the ids a reply may name.
    parts.append("Sketches you can refine: " + ", ".join(f"node {i}" for i in sketches))
    if errors:
        parts.append(render_errors(errors))
    k = max(1, min(n, MAX_LINES))
    parts.append(f"Choose the sketch you can refine whose refinements look most promising (never a "
                 f"complete formula) and answer with `node <id>` and then {k} refinement{'s' * (k > 1)} "
                 "of it. Prefer new complete formulas that are not in the graph yet.")
    system = SYSTEM.format(role=ROLE, summary=language_summary(graph.shape, available, library),
                           holes=SKETCH_HOLES, reply=REPLY_FORMAT)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]
