"""Progress on stderr: tqdm bars on a terminal, plain timestamped lines everywhere else.

A long ``prune`` whose stderr goes to a log file or a CI job used to print nothing for
many minutes. When stderr is not a terminal, each stage logs a start line, a line every
tenth of the way (or every 60 s, whichever comes first) with elapsed time and an
estimate of the time left, and an end line. ``progress=False`` silences both.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable

from tqdm.auto import tqdm

LOG_EVERY_SECONDS = 60.0


def progress_enabled(progress: bool) -> bool:
    """Bars only when asked for and stderr is a TTY (logs, pipes and CI get plain lines)."""
    return progress and sys.stderr.isatty()


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class PlainProgress:
    """The subset of tqdm's interface the runtime uses, printing one line per step."""

    def __init__(self, iterable: Iterable | None, *, total: int | None, desc: str, unit: str,
                 clock=time.monotonic, stream=None):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.clock = desc or "progress", unit, clock
        self.stream = stream if stream is not None else sys.stderr
        self.n, self.start = 0, clock()
        self._last_logged_n, self._last_logged_t = 0, self.start
        self._closed = False
        total_text = f" of {self.total} {unit}s" if self.total else ""
        self._log(f"{self.desc}: started{total_text}")

    def _log(self, text: str) -> None:
        print(f"prunedsl: {text}", file=self.stream, flush=True)

    def _due(self, now: float) -> bool:
        step = max(1, (self.total or 10) // 10)
        return self.n - self._last_logged_n >= step or now - self._last_logged_t >= LOG_EVERY_SECONDS

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self.total and self.n >= self.total:
            return  # the end line comes from close()
        if self._due(now):
            elapsed = now - self.start
            eta = ""
            if self.total and self.n:
                eta = f", ~{format_seconds(elapsed / self.n * (self.total - self.n))} left"
            of = f"/{self.total}" if self.total else ""
            self._log(f"{self.desc}: {self.n}{of} {self.unit}s, {format_seconds(elapsed)} elapsed{eta}")
            self._last_logged_n, self._last_logged_t = self.n, now

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:  # tqdm API; lines stay short
        pass

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log(f"{self.desc}: done, {self.n} {self.unit}s in "
                      f"{format_seconds(self.clock() - self.start)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable: Any = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", progress: bool = True):
    if progress and not sys.stderr.isatty():
        return PlainProgress(iterable, total=total, desc=desc, unit=unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not progress_enabled(progress), leave=False)
