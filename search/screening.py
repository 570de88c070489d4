"""One candidate at a time, for the engine (``search/engine.py``, whose module doc has the
rules): screen a proposal (parse and check → recipe in normal form → dedup by canonical
form and recipe → proxy, once per canonical form → proxy twins within a recipe), fully
evaluate a candidate, and pick the next candidate for the full-evaluation quota. Each
records what happened in the ``SearchState``; saving it is the engine's job.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Callable, Collection

from ..api import parse
from ..dsl.ast import size
from ..dsl.library import Library
from ..errors import PruneDSLError, SearchError
from .base import Outcome, Proposal
from .hall import best_record, fmt
from .recipe import MASK, Recipe, normalize, recipe_key, seed_label, with_tag
from .records import Candidate, Failure, HistoryPoint, SearchConfig, SearchState


def render_error(err: BaseException) -> str:
    return err.render() if isinstance(err, PruneDSLError) else f"{type(err).__name__}: {err}"


class Screening:
    """The state's candidates indexed by key (canonical form + recipe) and by (proxy value,
    recipe), the proxy of each canonical form, and the texts that failed after parsing (a
    repeat fails again without a retry)."""

    def __init__(self, state: SearchState, config: SearchConfig, library: Library,
                 log: Callable[[str], None]):
        self.state, self.config, self.library, self.log = state, config, library, log
        self.group = config.fitness.get("group", "row")
        # structure mode (search/structure_mode.py): proposals are structure scores of this kind
        self.structure: str | None = config.fitness.get("structure")
        self.by_key: dict[str, Candidate] = {r.key: r for r in state.candidates}
        # the proxy cannot see a recipe: one proxy per canonical form, whatever the recipe
        self.proxies: dict[str, float] = {proxy_key(r.canonical, r.recipe): r.proxy for r in state.candidates}
        # (proxy value, recipe) -> the primary of its twins
        self.by_proxy: dict[tuple[float, Recipe], Candidate] = {
            (r.proxy, r.recipe): r for r in state.candidates if r.twin_of is None}
        self.failed_texts: dict[str, str] = {f.text: f.error for f in state.failures if f.resolved}

    def parse(self, text: str):
        """A checked metric, or a structure score in structure mode."""
        if self.structure:
            from .structure_mode import parse_structure
            return parse_structure(text, self.library, self.structure)
        return parse(text, library=self.library)

    def recipe_of(self, p: Proposal) -> Recipe:
        """The proposal's recipe in normal form (None: the search's base recipe); raises
        for an allocation text that does not check, or one the search's group excludes."""
        if self.structure:
            if p.recipe is not None and p.recipe != MASK:
                raise SearchError("structure scores have no recipe (no OBS update or allocation rule)")
            return MASK
        if p.recipe is None:
            return self.config.recipe
        f = self.config.fitness
        pattern = tuple(f["pattern"]) if f.get("pattern") else None
        return normalize(p.recipe, group=self.group, sparsity=f.get("sparsity", 0.5), pattern=pattern,
                         library=self.library)

    def fail(self, p: Proposal, err: BaseException, resolved: str | None = None,
             seed: str | None = None) -> Outcome:
        msg = render_error(err)
        self.state.counters.failed += 1
        if seed is not None and p.recipe is not None:
            seed = seed_label(seed, p.recipe)
        self.state.failures.append(Failure(text=resolved or p.text, input=p.text, origin=p.origin,
                                           error=msg, resolved=resolved is not None, seed=seed))
        if resolved is not None:
            self.failed_texts[resolved] = msg
        self.log(f"  ✗ {p.origin}: {p.text[:80]} — {msg.splitlines()[0]}")
        return Outcome(p, ok=False, error=msg)

    def screen(self, fitness: Any, p: Proposal, seed: str | None = None) -> Outcome:
        c = self.state.counters
        c.proposed += 1
        try:
            metric = self.parse(p.text)
            if not self.structure and metric.type.shape != "Mat":
                raise SearchError(f"the search looks for per-weight metrics (Mat); this formula is "
                                  f"{metric.type.shape}-typed", hint="multiply by a weight term such as |W|")
            canonical = metric.canonical(self.group)
            recipe = self.recipe_of(p)
        except Exception as err:  # bad text, or sympy choking on an odd formula: a failed outcome
            return self.fail(p, err, seed=seed)
        text = metric.text()
        complexity = size(metric.expr)
        key = recipe_key(canonical, recipe)
        flag = {"variant": True} if recipe != self.config.recipe else {}
        shown = None if recipe == MASK else recipe
        if p.recipe != shown:  # the outcome tells the proposer the recipe in normal form
            p = replace(p, recipe=shown)
        orig = self.by_key.get(key)
        if orig is not None:
            c.duplicates += 1
            return Outcome(p, ok=True, canonical=canonical, duplicate_of=key, proxy=orig.proxy,
                           val_ppl=orig.val_ppl, complexity=orig.complexity,
                           extra={"pretty": orig.pretty, **flag})
        if text in self.failed_texts:
            c.failed += 1
            return Outcome(p, ok=False, error=self.failed_texts[text], canonical=canonical, extra=flag)
        t0 = time.perf_counter()
        pkey = proxy_key(canonical, recipe)
        if pkey in self.proxies:  # a recipe variant of a screened formula: the same proxy
            proxy, seconds = self.proxies[pkey], 0.0
        else:
            try:  # +R: the error after the OBS update (search/obs_proxy.py)
                proxy = fitness.proxy(metric, recipe) if recipe.reconstruct else fitness.proxy(metric)
            except Exception as err:  # any failure of one candidate is its outcome, not the search's
                return self.fail(p, err, resolved=text, seed=seed)
            seconds = time.perf_counter() - t0
            self.proxies[pkey] = proxy
        try:
            pretty = metric.pretty()
        except Exception:  # printing must never end a search
            pretty = text
        rec = Candidate(id=len(self.state.candidates), input=p.text, text=text, pretty=pretty,
                        name=seed or metric.name, canonical=canonical, complexity=complexity,
                        origin=p.origin, parents=tuple(p.parents), node=p.node, note=p.note,
                        proxy=proxy, proxy_seconds=seconds, val_ppl=None, full=None,
                        seed=seed is not None, screened_at=c.screened + 1, recipe=recipe)
        extra: dict[str, Any] = {"pretty": pretty, "name": rec.name, "seconds": seconds, **flag}
        twin = self.by_proxy.get((proxy, recipe))  # twins only within one recipe
        if twin is not None:
            c.twins += 1
            primary, other = (rec, twin) if (complexity < twin.complexity and twin.full is None
                                            and not twin.seed) else (twin, rec)
            other.twin_of = primary.id
            primary.twin_of = None
            self.by_proxy[(proxy, recipe)] = primary
            extra["twin_of"] = primary.key
        else:
            self.by_proxy[(proxy, recipe)] = rec
        self.state.candidates.append(rec)
        self.by_key[key] = rec
        c.screened += 1
        c.seeds += seed is not None
        n = f"seed {seed}" if seed else f"{c.screened_new}/{self.config.budget}"
        self.log(f"[{n}] proxy {fmt(proxy, 4)}  {with_tag(pretty, recipe)}  ({p.origin}, {seconds:.2f} s)")
        return Outcome(p, ok=True, canonical=canonical, proxy=proxy, complexity=complexity, extra=extra)

    def record_full(self, rec: Candidate, result: dict[str, Any], screened: int,
                    elapsed: Callable[[], float]) -> Candidate | None:
        """Record ``rec``'s full evaluation (``search/pool.py``'s result: Fitness.full's, or
        ``{"error": message}``), the history point (``screened``: the counter when it was
        submitted) and the outcome the proposer is told. Returns the best candidate so far."""
        c = self.state.counters
        rec.full = result
        if "error" in result:
            rec.val_ppl = None
            self.log(f"  ✗ full evaluation of {with_tag(rec.pretty, rec.recipe)} failed: "
                     f"{result['error'].splitlines()[0]}")
        else:
            rec.val_ppl = result["val_ppl"]
        c.full_evals += 1
        best = best_record(self.state.candidates)
        self.state.history.append(HistoryPoint(
            screened=screened, full_evals=c.full_evals, id=rec.id, val_ppl=rec.val_ppl, seed=rec.seed,
            best_val_ppl=best.val_ppl if best else None, seconds=elapsed()))
        self._update_outcome(rec)
        return best

    def _update_outcome(self, rec: Candidate) -> None:
        """Give the proposer the val ppl: in the pending outcome, or as an update."""
        for o in self.state.unobserved:
            if o.canonical is not None and recipe_key(o.canonical, o.proposal.recipe) == rec.key \
                    and not o.duplicate_of:
                o.val_ppl = rec.val_ppl
                return
        p = Proposal(rec.input, rec.origin, tuple(rec.parents), rec.node, rec.note,
                     None if rec.recipe == MASK else rec.recipe)
        flag = {"variant": True} if rec.recipe != self.config.recipe else {}
        self.state.unobserved.append(Outcome(
            p, ok=rec.val_ppl is not None, canonical=rec.canonical, proxy=rec.proxy,
            val_ppl=rec.val_ppl, complexity=rec.complexity,
            error=(rec.full or {}).get("error"), extra={"update": True, "pretty": rec.pretty, **flag}))


def proxy_key(canonical: str, recipe: Recipe) -> tuple[str, str | None]:
    """What a proxy value depends on: the formula, and the selection group of the OBS update
    when the recipe reconstructs (the proxy does not see an allocation rule)."""
    return canonical, ((recipe.group or "layer") if recipe.reconstruct else None)


def next_full_eval(state: SearchState, config: SearchConfig, final: bool = False,
                   busy: Collection[int] = (), spent: float = 0.0) -> Candidate | None:
    """The next candidate the full-evaluation quota goes to, or None (engine module doc):
    the quota is floor(K · max(screened / budget, ``spent``)) (K at the end; ``spent``: the
    share of --time-limit used), spent on the best by proxy
    among the top K whose proxy beats the worst seed's (at the end: on the best remaining).
    ``busy``: ids of candidates submitted and not recorded yet, counted as evaluated. Besides
    the seeds' results (all recorded before the search phase) the choice reads only proxies
    and which candidates are taken, so a round picks the same candidates whether their
    results are in yet or not."""
    k, budget = config.full_evals, max(1, config.budget)
    quota = k if final else math.floor(k * min(1.0, max(state.counters.screened_new / budget, spent)))
    seeds = [r.proxy for r in state.candidates if r.seed and r.val_ppl is not None]
    bar = max(seeds) if seeds and not final else math.inf  # beat the worst baseline's proxy
    pool = [r for r in state.candidates if not r.seed and r.twin_of is None]
    def taken(r: Candidate) -> bool:
        return r.full is not None or r.id in busy
    if sum(map(taken, pool)) >= quota:
        return None
    ranked = sorted(pool, key=lambda r: (r.proxy, r.complexity, r.id))
    eligible = ranked if final else [r for r in ranked[:k] if r.proxy < bar]
    return next((r for r in eligible if not taken(r)), None)
