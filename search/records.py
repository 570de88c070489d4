"""The search's records as typed dataclasses, and their JSON layout in ``DIR/state.json``.

    state = SearchState.from_json(json.loads(text))   # RecordError naming the bad key
    text = json.dumps(state.to_json())                  # the same layout, key for key

``to_json`` writes exactly the layout the search wrote when these were plain dicts
(the field order is the key order; a candidate's ``twin_of`` is left out until set, and
so are the fields added since version 2 without a version bump: ``SearchConfig.select_top``
and ``transfer_models`` at their defaults, ``SearchState.selection`` and ``transfer`` while
empty), so a state or a hall of fame read and written back is unchanged. ``from_json`` checks
every key and value type against the annotations and raises ``RecordError`` for a
missing, unknown or mistyped one; ``search/state.py`` turns it into the clear "not a
prunedsl search state" error. Values typed ``Any`` (fitness results, the proposer's own
state) are kept as they are.
"""
from __future__ import annotations

import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .base import Outcome, Proposal
from .recipe import MASK, Recipe, recipe_key

STATE_VERSION = 3  # a change of the layout bumps it, with a migration in search/state.py
PHASES = ("seeds", "search", "report", "done")


class RecordError(ValueError):
    """A JSON value that does not fit the record it should be (``where`` says which key)."""


# --- generic JSON <-> dataclass ---------------------------------------------------------
def _decode(hint: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, where)
    if origin is Literal:
        if value not in args:
            raise RecordError(f"{where} is {value!r}, not one of {', '.join(map(repr, args))}")
        return value
    if is_dataclass(hint):
        return record_from_json(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(f"{where} is {_kind(value)}, not a list")
        items = [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where} is {_kind(value)}, not an object")
        inner = args[1] if args else Any
        return {k: _decode(inner, v, f"{where}.{k}") for k, v in value.items()}
    wanted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[hint]
    if not isinstance(value, wanted) or (hint is not bool and isinstance(value, bool)):
        raise RecordError(f"{where} is {_kind(value)}, not {hint.__name__}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}"


def record_from_json(cls: type, data: Any, where: str) -> Any:
    """``cls`` (a dataclass) from its JSON object: every key known, every required key there."""
    if not isinstance(data, dict):
        raise RecordError(f"{where} is {_kind(data)}, not an object")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise RecordError(f"{where} has unknown keys {', '.join(map(repr, unknown))}")
    missing = [f.name for f in fields(cls) if f.name not in data
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise RecordError(f"{where} lacks {', '.join(missing)}")
    return cls(**{k: _decode(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def to_json(value: Any) -> Any:
    """A dataclass (and what it holds) as JSON values: objects in field order, tuples as lists."""
    if hasattr(value, "to_json") and is_dataclass(value) and not isinstance(value, type):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


# --- proposals and outcomes (base.py's contract types) in pending/unobserved ------------
def proposal_to_dict(p: Proposal) -> dict[str, Any]:
    return to_json(p)


def proposal_from_dict(d: dict[str, Any], where: str = "proposal") -> Proposal:
    return record_from_json(Proposal, d, where)


def outcome_to_dict(o: Outcome) -> dict[str, Any]:
    return to_json(o)


def outcome_from_dict(d: dict[str, Any], where: str = "outcome") -> Outcome:
    return record_from_json(Outcome, d, where)


# --- the search's own records -----------------------------------------------------------
@dataclass
class SearchConfig:
    output: str
    proposer: str = "evolve"
    budget: int = 100
    full_evals: int = 10
    batch: int = 16
    max_proposals: int | None = None     # default 5 × budget + 100
    library_texts: tuple[str, ...] = ()
    test_windows: int | None = 40        # final report: WikiText-2 test windows
    test_seqlen: int = 512
    report_top: int = 3                  # discovered formulas evaluated on test
    report: bool = True
    max_outage: float = 600.0            # seconds a failing proposer endpoint is waited for
    recipes: Literal["search", "fixed"] = "fixed"   # search the recipe with the formula, or not
    recipe: Recipe = MASK                # the base recipe (normal form): every candidate's with "fixed"
    fitness: dict[str, Any] = field(default_factory=dict)   # FitnessSettings as a dict
    cli: dict[str, Any] = field(default_factory=dict)       # merged CLI settings, for --resume
    select_top: int = 5                  # discovered finalists measured on the selection slice
    transfer_models: tuple[str, ...] = ()  # report: the top formulas pruned on these models too
    time_limit: float | None = None      # wall-clock seconds for seeds + search (None: no limit)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: to_json(getattr(self, f.name)) for f in fields(self)}
        for f in fields(self):  # the fields added since version 2: left out at their defaults
            if f.name in ("select_top", "transfer_models", "time_limit") and getattr(self, f.name) == (
                    f.default if f.default is not MISSING else f.default_factory()):
                del out[f.name]
        return out


@dataclass
class Candidate:
    """One formula with its recipe, screened by the proxy (a seed or a proposal);
    ``full``/``val_ppl`` are set by its full evaluation, ``twin_of`` when another candidate
    with the same recipe has the same proxy. Identity: ``key`` (canonical form + recipe)."""

    id: int                          # its index in SearchState.candidates
    input: str                       # the text as proposed
    text: str                        # its printed form
    pretty: str
    name: str | None                 # the seed's (library metric's) name, or the metric's own
    canonical: str                   # the dedup key
    complexity: int                  # AST nodes
    origin: str
    parents: tuple[str, ...]         # canonical forms it was bred from
    node: int | None                 # GCoT node (llm proposer)
    note: str
    proxy: float
    proxy_seconds: float
    val_ppl: float | None = None
    full: dict[str, Any] | None = None   # Fitness.full's result, or {"error": message}
    seed: bool = False
    screened_at: int = 0             # the screened counter after it
    twin_of: int | None = None       # id of the primary of its proxy twins (left out when None)
    recipe: Recipe = MASK            # normal form (search/recipe.py; left out when mask-only)

    @property
    def key(self) -> str:
        """The dedup key: the canonical form, with the recipe's tag unless mask-only."""
        return recipe_key(self.canonical, self.recipe)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: to_json(getattr(self, f.name)) for f in fields(self)}
        if self.twin_of is None:
            del out["twin_of"]
        if self.recipe == MASK:
            del out["recipe"]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "candidate") -> "Candidate":
        return record_from_json(cls, data, where)


@dataclass(frozen=True)
class Failure:
    """A proposal that did not parse, type-check or score."""

    text: str                        # its printed form when it parsed, else the input
    input: str
    origin: str
    error: str                       # the rendered error
    resolved: bool                   # it parsed: the same text fails again without a retry
    seed: str | None = None          # the seed's name


@dataclass(frozen=True)
class HistoryPoint:
    """One full evaluation, for the progress plot."""

    screened: int
    full_evals: int
    id: int
    val_ppl: float | None
    seed: bool
    best_val_ppl: float | None
    seconds: float


@dataclass
class Counters:
    proposed: int = 0
    from_proposer: int = 0
    failed: int = 0
    duplicates: int = 0
    twins: int = 0
    screened: int = 0
    seeds: int = 0
    full_evals: int = 0

    @property
    def screened_new(self) -> int:
        """Candidates screened beyond the seeds: what the budget counts."""
        return self.screened - self.seeds


@dataclass
class SearchState:
    """Everything ``DIR/state.json`` holds (module doc of ``search/engine.py``)."""

    config: SearchConfig
    version: int = STATE_VERSION
    phase: Literal["seeds", "search", "report", "done"] = "seeds"
    candidates: list[Candidate] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    history: list[HistoryPoint] = field(default_factory=list)
    pending: list[Proposal] = field(default_factory=list)      # proposals not screened yet
    unobserved: list[Outcome] = field(default_factory=list)    # outcomes not observed yet
    proposer: dict[str, Any] | None = None                     # the proposer's own state()
    test: dict[str, dict[str, Any]] = field(default_factory=dict)  # report: key -> test_ppl result
    seconds: float = 0.0                                       # search time, resumes included
    skipped_seeds: dict[str, str] = field(default_factory=dict)    # name -> why
    counters: Counters = field(default_factory=Counters)
    # search/selection.py: canonical form -> Fitness.select_ppl's result (or {"error": ...})
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)
    # search/transfer.py: model -> row key -> Fitness.test_ppl's result on that model
    transfer: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # the search time (``seconds``) when the seeds were done: --time-limit's quota counts from
    # it; written in the "seconds" object next to the total (the times of a run, together)
    search_started: float | None = None

    # the JSON keys in the order they are written ("seconds" is {"total": s})
    _KEYS = ("version", "config", "phase", "candidates", "failures", "history", "pending",
             "unobserved", "proposer", "test", "seconds", "skipped_seeds", "counters")

    _OPTIONAL = ("selection", "transfer")  # written when not empty (added without a version bump)

    def to_json(self) -> dict[str, Any]:
        out = {k: to_json(getattr(self, k)) for k in self._KEYS}
        out["seconds"] = {"total": self.seconds}
        if self.search_started is not None:
            out["seconds"]["search_started"] = self.search_started
        out.update({k: to_json(getattr(self, k)) for k in self._OPTIONAL if getattr(self, k)})
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "state") -> "SearchState":
        if not isinstance(data, dict):
            raise RecordError(f"{where} is {_kind(data)}, not an object")
        seconds = data.get("seconds")
        if not isinstance(seconds, dict) or "total" not in seconds or not set(seconds) <= {"total", "search_started"}:
            raise RecordError(f"{where}.seconds is not an object holding the total (and when the search "
                              "phase started)")
        state = record_from_json(cls, {**data, "seconds": seconds["total"],
                                       "search_started": seconds.get("search_started")}, where)
        if state.version != STATE_VERSION:
            raise RecordError(f"{where}.version is {state.version}, not {STATE_VERSION}")
        for i, rec in enumerate(state.candidates):
            if rec.id != i:
                raise RecordError(f"{where}.candidates[{i}].id is {rec.id}, not {i}")
        return state
