"""The ``llm`` proposer: GCoT prompting of any OpenAI-compatible chat endpoint.

    p = LLMProposer(base_url="http://127.0.0.1:8000/v1", model="smollm2-135m")
    props = p.propose(4)          # [] when the endpoint is down: never raises
    p.observe(outcomes)           # scores go into the graph, errors into the next prompt
    print(p.graph.graph_text())   # how the best formula was reached

Each round shows the model the language summary, the library metrics with their measured
scores, the GCoT nodes and the problems of its last answers (``prompt.py``; ``--llm-prompt-view
tree``: the earlier tree view); it answers ``node <id>`` and
1–8 refinements of that node. Model text only ever reaches the lark parser
(``parse_expr``) and the type checker: never eval/exec/sympify. A line that does not
parse, does not type-check, copies numbers (the prompt's scores: ``reply_guard.py``) or is
not a refinement of the node goes back as feedback;
complete formulas become ``Proposal``s with ``node=``; new sketches become nodes.

An answer without a ``node`` line, or naming a node that does not exist or has no holes,
is an error fed back for repair (shown in the next prompt). Its lines are still checked,
each as a refinement of the most specific sketch it refines, and the valid ones are
evaluated: the offline server's constrained ``+reply`` format makes the ``node`` line
optional, so a small local model often omits it, and dropping its valid formulas would
starve the search. A line that refines no node at all is fed back and dropped.

Endpoint failures (retries, backoff, Retry-After, circuit breaker) are ``chat.py``'s: a
dead endpoint makes ``propose`` return ``[]`` with a logged error; ``outage()`` tells the
engine how long to wait before the next call (it waits, up to ``--llm-max-outage``, and
does not count those rounds as empty). Nothing raises out of ``propose``/``observe``.

Each reply's counts (lines, parsed, type-checked, new formulas: ``reply_stats.py``) are
kept in ``reply_stats`` and the saved state; the report shows them.

Recipes (search/recipe.py): the model proposes formulas only; every proposal has the
search's base recipe (None), and the reply contract knows no recipes. With ``--recipes
search`` the engine still screens the seeds' recipe variants (+R, allocation rules); their
outcomes (``extra["variant"]``) are left out of the graph, so the library metrics it shows
carry the scores of the formula alone.

Resume: a formula handed out is the engine's until it is observed (in its saved
``pending`` or ``unobserved`` lists), so ``load_state`` does not hand it out again.
"""
from __future__ import annotations

import argparse
import logging
import textwrap
from collections import deque
from dataclasses import asdict
from typing import Any

from ..api import parse as parse_metric
from ..dsl.library import BUILTIN, Library
from ..dsl.parser import parse_expr
from ..dsl.printer import to_text
from ..dsl.sketch import NotARefinement, check_sketch, has_holes, parse_sketch
from ..errors import PruneDSLError, SearchError
from ..llm_contract import MAX_LINE_CHARS, SEEN_FIELD, SKETCHES_FIELD, split_reply
from ..reply_guard import copied_numbers, shown_numbers
from .base import Outcome, Proposal
from .chat import ChatEndpoint, preview
from .gcot import Graph
from .prompt import VIEWS, Feedback, build_messages, offered_sketches
from .reply_stats import ReplyStats

log = logging.getLogger(__name__)

MAX_FEEDBACK_CHARS = 800  # one engine error must not crowd the prompt


class LLMProposer:
    name = "llm"

    def __init__(self, *, calls_per_propose: int = 3, root: str = "?Mat", seeds=(),
                 sketches=None, available: frozenset[str] | None = None, max_errors: int = 8,
                 max_prompt_nodes: int = 40, library: Library = BUILTIN, prompt_view: str = "compact",
                 llm_seed: int | None = None, group: str = "row", endpoint: ChatEndpoint | None = None,
                 **endpoint_args):
        """``seeds``/``sketches``: see ``Graph``. ``available``: the statistic keys this run
        provides (the prompt leaves the others out); None: all. ``prompt_view``: ``compact``
        or ``tree`` (``prompt.py``). ``llm_seed``: request k (counted over the search, resumes
        included) is sent with ``seed = llm_seed + k``, so a seeded server answers a search
        reproducibly; None: unseeded. ``group``: the search's comparison group (the canonical
        forms of the formulas seen, sent to prunedsl's server, are under it). ``endpoint_args`` go to
        ``ChatEndpoint`` (base_url, model, api_key, timeout, max_retries, temperature,
        backoff, breaker_threshold, extra_body, sleep, ...)."""
        self.endpoint = endpoint or ChatEndpoint(**endpoint_args)
        self.calls_per_propose, self.max_prompt_nodes = calls_per_propose, max_prompt_nodes
        self.library = library
        if prompt_view not in VIEWS:
            raise SearchError(f"unknown prompt view {prompt_view!r}", hint=f"choose one of {', '.join(VIEWS)}")
        self.prompt_view = prompt_view
        self.llm_seed, self.group = llm_seed, group
        self._canonical: dict[str, str | None] = {}  # text -> canonical form (None: does not parse)
        self.reply_stats: list[ReplyStats] = []  # one per request answered (reply_stats.py)
        self._stats = ReplyStats(0)              # the reply being read (not kept before _digest)
        self.available = frozenset(available) if available is not None else None
        self.graph = Graph(root=root, seeds=seeds, sketches=sketches)
        self.errors: deque[Feedback] = deque(maxlen=max_errors)
        self.round = 0
        self.last_messages: list[dict] | None = None
        self._queue: list[Proposal] = []     # valid formulas not handed out yet
        self._proposed: set[int] = set()     # complete nodes handed out

    @classmethod
    def from_args(cls, args: argparse.Namespace | dict, **kwargs) -> "LLMProposer":
        """From the options of ``add_llm_arguments`` (a namespace, or a dict such as the
        settings saved in a search's state; missing ones take the defaults)."""
        get = args.get if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))
        v = {k: get(k, d) for k, d in LLM_DEFAULTS.items()}
        return cls(base_url=v["llm_base_url"], model=v["llm_model"], timeout=v["llm_timeout"],
                   max_retries=v["llm_max_retries"], temperature=v["llm_temperature"],
                   prompt_view=v["llm_prompt_view"] or "compact", llm_seed=v["llm_seed"], **kwargs)

    def outage(self) -> tuple[float, float] | None:
        """``(seconds until the endpoint may be called, seconds it has been failing)``, or
        None when it is not failing (``ChatEndpoint.outage``)."""
        return self.endpoint.outage()

    # --- Proposer protocol ----------------------------------------------------------------
    def propose(self, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        try:
            return self._propose(n)
        except Exception:  # a proposer bug must not end a long search: log it loudly
            log.exception("the LLM proposer failed; the search continues without its proposals")
            return self._take(n)

    def observe(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            try:
                self._observe(o)
            except Exception:
                log.exception("the LLM proposer could not record an outcome")

    def state(self) -> dict[str, Any]:
        return {"version": 1, "round": self.round, "model": self.endpoint.model,
                "graph": self.graph.graph_json(), "errors": [asdict(e) for e in self.errors],
                "queue": [p.to_json() for p in self._queue], "proposed": sorted(self._proposed),
                "replies": [r.to_json() for r in self.reply_stats]}

    def load_state(self, state: dict[str, Any]) -> None:
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, IndexError, PruneDSLError) as err:
            raise SearchError(f"cannot resume the LLM proposer from the saved state: {err!r}",
                              hint="start a new search, or remove the llm state from the saved file") from None

    def _load_state(self, state: dict[str, Any]) -> None:
        self.graph = Graph.from_json(state["graph"])
        self.round = int(state.get("round", 0))
        self.endpoint.model = self.endpoint.model or state.get("model")
        self.errors.clear()
        self.errors.extend(Feedback(**e) for e in state.get("errors", []))
        self._queue = [Proposal(**{**p, "parents": tuple(p.get("parents", ()))})
                       for p in state.get("queue", [])]
        # Handed out but not scored yet: the engine saved those proposals (pending or
        # unobserved) and screens/observes them after resuming; handing them out again
        # would make duplicates. They stay in _proposed, so a repeat by the model is ignored.
        self._proposed = set(state.get("proposed", []))
        self.reply_stats = [ReplyStats.from_json(r) for r in state.get("replies", [])]

    def graph_text(self) -> str:
        return self.graph.graph_text()

    def graph_json(self) -> dict[str, Any]:
        return self.graph.graph_json()

    # --- one round ------------------------------------------------------------------------
    def _take(self, n: int) -> list[Proposal]:
        out, self._queue = self._queue[:n], self._queue[n:]
        return out

    def _propose(self, n: int) -> list[Proposal]:
        out = self._take(n)
        for _ in range(self.calls_per_propose):
            if len(out) >= n:
                break
            if not self.endpoint.available():
                log.info("LLM endpoint %s is paused after repeated failures; no LLM proposals",
                         self.endpoint.where)
                break
            messages = build_messages(self.graph, list(self.errors), n - len(out), self.max_prompt_nodes,
                                      self.available, self.library, self.prompt_view)
            self.last_messages = messages
            seed = None if self.llm_seed is None else self.llm_seed + len(self.reply_stats)
            text = self.endpoint.complete(messages, self._server_fields(), seed=seed)
            if text is None:
                break
            self.errors.clear()  # they were shown; new ones come from this answer
            self._queue.extend(self._digest(text))
            out += self._take(n - len(out))
        return out

    def _server_fields(self) -> dict[str, Any]:
        """What prunedsl's server checks a reply against (``serve/replies.py``): the sketches
        the prompt offers and the formulas the search already has (canonical forms)."""
        offered = {str(i): self.graph.nodes[i].text
                   for i in offered_sketches(self.graph, self.max_prompt_nodes, self.prompt_view)}
        forms = {n.canonical or self._canonical_of(n.text) for n in self.graph.nodes if n.complete}
        return {SKETCHES_FIELD: offered, SEEN_FIELD: {"group": self.group, "forms": sorted(f for f in forms if f)}}

    def _canonical_of(self, text: str) -> str | None:
        if text not in self._canonical:
            try:
                self._canonical[text] = parse_metric(text, library=self.library).canonical(self.group)
            except PruneDSLError:
                self._canonical[text] = None
        return self._canonical[text]

    def _feedback(self, line: str, message: str, node: int | None = None) -> None:
        log.debug("LLM feedback for %r: %s", line, message)
        if len(message) > MAX_FEEDBACK_CHARS:  # a long traceback-like error would crowd the prompt
            message = message[:MAX_FEEDBACK_CHARS] + " …"
        self.errors.append(Feedback(line, message, node, self.round))

    def _digest(self, text: str) -> list[Proposal]:
        """Reply text -> proposals; everything wrong with it becomes feedback."""
        self.round += 1
        node_id, lines, problems = split_reply(text)
        self._stats = ReplyStats(self.round, lines=len(lines))
        self.reply_stats.append(self._stats)
        if not lines:
            self._feedback(preview(text) or "(empty reply)",
                           "the reply had no formula lines; answer `node <id>` and then formulas, "
                           "one per line, nothing else")
            return []
        target = None
        if node_id is None:
            self._feedback("(no node line)", "the reply did not start with `node <id>`: name the sketch "
                           "you refine on the first line. Each line was read as a refinement of the "
                           "closest sketch it refines")
        elif node_id not in self.graph:
            self._feedback(f"node {node_id}", f"there is no node {node_id} (nodes are 0..{len(self.graph) - 1});"
                           " each line was read as a refinement of the closest node it refines")
        elif self.graph.nodes[node_id].complete:
            self._feedback(f"node {node_id}", f"node {node_id} is a complete formula without holes; "
                           "choose a sketch. Each line was read as a refinement of the closest node")
        else:
            target = node_id
        shown = shown_numbers(v for n in self.graph.nodes for v in (n.val_ppl, n.proxy))
        out = [p for p in (self._line(line, target, shown) for line in lines) if p is not None]
        for p in problems:  # last, so a full feedback queue keeps them
            self._feedback("(the reply)", p)
        return out

    def _line(self, line: str, target: int | None, shown: frozenset[float] = frozenset()) -> Proposal | None:
        if len(line) > MAX_LINE_CHARS:
            self._feedback(preview(line), f"a line of {len(line)} characters is not a formula", target)
            return None
        try:
            tree = parse_expr(line)  # lark: the only reader of model text
        except PruneDSLError as err:
            self._feedback(line, err.render(), target)
            return None
        self._stats.parsed += 1
        try:
            if has_holes(tree):
                expr = check_sketch(tree, line, self.library)
            else:
                expr = parse_metric(line, library=self.library).expr
        except PruneDSLError as err:
            self._feedback(line, err.render(), target)
            return None
        self._stats.typed += 1
        if (copied := copied_numbers(tree, shown)) is not None:  # before it becomes a node the prompt shows
            # the line abridged: the errors section must not hand the numbers back to be copied
            self._feedback(textwrap.shorten(line, 24, placeholder=" …"), copied, target)
            return None
        parent = target if target is not None else self.graph.most_specific(expr)
        try:
            if parent is None:
                raise NotARefinement(f"`{line}` refines no node of the graph "
                                     f"(the root is `{self.graph.nodes[0].text}`)")
            node, created = self.graph.refine(parent, expr, "llm", self.round)
        except NotARefinement as err:
            self._feedback(line, err.render(), target)
            return None
        self._stats.refines += 1
        if not node.complete:
            return None
        if node.id in self._proposed or node.status != "pending":  # handed out, or a scored seed
            if node.status != "pending":
                # no node id (it is complete: nothing to refine) and no scores (numbers next
                # to formula text get copied as formulas): the graph shows both
                self._feedback(line, "already evaluated (it is in the graph with its scores); "
                               "propose a new formula", target)
            return None
        self._proposed.add(node.id)
        self._stats.formulas += 1
        text = node.text
        try:
            parse_metric(text, library=self.library)
        except PruneDSLError:  # the printed form should always re-parse; keep the model's if not
            text = line
        return Proposal(text, "llm", node=parent, note=f"gcot node {node.id} refines node {parent}")

    def _observe(self, o: Outcome) -> None:
        p = o.proposal
        if o.extra.get("variant"):  # another recipe than the search's (module doc): not in the graph
            return
        if p.origin == "seed":
            self._observe_seed(o)
            return
        if p.origin != "llm":
            return
        node = self.graph.find(p.text)
        if node is None:  # a text not in printed form: find it by its resolved form
            try:
                node = self.graph.find(to_text(parse_sketch(p.text, self.library)))
            except PruneDSLError:
                return
        if node is None:
            return
        self.graph.record(node.id, ok=o.ok, val_ppl=o.val_ppl, proxy=o.proxy, error=o.error,
                          canonical=o.canonical, duplicate_of=o.duplicate_of)
        stats = next((r for r in self.reply_stats if r.round == node.round), None)
        if stats is not None and (o.duplicate_of or not o.ok):
            stats.duplicates += bool(o.duplicate_of)
            stats.failed += not o.duplicate_of
        if o.duplicate_of:
            self._feedback(p.text, f"ranks weights exactly like `{o.duplicate_of}`, which was already "
                           "evaluated; propose formulas that rank weights differently", p.node)
        elif not o.ok:
            self._feedback(p.text, o.error or "the evaluation failed", p.node)

    def _observe_seed(self, o: Outcome) -> None:
        """A library metric the engine scored: shown in the graph as a baseline to beat."""
        if o.duplicate_of:
            return
        try:
            expr = parse_sketch(o.proposal.text, self.library)
            node, _ = self.graph.attach(expr, origin="library", round=self.round)
        except PruneDSLError:
            return  # a seed that refines no node (another shape)
        name = o.proposal.note or o.extra.get("name")
        if name and name != node.text and not node.name:
            node.name = name
        node.origin = "library"
        self.graph.record(node.id, ok=o.ok, val_ppl=o.val_ppl, proxy=o.proxy, error=o.error,
                          canonical=o.canonical)
        if not o.ok and not o.extra.get("update"):  # e.g. it reads a statistic this run lacks
            self._feedback(node.name or node.text, f"(library metric) {o.error or 'failed'}")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {text}")
    return value


# dest -> default of the --llm-* options; ``prunedsl search`` saves them in the state
# (never the API key) so that --resume talks to the same endpoint.
LLM_DEFAULTS = {"llm_base_url": None, "llm_model": None, "llm_timeout": 300.0, "llm_max_retries": 4,
                "llm_temperature": 0.7, "llm_max_outage": 600.0, "llm_prompt_view": "compact", "llm_seed": None}


def add_llm_arguments(group, suppress: bool = False) -> None:
    """The ``--llm-*`` options of ``prunedsl search`` (an argparse group or parser).
    ``suppress``: leave options not given out of the namespace (``LLM_DEFAULTS`` holds
    their defaults), so that ``--resume`` can tell the given ones from the saved ones."""
    def D(key):
        return argparse.SUPPRESS if suppress else LLM_DEFAULTS[key]
    group.add_argument("--llm-base-url", metavar="URL", default=D("llm_base_url"),
                       help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                            "(default: $OPENAI_BASE_URL; key from $OPENAI_API_KEY, any for local servers)")
    group.add_argument("--llm-model", metavar="NAME", default=D("llm_model"),
                       help="model name (default: the first model the endpoint lists)")
    group.add_argument("--llm-timeout", metavar="S", type=_positive_float, default=D("llm_timeout"),
                       help="seconds of wall-clock time one request may take, however the server "
                            "answers; a call with its retries takes at most (retries + 1) × S plus "
                            "the backoff and Retry-After waits (default: 300; a CPU-served model is slow)")
    group.add_argument("--llm-max-retries", metavar="N", type=_nonneg_int, default=D("llm_max_retries"),
                       help="retries of a failed request, with exponential backoff (default: 4)")
    group.add_argument("--llm-temperature", metavar="T", type=_temperature, default=D("llm_temperature"),
                       help="sampling temperature, 0 to 2 (default: 0.7)")
    group.add_argument("--llm-seed", metavar="N", type=_nonneg_int, default=D("llm_seed"),
                       help="send request k of the search with seed N + k (OpenAI's `seed`), so that a "
                            "server that honours it (prunedsl serve-llm, vLLM) answers reproducibly "
                            "(default: unseeded)")
    group.add_argument("--llm-prompt-view", choices=VIEWS, default=D("llm_prompt_view"),
                       help="how the prompt shows the search graph: compact (library metrics with their "
                            "measured scores, then the nodes oldest first, no intermediate sketches; "
                            "consecutive prompts share a long prefix) or tree (the earlier view) "
                            "(default: compact)")
    group.add_argument("--llm-max-outage", metavar="S", type=_positive_float, default=D("llm_max_outage"),
                       help="while the endpoint fails, the search waits for it (the rounds without "
                            "proposals do not count); after S seconds of failures in a row it stops, "
                            "saved, to be continued with --resume (default: 600)")
