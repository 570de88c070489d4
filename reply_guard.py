"""Reply lines that copy numbers instead of designing a metric.

    problem = copied_numbers(parse_expr("241.3 - W"), shown_numbers(graph))   # "`241.3` is ..."

Qwen2.5-Coder 0.5B, shown the scores of the library metrics, wrote them back as formulas
(docs/prompt_cache.md: ``12.122414 - -241.3 - -0.07948 - -0.06013 - -0.5 - -240.9 - -W``,
``25.947429 - 12.122414 - 241.9 - 240.111111*W``). They type-check, and ranked by ``W``
alone they waste an evaluation each; worse, once in the graph the prompt shows them and
the model copies them again. The reader rejects such a line with feedback, before it
becomes a node. Three rules, each aimed at what was seen and sparing real constants
(``|W| ^ 0.5``, ``1e-3``, ``(1/3)``, ``gblm(alpha = 566)``):

- a number of at least ``MIN_COPIED_DIGITS`` (3) significant digits that is a score the
  search measured, as the prompt shows it (``241.3``, ``0.0795``): fewer digits (``0.5``,
  ``2``) are ordinary constants that a score may equal by chance;
- a number with more than ``MAX_SIGNIFICANT`` (5) significant digits (``12.122414``,
  ``251111``): no metric needs that precision, it is a score or noise (``3.1416`` passes);
- more than ``MAX_NUMBERS`` (4) numbers in one line: the library's formulas have at most
  one, ``|W| ^ (1/3) * ‖X‖ ^ (2/3)`` has four; a line of mostly constants is a list of
  numbers, not a metric.

The numbers are those the model wrote (the parsed tree, library metrics not inlined), so
``ria`` does not count its ``0.5``. No model text is evaluated here: only the lark
parser's tree is read.
"""
from __future__ import annotations

import math
from typing import Iterable

from .dsl.ast import Expr, Num, walk
from .dsl.printer import format_number

MIN_COPIED_DIGITS = 3
MAX_SIGNIFICANT = 5
MAX_NUMBERS = 4
SHOWN_DIGITS = (3, 4)  # the scores' significant digits in the prompts (prompt.py, gcot_text.py)


def significant_digits(value: float) -> int:
    """Digits of ``value`` as the printer writes it, without leading zeros and without the
    trailing zeros of an integer: 12.122414 → 8, 0.07948 → 4, 100000 → 1, 1e-08 → 1."""
    text = format_number(abs(value)).split("e")[0]
    digits = text.replace(".", "").lstrip("0")
    if "." not in text:
        digits = digits.rstrip("0")
    return max(1, len(digits))


def shown_numbers(scores: Iterable[float | None]) -> frozenset[float]:
    """The numbers a prompt shows for these scores: each rounded to the digits of
    ``SHOWN_DIGITS`` (``241.31`` shows as ``241.3``), as a copy would read them."""
    return frozenset(float(f"{v:.{d}g}") for v in scores if v is not None and math.isfinite(v)
                     for d in SHOWN_DIGITS)


def numbers(tree: Expr) -> list[float]:
    """The numeric literals of a parsed line, in order."""
    return [e.value for e in walk(tree) if isinstance(e, Num)]


def copied_numbers(tree: Expr, shown: frozenset[float]) -> str | None:
    """Why the parsed line ``tree`` copies numbers rather than designing a metric (the
    module docstring's rules), or None."""
    values = numbers(tree)
    hint = ("numbers in a metric are exponents or weights such as 0.5, 2, 1e-3, (1/3); the "
            "scores in the prompt are results, not parts of formulas")
    for v in values:
        if significant_digits(v) >= MIN_COPIED_DIGITS and abs(v) in shown:
            return f"`{format_number(abs(v))}` is a score from the prompt, not a constant of a metric: {hint}"
    for v in values:
        if (d := significant_digits(v)) > MAX_SIGNIFICANT:
            return (f"`{format_number(v)}` has {d} significant digits; a metric needs at most "
                    f"{MAX_SIGNIFICANT}: {hint}")
    if len(values) > MAX_NUMBERS:
        return f"{len(values)} numbers in one formula (at most {MAX_NUMBERS}): {hint}"
    return None
