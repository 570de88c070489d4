"""Where the search's full evaluations run: a pool the engine submits candidates to.

    pool.submit(rec.id, rec.text)           # queue one candidate's full evaluation
    done = pool.next_result(wait=False)     # the oldest submitted one's FullResult, or None
    pool.close()

Results come back in *submission order*, whatever order the workers finish in, and the
engine applies them in that order (``search/engine.py``'s module doc), so the state and
the hall of fame do not depend on timing. ``InProcessPool`` (``--workers 1``) evaluates
on the engine's own fitness when a result is asked for, which is exactly the sequential
search: submit, evaluate, apply. ``search/ray_pool.py``'s ``RayPool`` (``--workers N``)
spreads them over Ray actors. A worker evaluates a candidate from its printed text (no
library needed: calls are inlined) with ``evaluate_full``, here or in an actor.
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


def evaluate_full(fitness: Any, text: str) -> tuple[dict[str, Any], float]:
    """Prune with the formula ``text`` and measure validation perplexity; a failure of the
    candidate is its result (``{"error": message}``), never an exception."""
    t0 = time.perf_counter()
    parse_candidate = getattr(fitness, "parse_candidate", parse)  # structure mode: its own kind
    try:
        res = fitness.full(parse_candidate(text))
    except Exception as err:  # recorded; the search goes on
        res = {"error": render_error(err)}
    return res, time.perf_counter() - t0


class EvalPool(Protocol):
    workers: int

    def submit(self, key: int, text: str) -> None: ...

    def next_result(self, wait: bool = True) -> FullResult | None:
        """The result of the oldest submitted evaluation not returned yet; None when nothing
        is submitted, or (``wait=False``) when that one has not finished."""

    def close(self) -> None: ...


class InProcessPool:
    """Full evaluations on the engine's own fitness, one at a time when asked for."""

    workers = 1

    def __init__(self, fitness: Any):
        self.fitness = fitness
        self._queue: deque[tuple[int, str]] = deque()

    def submit(self, key: int, text: str) -> None:
        self._queue.append((key, text))

    def next_result(self, wait: bool = True) -> FullResult | None:
        if not self._queue:
            return None
        key, text = self._queue.popleft()
        return FullResult(key, *evaluate_full(self.fitness, text))

    def close(self) -> None:
        self._queue.clear()
