"""The search loop: propose → parse/check → canonical dedup → proxy → top-K full evals → hall.

    engine = Engine(config, fitness_factory, proposer)
    engine.run()          # resumes from config.output/state.json when config.resume

Seeds: every library metric (plus SparseGPT's saliency when the library has no
``sparsegpt``) is screened and fully evaluated first, so the best reported formula is
never worse on validation than the best known metric.

Budget: ``budget`` counts *new* candidates screened by the proxy (seeds not included).
Failed and duplicate proposals cost no budget; ``max_proposals`` bounds them.

Full evaluations: ``full_evals`` (K) candidates are pruned for real. After each batch the
quota is floor(K · screened / budget), spent on the best-by-proxy candidates not yet
evaluated among the top K by proxy whose proxy beats the worst seed's; what is left at
the end goes to the best remaining by proxy.

Proxy twins: two formulas with different canonical forms can still prune exactly the same
weights on this model (``min(|W|·‖X‖, 1e4)`` vs ``|W|·‖X‖``). A candidate whose proxy is
bit-identical to an earlier one's (same masks on every screened layer) is recorded as
its ``twin_of`` and not fully evaluated unless it is the simpler of the two (then the
roles swap, if the other was not evaluated yet); twins are counted in the report.

Empty rounds: a proposer can return nothing in a round (an LLM's answers all invalid or
already seen); the search ends after ``EMPTY_ROUNDS`` such rounds in a row, with the
budget not spent, and a plain ``--resume`` asks the proposer again. A round that is empty
because the proposer's endpoint is failing (``proposer.outage()`` is not None: the LLM
endpoint's circuit breaker is open, or its last call failed with a timeout, a refused
connection, 429 or 5xx) is not counted: the engine waits until the endpoint may be called
again, for at most ``max_outage`` seconds of failures in a row (default 600, ``--llm-max-outage``);
then it stops with an error, everything saved, and ``--resume`` continues.

Persistence: the state (candidates, counters, pending proposals, outcomes not yet
observed, the proposer's state with its RNG) is written after every evaluation, so a
SIGKILL loses at most the candidate in flight; Ctrl-C (or SIGTERM) stops without
writing a half-updated state.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..api import parse
from ..dsl.ast import size
from ..dsl.library import BUILTIN, Library
from ..errors import PruneDSLError, SearchError
from .base import Outcome, Proposal
from .hall import (best_record, fmt, hall_markdown, label, outcome_from_dict, outcome_to_dict,
                   proposal_from_dict, proposal_to_dict, write_hall, write_json)
from .state import STATE_FILE, STATE_VERSION, read_state

EMPTY_ROUNDS = 5  # consecutive empty proposal rounds that end a search


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
    fitness: dict[str, Any] = field(default_factory=dict)   # FitnessSettings as a dict
    cli: dict[str, Any] = field(default_factory=dict)       # merged CLI settings, for --resume


def seed_metrics(library: Library = BUILTIN) -> list[tuple[str, str]]:
    """(name, text) of the seeds: the library's metrics (built-in ones included)."""
    return [(name, name) for name in library.of_kind("metric")]


class Interrupted(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that no ``except Exception`` swallows it."""


class Engine:
    def __init__(self, config: SearchConfig, fitness_factory: Callable[[], Any], proposer,
                 *, log: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.library = Library(config.library_texts)  # parsed once for every proposal
        self.fitness_factory = fitness_factory
        self.fitness = None
        self.proposer = proposer
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.sleep = sleep
        self.dir = Path(config.output)
        self.group = config.fitness.get("group", "row")
        self.state: dict[str, Any] = {}
        self.by_canonical: dict[str, dict] = {}
        self.by_proxy: dict[float, dict] = {}    # proxy value -> the primary of its twins
        self.failed_texts: dict[str, str] = {}

    # --- state --------------------------------------------------------------------------
    def new_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "config": asdict(self.config), "phase": "seeds",
                "candidates": [], "failures": [], "history": [], "pending": [], "unobserved": [],
                "proposer": None, "test": {}, "seconds": {"total": 0.0}, "skipped_seeds": {},
                "counters": {"proposed": 0, "from_proposer": 0, "failed": 0, "duplicates": 0, "twins": 0,
                             "screened": 0,
                             "seeds": 0, "full_evals": 0}}

    def load(self, state: dict[str, Any]) -> None:
        """Take over ``state`` as `read_state` returns it (validated, at the current version)."""
        self.state = state
        self.by_canonical = {r["canonical"]: r for r in state["candidates"]}
        self.by_proxy = {r["proxy"]: r for r in state["candidates"] if r.get("twin_of") is None}
        self.failed_texts = {f["text"]: f["error"] for f in state["failures"] if f.get("resolved")}
        if state.get("proposer") is not None:
            self.proposer.load_state(state["proposer"])

    def save(self) -> None:
        self.state["proposer"] = self.proposer.state()
        self.state["seconds"]["total"] = self._elapsed()
        write_json(self.dir / STATE_FILE, self.state)
        write_hall(self.dir, self.state)

    def _elapsed(self) -> float:
        return self._seconds0 + time.perf_counter() - self._t0

    # --- the loop -----------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = read_state(self.dir)
        if saved is not None and not resume:
            raise SearchError(f"{self.dir} already holds a search ({STATE_FILE})",
                              hint="continue it with --resume, or choose another --output")
        if saved is not None:
            for tmp in self.dir.glob(".*.tmp"):  # an atomic write cut short by a kill
                tmp.unlink(missing_ok=True)
            self.load(saved)
            self.state["config"] = asdict(self.config)
            if self.state["phase"] in ("report", "done") and self._more_to_do():
                self.state["phase"] = "search"  # --resume with a larger --budget/--full-evals
            self.log(f"resuming {self.dir}: {self.state['counters']['screened']} candidates screened, "
                     f"phase {self.state['phase']}")
        else:
            self.state = self.new_state()
        self._t0, self._seconds0 = time.perf_counter(), self.state["seconds"].get("total", 0.0)
        old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        try:
            if self.state["phase"] != "done":
                self.fitness = self.fitness_factory()
            self._phases()
        except (KeyboardInterrupt, Interrupted):
            # the last state written is consistent; the in-memory one may be mid-update
            self.log(f"interrupted: the search is saved in {self.dir}; continue it with --resume")
            raise KeyboardInterrupt from None
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)
        return self.summary()

    def _phases(self) -> None:
        if self.state["phase"] == "seeds":
            self._seeds()
            self.state["phase"] = "search"
            self._observe()
            self.save()
        if self.state["phase"] == "search":
            self._search()
            self._full_quota(final=True)
            self._observe()
            self.state["phase"] = "report" if self.config.report else "done"
            self.save()
            self.log("\n" + hall_markdown(self.state["candidates"]) + "\n")
        if self.state["phase"] == "report":
            from .report import write_report
            write_report(self)
            self.state["phase"] = "done"
            self.save()

    def _seeds(self) -> None:
        skipped = self.state["skipped_seeds"]
        for name, text in seed_metrics(self.library):
            missing = sorted(parse(text, library=self.library).requires
                             - self.fitness.available)
            if missing:  # e.g. G without --gradients: not a failure, just not offered
                if name not in skipped:
                    skipped[name] = f"needs {', '.join(missing)}" + (" (--gradients)" if "G" in missing else "")
                    self.log(f"seed {name} skipped: {skipped[name]}")
                continue
            rec = next((r for r in self.state["candidates"] if r.get("seed") and r["name"] == name), None)
            if rec is None and not any(f.get("seed") == name for f in self.state["failures"]):
                outcome = self._screen(Proposal(text, "seed", note=name), seed=name)
                rec = self.by_canonical.get(outcome.canonical) if outcome.ok else None
                self.state["unobserved"].append(outcome_to_dict(outcome))
                self.save()
            if rec is not None and rec.get("full") is None and rec.get("seed"):
                self._full(rec)

    def _search(self) -> None:
        c, cfg = self.state["counters"], self.config
        max_proposals = cfg.max_proposals or 5 * cfg.budget + 100
        empty = 0
        while True:
            if not self.state["pending"]:
                if self.state["unobserved"]:  # the last batch (also after a resume)
                    self._full_quota()
                    self._observe()
                    self.save()
                left = cfg.budget - self._screened_new()
                if left <= 0 or c["from_proposer"] >= max_proposals:
                    break
                batch = self.proposer.propose(min(cfg.batch, left))
                if not batch and self._wait_for_proposer():
                    continue  # the endpoint is failing: not an empty round
                if not batch:
                    # An LLM round can yield nothing (all replies invalid or already seen) and
                    # the next one something: end only after several empty rounds in a row.
                    empty += 1
                    if empty >= EMPTY_ROUNDS:
                        self.log(f"the {self.proposer.name} proposer proposed nothing in {empty} rounds "
                                 f"in a row: ending the search with {left} of the budget of {cfg.budget} "
                                 f"not spent (`prunedsl search --output {self.dir} --resume` asks it again)")
                        break
                    self.log(f"the {self.proposer.name} proposer proposed nothing this round ({empty}/{EMPTY_ROUNDS})")
                    continue
                empty = 0
                self.state["pending"] = [proposal_to_dict(p) for p in batch]
                self.save()
            while self.state["pending"] and self._screened_new() < cfg.budget:
                outcome = self._screen(proposal_from_dict(self.state["pending"][0]))
                self.state["pending"].pop(0)
                c["from_proposer"] += 1
                self.state["unobserved"].append(outcome_to_dict(outcome))
                self.save()
            self.state["pending"] = []  # the budget is spent: drop the rest of the batch

    def _wait_for_proposer(self) -> bool:
        """After an empty round: True (having waited) when the proposer's endpoint is failing
        and may be called again later; False when it is not failing. Raises SearchError,
        everything saved, when it has failed for ``max_outage`` seconds."""
        outage = getattr(self.proposer, "outage", None)
        down = outage() if callable(outage) else None
        if down is None:
            return False
        wait, down_for = down
        left = self.config.max_outage - down_for
        if left <= 0:
            self.save()
            raise SearchError(f"the {self.proposer.name} proposer's endpoint has been failing for "
                              f"{down_for:.0f} s (more than the {self.config.max_outage:g} s allowed): "
                              f"the search stops, saved in {self.dir}",
                              hint=f"when the endpoint is back: prunedsl search --output {self.dir} --resume "
                                   "(--llm-max-outage S waits longer)")
        wait = min(wait, left)
        if wait > 0:
            self.log(f"the {self.proposer.name} proposer's endpoint is unavailable (failing for "
                     f"{down_for:.0f} s): waiting {wait:.1f} s; this round is not counted as empty")
            self.sleep(wait)
        return True

    def _more_to_do(self) -> bool:
        done = sum(1 for r in self.state["candidates"] if not r["seed"] and r["full"] is not None)
        return self._screened_new() < self.config.budget or done < min(
            self.config.full_evals, sum(1 for r in self.state["candidates"] if not r["seed"]))

    def _screened_new(self) -> int:
        c = self.state["counters"]
        return c["screened"] - c["seeds"]

    # --- one candidate ------------------------------------------------------------------
    def _fail(self, p: Proposal, err: BaseException, resolved: str | None = None, seed=None) -> Outcome:
        msg = err.render() if isinstance(err, PruneDSLError) else f"{type(err).__name__}: {err}"
        self.state["counters"]["failed"] += 1
        self.state["failures"].append({"text": resolved or p.text, "input": p.text, "origin": p.origin,
                                       "error": msg, "resolved": resolved is not None, "seed": seed})
        if resolved is not None:
            self.failed_texts[resolved] = msg
        self.log(f"  ✗ {p.origin}: {p.text[:80]} — {msg.splitlines()[0]}")
        return Outcome(p, ok=False, error=msg)

    def _screen(self, p: Proposal, seed: str | None = None) -> Outcome:
        c = self.state["counters"]
        c["proposed"] += 1
        try:
            metric = parse(p.text, library=self.library)
            if metric.type.shape != "Mat":
                raise SearchError(f"the search looks for per-weight metrics (Mat); this formula is "
                                  f"{metric.type.shape}-typed", hint="multiply by a weight term such as |W|")
            canonical = metric.canonical(self.group)
        except Exception as err:  # bad text, or sympy choking on an odd formula: a failed outcome
            return self._fail(p, err, seed=seed)
        text = metric.text()
        complexity = size(metric.expr)
        orig = self.by_canonical.get(canonical)
        if orig is not None:
            c["duplicates"] += 1
            return Outcome(p, ok=True, canonical=canonical, duplicate_of=canonical, proxy=orig["proxy"],
                           val_ppl=orig.get("val_ppl"), complexity=orig["complexity"],
                           extra={"pretty": orig["pretty"]})
        if text in self.failed_texts:
            c["failed"] += 1
            return Outcome(p, ok=False, error=self.failed_texts[text], canonical=canonical)
        t0 = time.perf_counter()
        try:
            proxy = self.fitness.proxy(metric)
        except Exception as err:  # any failure of one candidate is its outcome, not the search's
            return self._fail(p, err, resolved=text, seed=seed)
        seconds = time.perf_counter() - t0
        try:
            pretty = metric.pretty()
        except Exception:  # printing must never end a search
            pretty = text
        rec = {"id": len(self.state["candidates"]), "input": p.text, "text": text, "pretty": pretty,
               "name": seed or metric.name, "canonical": canonical, "complexity": complexity,
               "origin": p.origin, "parents": list(p.parents), "node": p.node, "note": p.note,
               "proxy": proxy, "proxy_seconds": seconds, "val_ppl": None, "full": None,
               "seed": seed is not None, "screened_at": c["screened"] + 1}
        extra = {"pretty": pretty, "name": rec["name"], "seconds": seconds}
        twin = self.by_proxy.get(proxy)
        if twin is not None:
            c["twins"] += 1
            primary, other = (rec, twin) if (complexity < twin["complexity"] and twin["full"] is None
                                            and not twin["seed"]) else (twin, rec)
            other["twin_of"] = primary["id"]
            primary.pop("twin_of", None)
            self.by_proxy[proxy] = primary
            extra["twin_of"] = primary["canonical"]
        else:
            self.by_proxy[proxy] = rec
        self.state["candidates"].append(rec)
        self.by_canonical[canonical] = rec
        c["screened"] += 1
        c["seeds"] += seed is not None
        n = f"seed {seed}" if seed else f"{self._screened_new()}/{self.config.budget}"
        self.log(f"[{n}] proxy {fmt(proxy, 4)}  {pretty}  ({p.origin}, {seconds:.2f} s)")
        return Outcome(p, ok=True, canonical=canonical, proxy=proxy, complexity=complexity, extra=extra)

    def _full(self, rec: dict[str, Any]) -> None:
        c = self.state["counters"]
        t0 = time.perf_counter()
        try:
            res = self.fitness.full(parse(rec["text"]))
            rec["full"], rec["val_ppl"] = res, res["val_ppl"]
        except Exception as err:  # recorded; the search goes on
            msg = err.render() if isinstance(err, PruneDSLError) else f"{type(err).__name__}: {err}"
            rec["full"] = {"error": msg}
            self.log(f"  ✗ full evaluation of {rec['pretty']} failed: {msg.splitlines()[0]}")
        c["full_evals"] += 1
        best = best_record(self.state["candidates"])
        self.state["history"].append({"screened": c["screened"], "full_evals": c["full_evals"],
                                      "id": rec["id"], "val_ppl": rec["val_ppl"], "seed": rec["seed"],
                                      "best_val_ppl": best["val_ppl"] if best else None,
                                      "seconds": self._elapsed()})
        self._update_outcome(rec)
        self.save()
        if rec["val_ppl"] is not None:
            self.log(f"  ▶ val ppl {rec['val_ppl']:.3f}  {label(rec)}  ({time.perf_counter() - t0:.1f} s; "
                     f"best {best['val_ppl']:.3f})")
            self.log(hall_markdown(self.state["candidates"]))

    def _update_outcome(self, rec: dict[str, Any]) -> None:
        """Give the proposer the val ppl: in the pending outcome, or as an update."""
        for d in self.state["unobserved"]:
            if d["canonical"] == rec["canonical"] and not d.get("duplicate_of"):
                d["val_ppl"] = rec["val_ppl"]
                return
        p = Proposal(rec["input"], rec["origin"], tuple(rec["parents"]), rec["node"], rec["note"])
        self.state["unobserved"].append(outcome_to_dict(Outcome(
            p, ok=rec["val_ppl"] is not None, canonical=rec["canonical"], proxy=rec["proxy"],
            val_ppl=rec["val_ppl"], complexity=rec["complexity"],
            error=(rec["full"] or {}).get("error"), extra={"update": True, "pretty": rec["pretty"]})))

    def _full_quota(self, final: bool = False) -> None:
        """Spend the full-evaluation quota on the best candidates by proxy (module doc)."""
        k, budget = self.config.full_evals, max(1, self.config.budget)
        quota = k if final else math.floor(k * min(1.0, self._screened_new() / budget))
        seeds = [r["proxy"] for r in self.state["candidates"] if r["seed"] and r["val_ppl"] is not None]
        bar = max(seeds) if seeds and not final else math.inf  # beat the worst baseline's proxy
        while True:
            pool = [r for r in self.state["candidates"] if not r["seed"] and r.get("twin_of") is None]
            done = sum(r["full"] is not None for r in pool)
            if done >= quota:
                return
            ranked = sorted(pool, key=lambda r: (r["proxy"], r["complexity"], r["id"]))
            eligible = ranked if final else [r for r in ranked[:k] if r["proxy"] < bar]
            todo = next((r for r in eligible if r["full"] is None), None)
            if todo is None:
                return
            self._full(todo)

    def _observe(self) -> None:
        outcomes = [outcome_from_dict(d) for d in self.state["unobserved"]]
        if outcomes:
            try:
                self.proposer.observe(outcomes)
            except Exception as err:  # a proposer bug must not end the search
                self.log(f"the {self.proposer.name} proposer failed to observe outcomes: {err!r}")
        self.state["unobserved"] = []

    # --- results ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        best = best_record(self.state["candidates"])
        return {"output": str(self.dir), "phase": self.state["phase"], "counters": self.state["counters"],
                "best": best, "seconds": self.state["seconds"]["total"],
                "report": str(self.dir / "report.md") if (self.dir / "report.md").exists() else None}


def _raise_interrupt(signum, frame):
    raise Interrupted()


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
