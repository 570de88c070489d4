"""One generation at a time, with a bounded queue in front of it (the event loop's side).

    queue = GenerationQueue(max_queue=8, queue_timeout=60)
    async with queue.slot(request.is_disconnected):     # waits its turn, FIFO
        ...tokenize and generate...

A request that finds ``max_queue`` others already waiting is refused at once
(``QueueFull``); one that waits ``queue_timeout`` seconds without its turn coming is
refused then (``QueueTimeout``); one whose client disconnects while it waits leaves the
queue (``ClientGone``) and is never generated. Each refusal carries ``retry_after``, a
guess in whole seconds at when a slot frees (the mean time of recent jobs times the
jobs ahead), for a ``Retry-After`` header. The app (``app.py``) maps them to 503s.

The turn is handed from one job to the next waiter directly, so a request arriving
while others wait cannot jump the queue. Asyncio only: everything here runs on the
server's event loop; the generation itself runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

POLL_S = 0.1        # how often a waiting request checks that its client is still there
EMA_WEIGHT = 0.3    # weight of the latest job in the mean job time


class QueueRefusal(Exception):
    """The request was not served; ``retry_after``: seconds after which a retry may succeed."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(QueueRefusal):
    pass


class QueueTimeout(QueueRefusal):
    pass


class ClientGone(Exception):
    """The client disconnected while its request waited."""


class GenerationQueue:
    def __init__(self, max_queue: int, queue_timeout: float):
        if max_queue < 0 or not queue_timeout > 0:
            raise ValueError(f"max_queue must be ≥ 0 and queue_timeout > 0, got {max_queue}, {queue_timeout}")
        self.max_queue, self.queue_timeout = max_queue, queue_timeout
        self._waiting: deque[asyncio.Future] = deque()
        self._busy = False
        self._started = 0.0              # when the running job took its slot
        self._mean_s: float | None = None  # mean duration of recent jobs

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> int:
        """Seconds until the queue as it is now has likely drained by one more place."""
        elapsed = time.monotonic() - self._started if self._busy else 0.0
        per_job = self._mean_s if self._mean_s is not None else max(1.0, elapsed)
        return max(1, math.ceil(per_job * (len(self._waiting) + 1)))

    @asynccontextmanager
    async def slot(self, is_disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[None]:
        """Hold the one generation slot for the ``with`` body (see the module docstring)."""
        if self._busy:
            await self._wait(is_disconnected)
        else:
            self._busy = True
        self._started = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - self._started
            self._mean_s = took if self._mean_s is None else (1 - EMA_WEIGHT) * self._mean_s + EMA_WEIGHT * took
            self._hand_over()

    async def _wait(self, is_disconnected: Callable[[], Awaitable[bool]]) -> None:
        if len(self._waiting) >= self.max_queue:
            raise QueueFull(f"the server is busy: {len(self._waiting)} requests are already waiting "
                            f"(--max-queue {self.max_queue})", self.retry_after())
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        deadline = time.monotonic() + self.queue_timeout
        try:
            while not turn.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueueTimeout(f"the request waited {self.queue_timeout:g} s for its turn "
                                       f"(--queue-timeout); requests are served one at a time", self.retry_after())
                await asyncio.wait({turn}, timeout=min(POLL_S, left))
                if not turn.done() and await is_disconnected():
                    raise ClientGone()
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._hand_over()  # the turn came just now: pass it on
            else:
                turn.cancel()
                self._waiting.remove(turn)
            raise

    def _hand_over(self) -> None:
        """Give the slot to the first request still waiting, or free it."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False
