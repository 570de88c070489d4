"""The built-in library (``library.pdsl``, written in the language) and user libraries."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import DSLNameError, PruneDSLError
from .ast import Definition
from .parser import parse_program

LIBRARY_PATH = Path(__file__).resolve().parent / "library.pdsl"


@functools.lru_cache(maxsize=None)
def builtin_definitions() -> tuple[Definition, ...]:
    return parse_program(LIBRARY_PATH.read_text(encoding="utf-8")).definitions


def load_definitions(text: str, base: dict[str, Definition] | None = None) -> dict[str, Definition]:
    """Add the definitions in ``text`` to ``base`` (later ones shadow earlier ones)."""
    out = dict(base or {})
    seen = set()
    for d in parse_program(text).definitions:
        if d.name in seen:
            raise DSLNameError(f"{d.name!r} is defined twice", source=text, span=d.span)
        seen.add(d.name)
        out[d.name] = d
    return out


@dataclass(frozen=True)
class Library:
    """The built-in definitions plus user library texts (later ones shadow earlier ones),
    parsed once, on first use. A value: equal and hashable by its texts, so it keys the
    parse caches and travels through the search instead of the raw texts."""

    texts: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "texts", tuple(self.texts))

    @functools.cached_property
    def _definitions(self) -> MappingProxyType:
        defs = {d.name: d for d in builtin_definitions()}
        for text in self.texts:
            defs = load_definitions(text, defs)
        return MappingProxyType(defs)

    @classmethod
    def from_files(cls, paths) -> "Library":
        return cls(read_library_files(paths))

    def of_kind(self, kind: str = "metric") -> dict[str, Definition]:
        """Name → definition of ``kind`` (``metric`` or ``allocation``)."""
        return {n: d for n, d in self._definitions.items() if d.kind == kind}


def library(kind: str = "metric") -> dict[str, Definition]:
    """Name → built-in definition of the given kind."""
    return BUILTIN.of_kind(kind)


def read_library_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise PruneDSLError(f"cannot read library file {path}: {err.strerror}") from None


def read_library_files(paths) -> tuple[str, ...]:
    """The texts of the ``--library`` files, in order (later ones shadow earlier ones)."""
    return tuple(read_library_file(p) for p in paths)


BUILTIN = Library()
