"""The search loop: propose → parse/check → canonical dedup → proxy → top-K full evals → hall.

    engine = Engine(config, fitness_factory, proposer)
    engine.run()          # resumes from config.output/state.json when config.resume

Candidates are (formula, recipe) (``search/recipe.py``): the recipe says whether the OBS
weight update follows the mask (+R, with its selection group) and which allocation rule
gives per-block sparsity. With ``config.recipes == "fixed"`` every candidate has the
search's base recipe (mask-only and uniform unless ``--reconstruct``/``--allocation``);
with ``"search"`` the seeds and the evolve proposer vary it.

Seeds (``recipe.seed_list``, the one list): every library metric with the base recipe;
with ``"search"`` also every metric with +R and wanda with every library allocation
rule. They are screened and fully evaluated first, so the best reported candidate is never
worse on validation than the best known metric and recipe.

Budget: ``budget`` counts *new* candidates screened by the proxy (seeds not included).
Failed and duplicate proposals cost no budget; ``max_proposals`` bounds them.
``time_limit`` (``--time-limit``) bounds the wall clock of the seeds and the search (what
proposers are compared at, ``bench/bench_proposers.py``): once it is spent no proposal is
asked for, no candidate screened and no full evaluation started (the unscreened rest of
a batch stays pending, so ``--resume`` with a larger limit goes on); the quota below then
follows the share of the search phase's time spent (the time left after the seeds) when
that is ahead of the share of the budget. Counting from the start instead would hand the
seeds' time to the quota: on SmolLM2 the seeds took ~40% of 30 minutes, and that share of
the full evaluations went to the first candidates screened.

Full evaluations: ``full_evals`` (K) candidates are pruned for real. After each batch the
quota is floor(K · screened / budget), spent on the best-by-proxy candidates not yet
evaluated among the top K by proxy whose proxy beats the worst seed's; what is left at
the end goes to the best remaining by proxy.

Dedup and proxy with recipes: a candidate's identity is its canonical form (under the
search's group) and its recipe in normal form, so ``wanda`` and ``wanda +R(layer)`` are two
candidates. The proxy sees the formula's mask and, for +R, the error left after the OBS
update with the recipe's selection group (search/obs_proxy.py); it does not see an
allocation rule (uniform sparsity). So a proxy is computed once per (canonical form, +R
group) and reused for every allocation variant of it (``proxy_seconds`` 0). Two formulas
that rank alike under the search's group share a canonical form, even where a recipe's
group (+R(layer)) or an allocation rule reading score statistics (OWL's outlier ratio,
SDSA's skew) would tell them apart: the search keeps the first.

Proxy twins: two formulas with different canonical forms can still prune exactly the same
weights on this model (``min(|W|·‖X‖, 1e4)`` vs ``|W|·‖X‖``). A candidate whose proxy is
bit-identical to an earlier one's *with the same recipe* (same masks on every screened
layer) is recorded as its ``twin_of`` and not fully evaluated unless it is the simpler of
the two (then the roles swap, if the other was not evaluated yet); twins are counted in
the report. Recipe variants of one formula share its proxy but are never twins.

Empty rounds: a proposer can return nothing in a round (an LLM's answers all invalid or
already seen); the search ends after ``EMPTY_ROUNDS`` such rounds in a row, with the
budget not spent, and a plain ``--resume`` asks the proposer again. A round that is empty
because the proposer's endpoint is failing (``proposer.outage()`` is not None: the LLM
endpoint's circuit breaker is open, or its last call failed with a timeout, a refused
connection, 429 or 5xx) is not counted: the engine waits until the endpoint may be called
again, for at most ``max_outage`` seconds of failures in a row (default 600, ``--llm-max-outage``);
then it stops with an error, everything saved, and ``--resume`` continues.

The final choice: at the end of the search phase the finalists are measured on the
selection slice, validation windows the search never read, and the best there is the
winner (``search/selection.py``); the report then measures test perplexity and, with
``transfer_models``, the top formulas on other models (``search/transfer.py``). A finished
search resumed with more finalists or transfer models to measure goes back to the report.

Persistence: the state (``records.SearchState``: candidates, counters, pending
proposals, outcomes not yet observed, the proposer's state with its RNG) is written
after every evaluation, so a SIGKILL loses at most the candidate in flight; Ctrl-C (or
SIGTERM) stops without writing a half-updated state. One candidate's screening and full
evaluation are ``search/screening.py``'s.

Where full evaluations run: a pool (``search/pool.py``). The engine submits candidates
and records their results in submission order, whatever order they finish in; it stays
the only writer of the state. ``--workers 1`` evaluates in this process when a result is
asked for, right after each submission: the sequential search, unchanged. With a Ray pool
(``--workers N``) several are in flight: the seeds' full evaluations overlap the screening
of the next seeds, and a quota round submits all its candidates (``next_full_eval`` counts
the submitted ones as taken, and its picks do not read their results), then waits for all
of them before the proposer observes. A history point carries the screened counter of
its submission. So the state, the hall of fame and what the proposer sees are the same
for any number of workers and any completion order; a candidate in flight when the
search is killed has no result in the saved state, and ``--resume`` submits it again.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..dsl.library import BUILTIN, Library
from ..errors import SearchError
from .base import Proposal
from .hall import best_record, hall_markdown, label, write_hall, write_json
from .pool import EvalPool, InProcessPool
from .recipe import Seed, evaluable, recipe_key, seed_list
from .records import Candidate, SearchConfig, SearchState, to_json
from .screening import Screening, next_full_eval
from .selection import pending as selection_pending, run_selection, select_ppl, winner
from .state import STATE_FILE, read_state

__all__ = ["EMPTY_ROUNDS", "Engine", "Interrupted", "SearchConfig", "seed_metrics"]

EMPTY_ROUNDS = 5  # consecutive empty proposal rounds that end a search


def seed_metrics(library: Library = BUILTIN) -> list[tuple[str, str]]:
    """(name, text) of the seed metrics: the library's metrics (built-in ones included).
    The seed candidates, with their recipes, are ``recipe.seed_list``'s."""
    return [(name, name) for name in library.of_kind("metric")]


class Interrupted(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that no ``except Exception`` swallows it."""


class Engine:
    def __init__(self, config: SearchConfig, fitness_factory: Callable[[], Any], proposer,
                 *, log: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 pool_factory: Callable[[Any], EvalPool] | None = None,
                 transfer_fitness: Callable[[str], Any] | None = None):
        """``pool_factory(fitness)``: where full evaluations run (default: in this process).
        ``transfer_fitness(model)``: a full-evaluation-only fitness of another model with this
        search's settings, for the report's transfer tables (default: ``search/transfer.py``'s)."""
        self.config = config
        self.library = Library(config.library_texts)  # parsed once for every proposal
        self.fitness_factory = fitness_factory
        self.fitness = None
        self.fitness_timings: dict[str, float] = {}  # kept for the report after the model is released
        self.pool_factory = pool_factory or InProcessPool
        self.transfer_fitness = transfer_fitness
        self.pool: EvalPool | None = None
        self.submitted: dict[int, int] = {}  # candidate id -> screened counter at its submission
        self.proposer = proposer
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.sleep = sleep
        self.dir = Path(config.output)
        self.state = self.new_state()
        self.screening = Screening(self.state, config, self.library, self.log)

    # --- state --------------------------------------------------------------------------
    def new_state(self) -> SearchState:
        return SearchState(config=self.config)

    def load(self, state: SearchState) -> None:
        """Take over ``state`` as `read_state` returns it (validated, at the current version)."""
        self.state = state
        self.screening = Screening(state, self.config, self.library, self.log)
        if state.proposer is not None:
            self.proposer.load_state(state.proposer)

    def save(self) -> None:
        self.state.proposer = self.proposer.state()
        self.state.seconds = self._elapsed()
        write_json(self.dir / STATE_FILE, self.state.to_json())
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
            self.state.config = self.config
            if self.state.phase in ("report", "done") and self._more_to_do():
                self.state.phase = "search"  # --resume with a larger --budget/--full-evals
            elif self.state.phase == "done" and self.config.report and (
                    _report_pending(self.state) or not (self.dir / "report.md").exists()):
                # more finalists (--select-top), --transfer-models, or a search run with
                # --no-report resumed without it
                self.state.phase = "report"
            self.log(f"resuming {self.dir}: {self.state.counters.screened} candidates screened, "
                     f"phase {self.state.phase}")
        else:
            self.load(self.new_state())
        self._t0, self._seconds0 = time.perf_counter(), self.state.seconds
        old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        try:
            if self.state.phase != "done":
                self.fitness = self.fitness_factory()
                self.fitness_timings = dict(getattr(self.fitness, "timings", {}))
                if self.state.phase in ("seeds", "search"):
                    self.pool = self.pool_factory(self.fitness)
            self._phases()
        except (KeyboardInterrupt, Interrupted):
            # the last state written is consistent; the in-memory one may be mid-update
            self.log(f"interrupted: the search is saved in {self.dir}; continue it with --resume")
            raise KeyboardInterrupt from None
        finally:
            self._close_pool()
            if old is not None:
                signal.signal(signal.SIGTERM, old)
        return self.summary()

    def _close_pool(self) -> None:
        pool, self.pool = self.pool, None
        self.submitted.clear()  # what was in flight has no result in the state: resubmitted on resume
        if pool is not None:
            pool.close()

    def _phases(self) -> None:
        if self.state.phase == "seeds":
            self._seeds()
            self.state.phase = "search"
            self.state.search_started = self._elapsed()
            self._observe()
            self.save()
        if self.state.phase == "search":
            self._search()
            self._full_quota(final=True)
            self._observe()
            run_selection(self)  # the winner, on validation windows the search never read
            self.state.phase = "report" if self.config.report else "done"
            self.save()
            self._close_pool()  # the report evaluates in this process
            self.log("\n" + hall_markdown(self.state.candidates) + "\n")
        if self.state.phase == "report":
            from .report import write_report
            write_report(self)
            self.state.phase = "done"
            self.save()

    def _seeds(self) -> None:
        skipped = self.state.skipped_seeds
        for seed in self._seed_list():
            name, label = seed.name, seed.label
            missing = sorted(self.screening.parse(seed.text).requires - self.fitness.available)
            why = seed.skip or (f"needs {', '.join(missing)}" + (" (--gradients)" if "G" in missing else "")
                                if missing else None)
            if why:  # e.g. G without --gradients: not a failure, just not offered
                if label not in skipped:
                    skipped[label] = why
                    self.log(f"seed {label} skipped: {skipped[label]}")
                continue
            recipe = seed.recipe or self.config.recipe
            rec = next((r for r in self.state.candidates if r.seed and r.name == name and r.recipe == recipe), None)
            if rec is None and not any(f.seed == label for f in self.state.failures):
                p = Proposal(seed.text, "seed", note=name, recipe=seed.recipe)
                outcome = self.screening.screen(self.fitness, p, seed=name)
                key = recipe_key(outcome.canonical, outcome.proposal.recipe) if outcome.ok else None
                rec = self.screening.by_key.get(key)
                self.state.unobserved.append(outcome)
                self.save()
            if rec is not None and rec.full is None and rec.seed:
                self._submit(rec)
        self._record(wait=True)

    def _seed_list(self) -> list[Seed]:
        if self.screening.structure:  # structure mode: the library's structure scores
            from .structure_mode import structure_seeds
            return [Seed(name, text) for name, text in structure_seeds(self.library, self.screening.structure)]
        return seed_list(seed_metrics(self.library), self.library, mode=self.config.recipes,
                         base=self.config.recipe, group=self.screening.group)

    def _search(self) -> None:
        c, cfg = self.state.counters, self.config
        max_proposals = cfg.max_proposals or 5 * cfg.budget + 100
        empty = 0
        while True:
            if not self.state.pending:
                if self.state.unobserved:  # the last batch (also after a resume)
                    self._full_quota()
                    self._observe()
                    self.save()
                left = cfg.budget - c.screened_new
                if left <= 0 or c.from_proposer >= max_proposals:
                    break
                if self._out_of_time():
                    self._log_time_limit(left)
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
                self.state.pending = list(batch)
                self.save()
            while self.state.pending and c.screened_new < cfg.budget and not self._out_of_time():
                outcome = self.screening.screen(self.fitness, self.state.pending[0])
                self.state.pending.pop(0)
                c.from_proposer += 1
                self.state.unobserved.append(outcome)
                self.save()
            if self.state.pending and self._out_of_time():
                self._log_time_limit(cfg.budget - c.screened_new)
                break  # the rest of the batch stays pending: a --resume with more time screens it
            self.state.pending = []  # the budget is spent: drop the rest of the batch

    def _log_time_limit(self, left: int) -> None:
        self.log(f"the time limit of {self.config.time_limit:g} s is spent ({self._elapsed():.0f} s): ending "
                 f"the search with {left} of the budget of {self.config.budget} not spent and no further "
                 f"full evaluation (`--resume --time-limit S` with a larger S continues)")

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

    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        return limit is not None and self._elapsed() >= limit

    def _time_spent(self) -> float:
        """The share of the search phase's part of ``--time-limit`` used (0 without one):
        the full-evaluation quota follows it as it follows the budget, so full evaluations
        spread over the search's time (module doc). A state saved before the seeds' end was
        recorded counts from 0."""
        limit = self.config.time_limit
        if limit is None:
            return 0.0
        start = self.state.search_started or 0.0
        return 1.0 if start >= limit else min(1.0, max(0.0, self._elapsed() - start) / (limit - start))

    def _more_to_do(self) -> bool:
        recs = self.state.candidates
        done = sum(1 for r in recs if not r.seed and r.full is not None)
        return self.state.counters.screened_new < self.config.budget or done < min(
            self.config.full_evals, sum(1 for r in recs if not r.seed))

    # --- full evaluations ---------------------------------------------------------------
    def _submit(self, rec: Candidate) -> None:
        self.submitted[rec.id] = self.state.counters.screened
        recipe = evaluable(rec.recipe, self.library)  # None: the formula alone, as before recipes
        self.pool.submit(rec.id, rec.text, *(() if recipe is None else (recipe,)))
        self._record(wait=False)  # in process: evaluated and recorded now

    def _record(self, wait: bool) -> None:
        """Record finished full evaluations in submission order (with ``wait``: all of them)."""
        while self.submitted and (done := self.pool.next_result(wait=wait)) is not None:
            rec = self.state.candidates[done.key]
            best = self.screening.record_full(rec, done.result, self.submitted.pop(done.key), self._elapsed)
            self.save()
            if rec.val_ppl is not None:
                self.log(f"  ▶ val ppl {rec.val_ppl:.3f}  {label(rec)}  ({done.seconds:.1f} s; "
                         f"best {best.val_ppl:.3f})")
                self.log(hall_markdown(self.state.candidates))

    def _full_quota(self, final: bool = False) -> None:
        """Spend the full-evaluation quota on the best candidates by proxy (module doc)."""
        while not self._out_of_time() and (todo := next_full_eval(
                self.state, self.config, final, busy=self.submitted, spent=self._time_spent())) is not None:
            self._submit(todo)
        self._record(wait=True)

    def _observe(self) -> None:
        outcomes = self.state.unobserved
        if outcomes:
            try:
                self.proposer.observe(outcomes)
            except Exception as err:  # a proposer bug must not end the search
                self.log(f"the {self.proposer.name} proposer failed to observe outcomes: {err!r}")
        self.state.unobserved = []

    # --- results ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The run as JSON values (``prunedsl search --json`` prints it)."""
        best = best_record(self.state.candidates)
        chosen = winner(self.state)
        return {"output": str(self.dir), "phase": self.state.phase,
                "counters": to_json(self.state.counters), "best": best and best.to_json(),
                "winner": chosen and {**chosen.to_json(), "key": chosen.key,
                                      "select_ppl": select_ppl(self.state, chosen)},
                "seconds": self.state.seconds,
                "report": str(self.dir / "report.md") if (self.dir / "report.md").exists() else None}


def _report_pending(state: SearchState) -> bool:
    from .transfer import pending as transfer_pending
    return selection_pending(state) or transfer_pending(state)


def _raise_interrupt(signum, frame):
    raise Interrupted()


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
