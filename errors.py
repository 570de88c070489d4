"""The one exception tree of prunedsl.

Every error a user can cause derives from ``PruneDSLError``. Errors about a piece of
source text carry the text and the span, and render a caret under it::

    error: sqrt of a possibly negative value
      |  |W| * sqrt(W)
      |        ^^^^^^^
    hint: W is signed; did you mean sqrt(|W|)?
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Half-open character range ``[start, end)`` into the source text."""

    start: int
    end: int

    def __or__(self, other: "Span") -> "Span":
        return Span(min(self.start, other.start), max(self.end, other.end))


def render_caret(source: str, span: Span, width: int = 100) -> str:
    """The source line around ``span`` with ``^`` under the span (long lines are windowed)."""
    start = max(0, min(span.start, len(source)))
    line_start = source.rfind("\n", 0, start) + 1
    line_end = source.find("\n", start)
    if line_end == -1:
        line_end = len(source)
    end = max(start + 1, min(span.end, line_end + 1))
    line = source[line_start:line_end]
    col = start - line_start
    lineno = source.count("\n", 0, start) + 1
    where = f"line {lineno}, column {col + 1}"
    lo = 0
    if len(line) > width:  # show a window around the caret
        lo = max(0, min(col - width // 3, len(line) - width))
        line = ("…" if lo else "") + line[lo:lo + width] + ("…" if lo + width < len(line) else "")
        col = col - lo + (1 if lo else 0)
    carets = max(1, min(end - start, width - col + 1))
    return f"{where}:\n    {line}\n    {' ' * col}{'^' * carets}"


class PruneDSLError(Exception):
    """Base class of every error prunedsl raises for bad input or a failed run."""

    kind = "error"

    def __init__(self, message: str, *, source: str | None = None, span: Span | None = None,
                 hint: str | None = None):
        self.message = message
        self.source = source
        self.span = span
        self.hint = hint
        super().__init__(self.render())

    def with_source(self, source: str) -> "PruneDSLError":
        """Attach the source text if the error does not have one yet (for re-raising)."""
        if self.source is None and self.span is not None:
            self.source = source
            self.args = (self.render(),)
        return self

    def render(self) -> str:
        parts = [f"{self.kind}: {self.message}"]
        if self.source is not None and self.span is not None:
            parts.append(render_caret(self.source, self.span))
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)

    def __str__(self) -> str:  # always the current rendering
        return self.render()


class DSLSyntaxError(PruneDSLError):
    """The text does not parse."""

    kind = "syntax error"


class DSLNameError(PruneDSLError):
    """An unknown operand, function, metric or parameter."""

    kind = "name error"


class DSLTypeError(PruneDSLError):
    """Wrong arity, shape or sign."""

    kind = "type error"


class CompileError(PruneDSLError):
    """A checked formula could not be turned into a plan."""

    kind = "compile error"


class PruneRuntimeError(PruneDSLError):
    """Loading a model or data, calibrating, pruning or evaluating failed."""

    kind = "runtime error"


class NonFiniteScoreError(PruneRuntimeError):
    """A metric produced NaN or infinite scores on a layer."""

    kind = "non-finite scores"


class SearchError(PruneDSLError):
    """The metric search could not proceed."""

    kind = "search error"


class ReplyRejected(PruneDSLError):
    """A model's reply line that type-checks but does not answer what was asked: a list of
    numbers, or no refinement of the sketch it names (``serve/replies.py``)."""

    kind = "rejected"


class ConfigError(PruneDSLError):
    """A setting (sparsity, pattern, group, ...) is out of range or contradicts another.

    ``template`` names settings as ``{sparsity}``; the message spells them plainly
    (``sparsity``) for the Python API, and :meth:`for_cli` as flags (``--sparsity``).
    Values are passed as keywords, so their text is never read as a template.
    """

    def __init__(self, template: str, *, hint: str | None = None, **values):
        self.template, self.hint_template, self.values = template, hint, values
        super().__init__(self._spell(template, str), hint=self._spell(hint, str))

    def _spell(self, template: str | None, name) -> str | None:
        if template is None:
            return None
        return template.format_map(_Spelling(self.values, name))

    def for_cli(self, cls: type[PruneDSLError] = PruneDSLError) -> PruneDSLError:
        """The same error with settings spelled as command-line flags, as a ``cls``."""
        def flag(name: str) -> str:
            return "--" + name.replace("_", "-")
        return cls(self._spell(self.template, flag), hint=self._spell(self.hint_template, flag))


class _Spelling(dict):
    """Template fields: a given value, or else a setting's name spelled by ``name``."""

    def __init__(self, values: dict, name):
        super().__init__(values)
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)
