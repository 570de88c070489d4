"""The system prompt a constrained request gets when it brings none: the language in brief.

Built from the ``dsl`` tables and the built-in library, so it lists what the type checker
accepts today. A small model given the operands, the sign rules and a few worked
examples writes far fewer ill-typed formulas than one that only sees the grammar mask.
"""
from __future__ import annotations

import functools

from ..dsl.functions import AXIS_FUNCTIONS, ELEMENTWISE, NORMALIZERS, WHOLE
from ..dsl.library import library
from ..dsl.operands import OPERANDS
from ..dsl.printer import to_text
from ..llm_contract import ANSWER_FORMATS, library_call
from .replies import check_reply


def example_answers() -> list[str]:
    """Library definitions that stand alone as formulas, then calls of the parameterized ones."""
    bodies, calls = [], []
    for name, d in library("metric").items():
        text = to_text(d.body)
        if check_reply(text, "formula")[1]:
            bodies.append(text)
        if d.params:
            calls.append(library_call(d))
    return bodies + calls


@functools.lru_cache(maxsize=None)
def language_summary(mode: str = "formula") -> str:
    operands = "; ".join(f"{o.ascii} ({o.doc})" if o.ascii == o.text else f"{o.text} or {o.ascii} ({o.doc})"
                         for o in OPERANDS.values())
    metrics = ", ".join(f"{n}({', '.join(p.name for p in d.params)})" if d.params else n
                        for n, d in library("metric").items())
    return "\n".join([
        "You design pruning metrics in the prunedsl formula language. A metric scores every "
        "weight of a linear layer W (out x in); the lowest scores are pruned.",
        f"Operands: {operands}; and numbers.",
        "Operators: + - * / and ^ (a number as exponent), |e| (absolute value), parentheses.",
        f"Elementwise functions: {', '.join(ELEMENTWISE)}, min(a, b), max(a, b).",
        f"Reductions: {', '.join(sorted(AXIS_FUNCTIONS))} (row_* over inputs, col_* over outputs); "
        f"whole tensor: {', '.join(WHOLE)}; normalizers: {', '.join(NORMALIZERS)}.",
        f"Known metrics, usable by name: {metrics}.",
        "Rules: W is signed, so write sqrt(|W|) and log(|W|), never sqrt(W); the result must vary "
        "per weight (use W, |W| or G in it).",
        "Example answers:",
        *example_answers(),
        ANSWER_FORMATS[mode],
    ])
