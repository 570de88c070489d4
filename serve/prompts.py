"""The system prompt a constrained request gets when it brings none: the language in brief.

    system_prompt("formula")   # ROLE, the language summary, example answers, the answer format

The role and the language summary are ``llm_prompt``'s, word for word the search's (a
test pins it), generated from the ``dsl`` tables and the built-in library, so they list
what the type checker accepts today. A small model given the operands, the sign rules
and a few worked examples writes far fewer ill-typed formulas than one that only sees
the grammar mask.
"""
from __future__ import annotations

import functools

from ..dsl.functions import ELEMENTWISE_FUNCTIONS
from ..dsl.library import library
from ..dsl.printer import to_text
from ..llm_prompt import ANSWER_FORMATS, ROLE, language_summary, library_call
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


def system_prompt(mode: str = "formula") -> str:
    """The default system prompt of a request constrained to ``mode`` (formula or reply)."""
    return _system_prompt(mode, tuple(ELEMENTWISE_FUNCTIONS))


@functools.lru_cache(maxsize=None)
def _system_prompt(mode: str, _registry: tuple) -> str:
    return "\n".join([ROLE, language_summary(), "Example answers:", *example_answers(), ANSWER_FORMATS[mode]])
