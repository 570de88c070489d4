"""The GCoT graph: sketches with typed holes, linked by grammar refinements (docs/design.md §4).

    g = Graph(root="?Mat")
    node, created = g.refine(0, parse_sketch("|W| * ?Col"))     # an edge 0 -> node
    g.record(leaf.id, ok=True, val_ppl=30.2, proxy=0.01)         # scores flow to ancestors
    print(g.graph_text()); json.dumps(g.graph_json())

Nodes are keyed by their resolved DSL text (``to_text`` of the checked sketch), so two
spellings of one sketch are one node. An edge ``A -> B`` records the fill that turns
``A`` into ``B`` (``sketch.match``). Edges are *one-production* steps: one hole replaced
by one grammar production, i.e. by an operand, a number, a hole of another kind, or one
operator/function whose operands are new holes (``?Col := ?Col ^ ?c``). A refinement
that does more (``refine(2, |W| * ‖X‖ ^ 0.5)`` from ``|W| * ?Col``) is expanded into a
chain through the intermediate sketches (``|W| * ?Col ^ ?c``, ``|W| * ‖X‖ ^ ?c``), which
become nodes (origin ``step``; shared when two chains pass through the same sketch):
holes left to right, each expanded top-down. An intermediate sketch that does not
type-check on its own (``sqrt(?Mat - ?Mat)``: a hole is any value of its shape, so the
difference may be negative) is skipped, and that one edge then does the productions of
the skipped steps together (its ``fills`` list each hole it fills); ``one_step(edge)``
tells which edges are single productions. Graphs saved by older versions keep their
multi-fill edges.

The graph is a DAG (refinement is a partial order); ``graph_text`` prints it as a tree
along each node's first parent and references the other parents, and the path to the
best formula ("Reached by") along first parents, one production per line. A node's
*best* is the best score among the complete formulas below it (itself included): lowest
validation perplexity, then lowest proxy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from ..dsl.ast import Expr, Hole, size
from ..dsl.printer import to_text
from ..errors import PruneDSLError
from .gcot_steps import is_one_step, one_production_steps
from .gcot_text import graph_text, render_tree, score_text
from ..dsl.sketch import HOLE_SHAPES, NotARefinement, holes, match, parse_sketch

DEFAULT_SEEDS = ("?Mat * ?Col", "|W| * ?Col", "|W| ^ ?c * ‖X‖ ^ ?c")
MAX_NODES = 5000  # a runaway search stops growing the graph, not the process


@dataclass
class Node:
    id: int
    text: str                       # resolved DSL text; holes print as ?Mat
    holes: int                      # 0: a complete formula
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    origin: str = "llm"             # root, seed (a starting sketch), library (a scored seed metric),
                                    # llm, step (an intermediate sketch of a one-production chain)
    name: str | None = None         # library metric name, if any
    round: int = 0                  # the LLM round that added it
    status: str = "sketch"          # sketch | pending | ok | error | duplicate
    val_ppl: float | None = None    # own scores (complete formulas only)
    proxy: float | None = None
    error: str | None = None
    canonical: str | None = None
    duplicate_of: str | None = None
    best_ppl: float | None = None   # best among complete formulas at or below this node
    best_ppl_node: int | None = None
    best_proxy: float | None = None
    best_proxy_node: int | None = None

    @property
    def complete(self) -> bool:
        return self.holes == 0


@dataclass
class Edge:
    src: int
    dst: int
    fills: list[str]                # "?Col := ‖X‖ ^ 0.5", in the sketch's left-to-right order
    round: int = 0


def _better(a: float | None, b: float | None) -> bool:
    """Is ``a`` a better (lower) score than ``b``?"""
    return a is not None and math.isfinite(a) and (b is None or a < b)


class Graph:
    def __init__(self, root: str = "?Mat", seeds: Iterable[str] = (),
                 sketches: Iterable[str] | None = None):
        """``sketches``: where to start (default ``DEFAULT_SEEDS`` under a ?Mat root);
        ``seeds``: more starting points, sketches or complete formulas such as the library
        metrics (``"wanda"``), each added under the most specific node it refines. A seed
        that fits nowhere (another shape, an unknown name) is skipped."""
        root_expr = parse_sketch(root)
        if not isinstance(root_expr, Hole) or root_expr.kind == "c":
            raise ValueError(f"the root of the graph must be one hole such as ?Mat, got {root!r}")
        self.shape = HOLE_SHAPES[root_expr.kind]
        self.nodes: list[Node] = []
        self.edges: dict[tuple[int, int], Edge] = {}
        self._index: dict[str, int] = {}
        self._exprs: dict[int, Expr] = {}
        self._new_node(root_expr, origin="root", round=0)
        if sketches is None:
            sketches = DEFAULT_SEEDS if self.shape == "Mat" else ()
        # The starting points first, so that they keep the ids 1, 2, ... (the prompt and
        # its examples name them); then their one-production chains.
        links: list[tuple[int, int]] = []
        for text in list(sketches) + list(seeds):
            try:
                expr = parse_sketch(text)
                if expr.type is not None and expr.type.shape != self.shape:
                    continue
                parent = self.most_specific(expr)
                if parent is None or self.find(to_text(expr)) is not None:
                    continue
                node = self._new_node(expr, origin="seed", round=0)
            except PruneDSLError:
                continue
            links.append((parent, node.id))
            if node.complete:
                node.origin = "library"
                if text.isidentifier() and text != node.text:
                    node.name = node.name or text
        for parent, child in links:
            self._link(parent, self.nodes[child], 0)

    # --- building -------------------------------------------------------------------
    def _new_node(self, expr: Expr, origin: str, round: int) -> Node:
        text = to_text(expr)
        n = len(holes(expr))
        node = Node(len(self.nodes), text, n, origin=origin, round=round,
                    status="sketch" if n else "pending")
        self.nodes.append(node)
        self._index[text] = node.id
        self._exprs[node.id] = expr
        return node

    def expr(self, node_id: int) -> Expr:
        if node_id not in self._exprs:
            self._exprs[node_id] = parse_sketch(self.nodes[node_id].text)
        return self._exprs[node_id]

    def find(self, text: str) -> Node | None:
        """The node whose resolved text is ``text`` (exactly; no parsing)."""
        i = self._index.get(text)
        return None if i is None else self.nodes[i]

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, int) and 0 <= node_id < len(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def refine(self, parent: int, expr: Expr, origin: str = "llm", round: int = 0) -> tuple[Node, bool]:
        """Add ``expr`` (a resolved sketch or formula) as a refinement of node ``parent``.
        Returns ``(node, created)``; raises ``NotARefinement`` with the reason."""
        p = self.nodes[parent]
        if p.complete:
            raise NotARefinement(f"node {parent} is a complete formula with no holes to fill",
                                 hint="choose a node whose text has ?Mat, ?Row, ?Col, ?Scalar or ?c")
        if expr.type is not None and expr.type.shape != self.shape:
            raise NotARefinement(f"`{to_text(expr)}` is a {expr.type.shape}; the search needs a {self.shape}")
        fills, why = match(self.expr(parent), expr)
        if fills is None:
            raise NotARefinement(f"`{to_text(expr)}` is not a refinement of node {parent} `{p.text}`: {why}")
        if not fills:
            raise NotARefinement(f"`{to_text(expr)}` is node {parent} itself; fill at least one hole")
        existing = self.find(to_text(expr))
        if existing is None and len(self.nodes) >= MAX_NODES:
            raise NotARefinement(f"the graph is full ({MAX_NODES} nodes)")
        node = existing or self._new_node(expr, origin, round)
        if (parent, node.id) not in self.edges and not (existing is not None and self._reaches(parent, node.id)):
            self._link(parent, node, round)
        return node, existing is None

    def _reaches(self, a: int, b: int) -> bool:
        """Is ``b`` below ``a`` (``a``'s chain to ``b`` is there already)?"""
        stack, seen = [b], set()
        while stack:
            i = stack.pop()
            if i == a:
                return True
            if i not in seen:
                seen.add(i)
                stack.extend(self.nodes[i].parents)
        return False

    def _edge(self, a: int, b: int, round: int) -> None:
        if (a, b) in self.edges or a == b:
            return
        fills, _ = match(self.expr(a), self.expr(b))
        self.edges[(a, b)] = Edge(a, b, [f.text() for f in fills or []], round)
        self.nodes[b].parents.append(a)
        self.nodes[a].children.append(b)
        self._push_up(self.nodes[b])

    def _link(self, parent: int, node: Node, round: int) -> None:
        """Edges ``parent -> … -> node`` through the one-production intermediate sketches."""
        prev = parent
        for mid in self.steps(self.expr(parent), self.expr(node.id))[:-1]:
            text = to_text(mid)
            step = self.find(text)
            if step is None:
                if len(self.nodes) >= MAX_NODES:
                    break
                step = self._new_node(mid, "step", round)
            if step.id == node.id or step.complete:
                break
            self._edge(prev, step.id, round)
            prev = step.id
        self._edge(prev, node.id, round)

    # one-production chains (gcot_steps.py)
    steps = staticmethod(one_production_steps)
    one_step = staticmethod(is_one_step)

    def most_specific(self, expr: Expr) -> int | None:
        """The sketch with the most structure (non-hole nodes) that ``expr`` refines."""
        best, best_size = None, -1
        for node in self.nodes:
            structure = size(self.expr(node.id)) - node.holes
            if node.complete or structure <= best_size:
                continue
            if match(self.expr(node.id), expr)[0]:
                best, best_size = node.id, structure
        return best

    def attach(self, expr: Expr, origin: str = "llm", round: int = 0) -> tuple[Node, bool]:
        """Add ``expr`` under the most specific node it refines (used when no node is named)."""
        parent = self.most_specific(expr)
        if parent is None:
            existing = self.find(to_text(expr))
            if existing is not None:
                return existing, False
            raise NotARefinement(f"`{to_text(expr)}` refines no node of the graph "
                                 f"(the root is `{self.nodes[0].text}`)")
        return self.refine(parent, expr, origin, round)

    # --- scores ---------------------------------------------------------------------
    def record(self, node_id: int, *, ok: bool, val_ppl: float | None = None,
               proxy: float | None = None, error: str | None = None, canonical: str | None = None,
               duplicate_of: str | None = None) -> None:
        """What the engine reported for a complete formula; scores flow to its ancestors."""
        node = self.nodes[node_id]
        node.canonical = canonical or node.canonical
        if not ok:
            node.error = error
            if node.val_ppl is None and node.proxy is None:  # a later failure keeps earlier scores
                node.status = "error"
            return
        node.status = "duplicate" if duplicate_of and node.status == "pending" else "ok"
        node.duplicate_of = duplicate_of or node.duplicate_of
        if _better(val_ppl, node.val_ppl):
            node.val_ppl = val_ppl
        if _better(proxy, node.proxy):
            node.proxy = proxy
        self._push_up(node, own=True)

    def _push_up(self, node: Node, own: bool = False) -> None:
        """Propagate ``node``'s best scores to every ancestor (and itself when ``own``)."""
        if own:
            if _better(node.val_ppl, node.best_ppl):
                node.best_ppl, node.best_ppl_node = node.val_ppl, node.id
            if _better(node.proxy, node.best_proxy):
                node.best_proxy, node.best_proxy_node = node.proxy, node.id
        stack, seen = [node], set()
        while stack:
            child = stack.pop()
            for pid in child.parents:
                p, changed = self.nodes[pid], False
                if _better(child.best_ppl, p.best_ppl):
                    p.best_ppl, p.best_ppl_node, changed = child.best_ppl, child.best_ppl_node, True
                if _better(child.best_proxy, p.best_proxy):
                    p.best_proxy, p.best_proxy_node, changed = child.best_proxy, child.best_proxy_node, True
                if changed and pid not in seen:
                    seen.add(pid)
                    stack.append(p)

    def best(self) -> Node | None:
        """The best complete formula: lowest val ppl, or lowest proxy if none has a ppl."""
        root = self.nodes[0]
        i = root.best_ppl_node if root.best_ppl_node is not None else root.best_proxy_node
        return None if i is None else self.nodes[i]

    def path(self, node_id: int) -> list[int]:
        """Root → ``node_id`` along first parents: how the node was reached."""
        out = [node_id]
        while self.nodes[out[-1]].parents:
            out.append(self.nodes[out[-1]].parents[0])
        return out[::-1]

    # --- printing -------------------------------------------------------------------
    def score_text(self, node: Node, ref: str = "#") -> str:
        return score_text(node, ref)

    def render_tree(self, label: Callable[[Node, Edge | None], str],
                    visible: set[int] | None = None) -> list[str]:
        """Tree lines along first parents; a node shown under a later parent is a reference."""
        return render_tree(self, label, visible)

    def graph_text(self) -> str:
        """The whole graph as a tree, then the path that reached the best formula."""
        return graph_text(self)

    def graph_json(self) -> dict[str, Any]:
        best = self.best()
        return {"version": 1, "root": self.nodes[0].text, "shape": self.shape,
                "nodes": [asdict(n) for n in self.nodes],
                "edges": [asdict(e) for e in self.edges.values()],
                "best": None if best is None else best.id,
                "best_path": [] if best is None else self.path(best.id)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Graph":
        g = cls(root=data["root"], sketches=())
        g.nodes = [Node(**n) for n in data["nodes"]]
        g.edges = {(e["src"], e["dst"]): Edge(**e) for e in data["edges"]}
        g._index = {n.text: n.id for n in g.nodes}
        g._exprs = {}
        return g
