"""The reply formats a constrained request produces, and checking them.

    split_reply("node 3\\n|W| * ?Col")      # (3, ['|W| * ?Col'], []): llm_contract's reader
    check_reply("sqrt(W)", "formula")       # (True, False, 'type error: ...')
    check_completion("node 1\\nsqrt(W)\\n|W| * ?Col", "reply")   # Check(ok=True, lines=2, valid_lines=1, ...)

``check_completion`` is what the server's resampling (``generate.py``) asks:

- ``formula``: the reply is one formula; it is acceptable when ``prunedsl.parse`` (the
  type checker) accepts it.
- ``reply``: each line is a formula or a sketch (typed holes); a line checks when
  ``prunedsl.parse`` accepts it, or, with holes, when the sketch type-checks with the
  rules of ``dsl/sketch_check.py`` (a hole is an expression of its shape with the most
  permissive sign; ``?c`` may be an exponent) and is not a Scalar. The reply is
  acceptable when *at least one* line checks. Requiring every line would throw away
  good lines with a bad neighbour and, at ~85% valid lines, take several full replies of
  up to 8 lines each; the search reads a reply line by line anyway and sends the lines
  that fail back to the model as feedback (its repair loop). What failed is reported
  (``Check.valid_lines`` of ``Check.lines``), never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dsl.parser import parse_expr
from ..dsl.sketch_check import check_sketch, has_holes
from ..dsl.types import SCALAR
from ..errors import DSLTypeError, PruneDSLError
from ..llm_contract import split_reply


@dataclass(frozen=True)
class Check:
    ok: bool                  # acceptable (see the module docstring)
    error: str | None         # the first problem (None when every line checks)
    lines: int = 1            # formulas (or sketches) in the reply
    valid_lines: int = 0      # of them, those that type-check


def check_line(line: str) -> str | None:
    """None when ``line`` (a formula, or a sketch with holes) type-checks, else the error."""
    from ..api import parse
    try:
        tree = parse_expr(line)
        if not has_holes(tree):
            parse(line)
            return None
        expr = check_sketch(tree)
        if expr.type.shape == SCALAR:
            raise DSLTypeError("a sketch of a Scalar cannot become a metric", hint="use ?Mat, W, |W| or G in it")
    except PruneDSLError as err:
        return err.with_source(line).render()
    return None


def check_completion(text: str, mode: str) -> Check:
    """Whether a constrained reply is acceptable (module docstring), with what failed."""
    lines = [text] if mode == "formula" else split_reply(text)[1]
    if not lines:
        return Check(False, "no formula in the reply", 0, 0)
    errors = [check_line(line) for line in lines]
    first = next((e for e in errors if e is not None), None)
    valid = sum(e is None for e in errors)
    return Check(valid == len(lines) if mode == "formula" else valid > 0, first, len(lines), valid)


def check_reply(text: str, mode: str) -> tuple[bool, bool, str | None]:
    """``(parses, type_checks, first error)`` of a reply: each line with ``parse_expr``,
    then (``type_checks``) every line with the type checker, sketches as sketches."""
    if mode == "formula":
        lines = [text]
    else:
        _, lines, _ = split_reply(text)
        if not lines:
            return False, False, "no formula in the reply"
    try:
        for line in lines:
            parse_expr(line)
    except PruneDSLError as err:
        return False, False, err.render()
    c = check_completion(text, mode)
    return True, c.valid_lines == c.lines, c.error
