"""Where the search's full evaluations run: a pool the engine submits candidates to.

    pool.submit(rec.id, rec.text)           # queue one candidate's full evaluation
    pool.submit(rec.id, rec.text, recipe)   # ... with its recipe (search/recipe.py, evaluable)
    done = pool.next_result(wait=False)     # the oldest submitted one's FullResult, or None
    pool.close()

Results come back in *submission order*, whatever order the workers finish in, and the
engine applies them in that order (``search/engine.py``'s module doc), so the state and
the hall of fame do not depend on timing. ``InProcessPool`` (``--workers 1``) evaluates
on the engine's own fitness when a result is asked for, which is exactly the sequential
search: submit, evaluate, apply. ``search/ray_pool.py``'s ``RayPool`` (``--workers N``)
spreads them over Ray actors. A worker evaluates a candidate from its printed text (no
library needed: calls are inlined) and its recipe (allocation rules resolved into rule
text: ``recipe.evaluable``) with ``evaluate_full``, here or in an actor. The engine
submits a recipe only when there is one, and ``evaluate_full`` passes it on only then,
so a fitness without recipes (structure mode's) is called as before.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from ..api import parse
from .screening import render_error


@dataclass(frozen=True)
class FullResult:
    key: int                    # what the engine submitted it under (the candidate's id)
    result: dict[str, Any]      # Fitness.full's result, or {"error": message}
    seconds: float              # the evaluation's own time, where it ran


def evaluate_full(fitness: Any, text: str, recipe: Any = None) -> tuple[dict[str, Any], float]:
    """Prune with the formula ``text`` (and ``recipe``: OBS update, group, allocation rule)
    and measure validation perplexity; a failure of the candidate is its result
    (``{"error": message}``), never an exception."""
    t0 = time.perf_counter()
    parse_candidate = getattr(fitness, "parse_candidate", parse)  # structure mode: its own kind
    try:
        metric = parse_candidate(text)
        res = fitness.full(metric) if recipe is None else fitness.full(metric, recipe)
    except Exception as err:  # recorded; the search goes on
        res = {"error": render_error(err)}
    return res, time.perf_counter() - t0


class EvalPool(Protocol):
    workers: int

    def submit(self, key: int, text: str, recipe: Any = None) -> None: ...

    def next_result(self, wait: bool = True) -> FullResult | None:
        """The result of the oldest submitted evaluation not returned yet; None when nothing
        is submitted, or (``wait=False``) when that one has not finished."""

    def close(self) -> None: ...


class InProcessPool:
    """Full evaluations on the engine's own fitness, one at a time when asked for."""

    workers = 1

    def __init__(self, fitness: Any):
        self.fitness = fitness
        self._queue: deque[tuple[int, str, Any]] = deque()

    def submit(self, key: int, text: str, recipe: Any = None) -> None:
        self._queue.append((key, text, recipe))

    def next_result(self, wait: bool = True) -> FullResult | None:
        if not self._queue:
            return None
        key, text, recipe = self._queue.popleft()
        return FullResult(key, *evaluate_full(self.fitness, text, recipe))

    def close(self) -> None:
        self._queue.clear()
