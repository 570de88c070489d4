"""The contract between the search engine and its proposers.

The engine owns fitness, deduplication (by canonical form), the hall of fame and
persistence. A proposer only turns what it has seen into new formula *texts*; every
text goes through ``prunedsl.parse`` (lark + type checker) in the engine, never through
``eval``/``exec``/``sympify``.

What the engine promises a proposer (``search/engine.py``):
- ``observe`` gets one ``Outcome`` per proposal, in order, after the proposal was parsed,
  deduplicated and screened by the proxy (and, for the few chosen, fully evaluated).
- A duplicate (same canonical form and recipe as an earlier candidate) has ``ok=True``,
  ``duplicate_of`` set (the earlier candidate's key: ``recipe.recipe_key``), and its
  ``proxy``/``val_ppl``.
- Recipes (search/recipe.py): a proposal may carry one (None: the search's base recipe);
  its outcome's proposal carries the recipe in normal form (None for the mask-only one),
  and ``extra["variant"] = True`` when it is not the search's base recipe (the llm
  proposer, which proposes formulas only, leaves those out of its graph).
- A candidate fully evaluated *after* its batch was observed comes back once more as a
  new ``Outcome`` for the same proposal with ``val_ppl`` set and ``extra["update"] = True``.
- Seeds (the library metrics) are observed first, with ``origin="seed"``.
- Optional proposer methods the engine uses when present: ``graph_text() -> str`` and
  ``graph_json() -> dict`` (the report's "how it was found" section; without them the
  report builds a GCoT graph of the evaluated formulas), ``outage() -> (wait_s, down_s)
  | None`` (an endpoint failing: the engine waits instead of counting empty rounds), and the
  classmethod ``from_args(args, **kwargs)`` used by the CLI to build it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .recipe import Recipe


@dataclass(frozen=True)
class Proposal:
    text: str                    # formula text in the language (untrusted when from an LLM)
    origin: str                  # "seed", "llm", "evolve:mutate", "evolve:crossover", "enumerate", ...
    parents: tuple[str, ...] = ()  # keys of parent candidates (canonical form [+ recipe]), if any
    node: int | None = None      # GCoT graph node this proposal refines (llm proposer)
    note: str = ""               # free text for the log (e.g. the LLM's rationale)
    recipe: Recipe | None = None  # how the mask is applied (search/recipe.py); None: the search's own

    def to_json(self) -> dict[str, Any]:
        """JSON values; ``recipe`` only when there is one (the layout before recipes)."""
        out = {"text": self.text, "origin": self.origin, "parents": list(self.parents),
               "node": self.node, "note": self.note}
        if self.recipe is not None:
            out["recipe"] = self.recipe.to_json()
        return out


@dataclass
class Outcome:
    """What the engine tells a proposer about one proposal."""

    proposal: Proposal
    ok: bool                     # parsed, type-checked and scored
    error: str | None = None     # the rendered PruneDSLError (with caret) when not ok
    canonical: str | None = None
    duplicate_of: str | None = None  # canonical form already evaluated
    proxy: float | None = None   # layer-wise output error (lower is better)
    val_ppl: float | None = None # validation perplexity, if fully evaluated
    complexity: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # "update", "pretty", "name", "seconds"


class Proposer(Protocol):
    name: str

    def propose(self, n: int) -> list[Proposal]:
        """Up to ``n`` new proposals. May return fewer (or none when exhausted)."""

    def observe(self, outcomes: list[Outcome]) -> None:
        """Results of earlier proposals (errors feed LLM repair; scores feed selection)."""

    def state(self) -> dict[str, Any]:
        """JSON-serializable state, saved with the hall of fame so --resume can continue."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore from ``state()``."""
