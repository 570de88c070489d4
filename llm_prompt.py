"""The pieces of every prompt a language model gets: who it is, what the metric language is,
how to answer. Shared by the search's LLM proposer (``search/prompt.py``) and the offline
server's default system prompt (``serve/prompts.py``), so both describe the same language
in the same words (a test pins it). The reply format's bounds and reader are
``llm_contract``'s; this module only writes text. No torch, no openai.

    language_summary()                       # the language, for a metric of shape Mat
    language_summary("Mat", {"W", "x_norm2"})  # only what this run provides

The summary is generated from the tables the checker uses: the operands (``dsl.operands``),
the function registry (``dsl.functions``: a registered elementwise function is listed the
moment it exists), the shapes (``dsl.types``) and the metric library. Each function and
operator is listed as a usage (``sqrt(e)``, ``a ^ 2``) that ``prunedsl.parse`` accepts
with ``e``, ``a``, ``b`` filled in (``tests/test_llm_prompt.py``).
"""
from __future__ import annotations

import functools

from .dsl.functions import (AXIS_FUNCTIONS, AXIS_RESULT, BINARY, DOCS, ELEMENTWISE, ELEMENTWISE_FUNCTIONS,
                            NORMALIZERS, WHOLE)
from .dsl.library import BUILTIN, Library
from .dsl.operands import OPERANDS
from .dsl.printer import format_number, to_text
from .dsl.sketch_check import HOLE_SHAPES
from .dsl.types import COL, MAT, ROW, SCALAR, SHAPE_DIMS
from .errors import PruneDSLError
from .llm_contract import MAX_LINES

ROLE = "You design pruning metrics for large language models in a small typed formula language."

SHAPE_MEANING = {MAT: "one value per weight", ROW: "one per output channel", COL: "one per input channel",
                 SCALAR: "one per layer"}

# The syntax (grammar.lark), not a table: (usage, note). a, b: any expressions.
OPERATOR_USAGES = (("a + b", ""), ("a - b", ""), ("a * b", ""), ("a / b", ""),
                   ("a ^ 2", "the exponent must be a number"), ("-a", ""), ("|a|", "absolute value"),
                   ("(a)", ""))

SKETCH_HOLES = ("Sketches are formulas with typed holes: "
                + ", ".join(f"?{k}" for k, s in HOLE_SHAPES.items() if k != "c")
                + " stand for any expression of that shape, ?c for a number.")

REPLY_FORMAT = f"""Reply format, nothing else (no prose, no code fences, no numbering):
node <id>
<formula or sketch>
... 1 to {MAX_LINES} lines after the node line, one formula or sketch per line.
Each line must be a refinement of node <id>: the node's text with one or more of its
holes replaced by expressions of the hole's shape (a number for ?c); everything outside
the holes stays as it is. A line without holes is a complete formula and gets evaluated;
a line with holes becomes a new node of the graph."""

# The short answer instructions of the server's default system prompt, per grammar mode.
ANSWER_FORMATS = {
    "formula": "Answer with exactly one formula on one line, nothing else.",
    "reply": (f"Answer with an optional first line `node <number>` (the sketch you refine), then 1 to "
              f"{MAX_LINES} lines with one formula or sketch each, nothing else. {SKETCH_HOLES}"),
}


def library_call(definition) -> str:
    """A parameterized library metric called with its defaults: ``ria(alpha = 0.5)``."""
    return f"{definition.name}({', '.join(f'{p.name} = {format_number(p.default)}' for p in definition.params)})"


def function_usages() -> dict[str, tuple[str, ...]]:
    """Every function of the language as a usage, grouped as the summary lists them: ``e`` is
    any expression, ``a, b`` two that broadcast. From the registry, so a function registered
    with ``register_elementwise`` appears here."""
    axis = {a: tuple(f"{f}(e)" for f, (fa, _) in AXIS_FUNCTIONS.items() if fa == a) for a in AXIS_RESULT}
    return {"elementwise": tuple(f"{f}(e)" for f in ELEMENTWISE_FUNCTIONS) + tuple(f"{f}(a, b)" for f in BINARY),
            "row": axis["row"], "col": axis["col"],
            "whole": tuple(f"{f}(e)" for f in WHOLE),
            "normalizers": tuple(f"{f}(e)" for f in NORMALIZERS)}


def language_summary(shape: str = MAT, available: frozenset[str] | None = None,
                     library: Library = BUILTIN) -> str:
    """What a model needs to write formulas: ``shape`` is what a metric must produce;
    ``available`` the statistic keys a run provides (None: all), so the model is not
    offered what would fail. Cached per registry state (a registered function shows)."""
    return _summary(shape, None if available is None else frozenset(available), library,
                    tuple(ELEMENTWISE_FUNCTIONS))


@functools.lru_cache(maxsize=64)
def _summary(shape: str, available: frozenset[str] | None, library: Library, _registry: tuple) -> str:
    def usable(key: str) -> bool:
        return available is None or key in available
    operands = [o for o in OPERANDS.values() if usable(o.key) and o.type.shape in SHAPE_DIMS]  # not Struct
    per_weight = " or ".join(o.text for o in operands if o.type.shape == MAT) or "W"
    nonneg = [f for f, (needs, _) in ELEMENTWISE.items() if needs]
    usages = function_usages()
    shapes = ", ".join(f"{s} ({SHAPE_DIMS[s]}, {m})" for s, m in SHAPE_MEANING.items())
    out = ["A metric scores every weight of one linear layer W (out × in); the lowest scores in each "
           "output row are pruned.",
           f"Every expression has a shape: {shapes}. Arithmetic broadcasts: Scalar with any shape, "
           f"Row with Col → Mat, Mat with Row or Col → Mat. The metric must be a {shape}"
           + (f" that varies per weight (use {per_weight})." if shape == MAT else "."),
           f"Signs: {', '.join(nonneg)} and fractional powers need a nonnegative argument; W is signed, "
           "so write sqrt(|W|), never sqrt(W).",
           "Operands (shape, sign):"]
    for o in operands:
        spell = o.text if o.text == o.ascii else f"{o.text} (or {o.ascii})"
        out.append(f"  {spell}: {o.type.shape}, {o.type.sign}; {o.doc}")
    out.append("  numbers: Scalar")
    out.append("Operators: " + ", ".join(f"{u} ({n})" if n else u for u, n in OPERATOR_USAGES))
    out.append("Elementwise, shape kept: " + ", ".join(_names(usages["elementwise"])))
    for axis, what in (("row", "input"), ("col", "output")):
        result = ", ".join(f"{a} → {b}" for a, b in AXIS_RESULT[axis].items())
        out.append(f"Over the {what} dimension ({result}): {', '.join(_names(usages[axis]))}")
    out.append("Over the whole tensor (→ Scalar): " + ", ".join(_names(usages["whole"])))
    out.append("Normalized over the whole tensor, shape kept: " + ", ".join(
        f"{u} = {DOCS[u.split('(')[0]].split(' over the whole tensor')[0]}" for u in usages["normalizers"]))
    lib = {n: d for n, d in library.of_kind("metric").items()
           if available is None or _requires(n, library) <= available}
    if lib:
        out.append("Library metrics, usable by name (parameters by keyword):")
        out += [f"  {library_call(d) if d.params else d.name} = {to_text(d.body)}" for d in lib.values()]
    return "\n".join(out)


def _names(usages: tuple[str, ...]) -> list[str]:
    """``sqrt(e)`` → ``sqrt``: one-argument functions by name, the others as usages."""
    return [u.removesuffix("(e)") for u in usages]


def _requires(name: str, library: Library) -> frozenset[str]:
    from .api import parse
    try:
        return parse(name, library=library).requires
    except PruneDSLError:
        return frozenset({"?"})  # never shown
