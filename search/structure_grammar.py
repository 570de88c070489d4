"""Structure-score proposals for ``prunedsl search --structure``: the per-weight grammar of the
``evolve`` / ``enumerate`` proposers, under the structure reducers.

A structure formula is built as ``template(m)`` where ``m`` is a per-weight (Mat) metric the
inner proposer grows, and the templates are the structure level of the language
(docs/structures.md), those valid for the kind:

- every kind: ``group_sum(m)``, ``group_max(m)``;
- channels / heads: ``producers(m)``, ``consumers(m)``, and SAAP-style fusions with a library
  structure score ``stdnorm(group_sum(m)) + stdnorm(S)`` (S: each library entry valid for the
  kind and the search's statistics, e.g. ``wanda_sp``, ``flap``, ``taylor`` with G);
- blocks: ``block_influence * group_sum(m)``.

``evolve`` gives every inner formula one template, drawn by the proposer's RNG; ``enumerate``
gives it every template, in order. The inner proposer learns from the structure outcomes: an
outcome is handed back with the inner formula as its proposal (same canonical key, proxy,
val ppl), so the genetic search selects per-weight formulas by how their structure formula
prunes. A seed (a library structure score) is handed back as its first reducer's argument
(``wanda_sp`` → ``|W| * ‖X‖``), so evolution starts from the known criteria.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from ..dsl.ast import Call, Expr, children
from ..dsl.printer import to_text
from .base import Outcome, Proposal

REDUCER_CALLS = ("group_sum", "group_max", "producers", "consumers")


def templates(kind: str, fusion_with: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The structure templates (``{m}``: the per-weight metric) valid for ``kind``."""
    base = ("group_sum({m})", "group_max({m})")
    if kind == "blocks":
        return base + ("block_influence * group_sum({m})",)
    return base + ("producers({m})", "consumers({m})") + tuple(
        f"stdnorm(group_sum({{m}})) + stdnorm({s})" for s in fusion_with)


def first_reducer_argument(expr: Expr) -> Expr | None:
    """The per-weight argument of the first structure reducer in ``expr`` (pre-order)."""
    if isinstance(expr, Call) and expr.func in REDUCER_CALLS and expr.args:
        return expr.args[0]
    for child in children(expr):
        found = first_reducer_argument(child)
        if found is not None:
            return found
    return None


class StructureProposer:
    """Wraps a per-weight proposer (evolve, enumerate) into one of structure formulas."""

    def __init__(self, inner, *, kind: str, fusion_with: tuple[str, ...] = (), seed: int = 0,
                 every_template: bool | None = None, parse_structure=None):
        self.inner = inner
        self.kind = kind
        self.templates = templates(kind, fusion_with)
        self.name = f"{inner.name} (structure {kind})"
        self.rng = random.Random(seed)
        self.every = inner.name == "enumerate" if every_template is None else every_template
        self.parse_structure = parse_structure     # text -> StructureMetric, for the seeds
        self.inner_of: dict[str, str] = {}          # structure text -> inner per-weight text
        self.buffer: list[Proposal] = []            # wrapped, not yet handed out

    def propose(self, n: int) -> list[Proposal]:
        while len(self.buffer) < n:
            inner = self.inner.propose(n)
            if not inner:
                break
            for p in inner:
                chosen = self.templates if self.every else (self.rng.choice(self.templates),)
                for t in chosen:
                    text = t.format(m=p.text)
                    self.inner_of[text] = p.text
                    self.buffer.append(replace(p, text=text, origin=f"{p.origin}+{t.split('(')[0]}"))
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def observe(self, outcomes: list[Outcome]) -> None:
        inner = []
        for o in outcomes:
            text = self.inner_of.get(o.proposal.text)
            if text is None and o.proposal.origin == "seed":
                text = self._seed_inner(o.proposal.text)
            if text is not None:
                inner.append(replace(o, proposal=replace(o.proposal, text=text)))
        if inner:
            self.inner.observe(inner)

    def _seed_inner(self, text: str) -> str | None:
        if self.parse_structure is None:
            return None
        try:
            arg = first_reducer_argument(self.parse_structure(text).expr)
        except Exception:  # a seed the inner grammar cannot hold: nothing to learn from
            return None
        return None if arg is None else to_text(arg)

    def state(self) -> dict[str, Any]:
        v, internal, gauss = self.rng.getstate()
        return {"inner": self.inner.state(), "rng": [v, list(internal), gauss],
                "inner_of": dict(self.inner_of), "buffer": [[p.text, p.origin, list(p.parents), p.note]
                                                             for p in self.buffer]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state["inner"])
        v, internal, gauss = state["rng"]
        self.rng.setstate((v, tuple(internal), gauss))
        self.inner_of = dict(state.get("inner_of", {}))
        self.buffer = [Proposal(t, o, tuple(par), note=note) for t, o, par, note in state.get("buffer", [])]
