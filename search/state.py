"""Reading ``DIR/state.json``: its version, the migration of older versions, and a clear
error for a file that is not a search state (empty, truncated, a list, ``{}``).

Version 1 is the layout written before the version bump, where ``skipped_seeds`` was
added on first use; version 2 always holds it; version 3 gives candidates a recipe
(search/recipe.py; left out when mask-only) and the config ``recipes``/``recipe``. Older files are migrated in memory on
read and written back as the current version by the next save. The migrated JSON is
then read into a ``SearchState`` (``search/records.py``): a missing, unknown or mistyped
key anywhere in it is the same clear error, never a KeyError.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import SearchError
from .records import STATE_VERSION, RecordError, SearchState

STATE_FILE = "state.json"

# the keys every version holds; a JSON object without them is not a search state
_REQUIRED = ("version", "config", "phase", "candidates", "failures", "history", "pending",
             "unobserved", "proposer", "test", "seconds", "counters")


def _v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    state.setdefault("skipped_seeds", {})
    state["version"] = 2
    return state


def _v2_to_v3(state: dict[str, Any]) -> dict[str, Any]:
    # version 3: a candidate is (formula, recipe). Searches before it were formula-only
    # (mask-only, uniform): they resume as --recipes fixed with the mask-only recipe, and
    # a candidate without a recipe key has that one.
    state["config"].setdefault("recipes", "fixed")
    state["config"]["cli"].setdefault("recipes", "fixed")
    state["version"] = 3
    return state


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def _not_a_state(path: Path, why: str) -> SearchError:
    kept = ("; hall.json and hall.md next to it still hold the hall of fame"
            if (path.parent / "hall.json").is_file() else "")
    return SearchError(f"{path} is not a prunedsl search state ({why})",
                       hint=f"the file was left as it is{kept}; start a new search in another "
                            f"--output, or move {path.name} away to start one in this directory")


def read_state(directory: str | os.PathLike) -> SearchState | None:
    """The search state in ``directory`` at the current version, or None when there is none."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise _not_a_state(path, "the file is empty")
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise _not_a_state(path, f"it is truncated or not JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(state, dict):
        raise _not_a_state(path, f"it holds a JSON {type(state).__name__}, not an object")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise _not_a_state(path, "it lacks " + ", ".join(missing))
    if not isinstance(state["config"], dict) or not isinstance(state["config"].get("cli"), dict):
        raise _not_a_state(path, "its config has no cli settings")
    version = state["version"]
    while isinstance(version, int) and version in _MIGRATIONS:
        state = _MIGRATIONS[version](state)
        version = state["version"]
    if version != STATE_VERSION:
        raise SearchError(f"{path} has state version {version}, this prunedsl reads versions 1 to "
                          f"{STATE_VERSION}", hint="resume it with the prunedsl that wrote it")
    try:
        return SearchState.from_json(state)
    except RecordError as err:
        raise _not_a_state(path, str(err)) from None
