"""tqdm progress bars on stderr that stay off unless asked for and stderr is a terminal."""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(progress: bool) -> bool:
    """Bars only when asked for and stderr is a TTY (logs, pipes and CI stay clean)."""
    return progress and sys.stderr.isatty()


def progress_bar(iterable: Any = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", progress: bool = True) -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not progress_enabled(progress), leave=False)
