"""Structure scores: ``parse_structure_metric(text) -> StructureMetric`` (docs/structures.md).

A structure score is a formula of type Struct (one value per coupled structure) over the
member layers' per-weight scores, reduced by ``group_sum``/``group_max``/``producers``/
``consumers``, and over block statistics (``block_influence``):

    >>> sm = parse_structure_metric("stdnorm(group_sum(|W| * G)) + stdnorm(group_sum(|W| * ‖X‖))")
    >>> sorted(sm.kinds), sorted(sm.requires)
    (['channels', 'heads'], ['G', 'W', 'x_norm2'])

The type checker is the metric checker (``dsl/checker.py`` knows the structure reducers);
this module adds what only a whole structure score must satisfy, with carets into the
user's text: the result is Struct, per-layer statistics appear only inside a reducer, and
at least one structure kind accepts every part (``kinds``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from . import symbolic
from .ast import Call, Definition, Expr, Name, Operand, walk
from .checker import Env, check
from .functions import NORMALIZERS, WHOLE
from .library import BUILTIN, Library
from .operands import NAMED_OPERANDS, OPERANDS, X_STATISTICS
from .parser import parse as parse_any
from .printer import to_text
from .structure_vocab import (ACROSS_STRUCTURES_KINDS, BLOCK_KINDS, BLOCK_OPERANDS, KINDS, STRUCT_NORMALIZERS,
                              STRUCT_REDUCERS)
from .types import STRUCT, Type
from .views import FormulaViews
from ..errors import DSLSyntaxError, DSLTypeError, PruneDSLError, Span

ALL_KINDS = frozenset(KINDS)
STRUCTURE_GROUP = "layer"  # structures are ranked within one layer (one score_fn call)


@dataclass(frozen=True, eq=False)
class StructureMetric(FormulaViews):
    """A checked structure score. Build it with :func:`parse_structure_metric`."""

    source: str       # the text the user wrote
    expr: Expr        # resolved, typed AST of type Struct
    name: str | None = None

    @property
    def type(self) -> Type:
        return self.expr.type

    @functools.cached_property
    def requires(self) -> frozenset[str]:
        """Statistic keys: the members' (``W`` whenever a reducer reads members) and the block's."""
        keys = {n.key for n in walk(self.expr) if isinstance(n, Operand)}
        if any(isinstance(n, Call) and n.func in STRUCT_REDUCERS for n in walk(self.expr)):
            keys.add("W")
        return frozenset(keys)

    @functools.cached_property
    def kinds(self) -> frozenset[str]:
        """The structure kinds (``channels``, ``heads``, ``blocks``) the formula is valid for."""
        return kinds_of(self.expr)

    def canonical(self, group: str = STRUCTURE_GROUP) -> str:
        """Text equal for scores that rank the structures of a layer identically (``layer``),
        or of all layers (``global``)."""
        return symbolic.canonical(self.expr, group)

    def compile(self):
        """A ``score_fn(members, block) -> (n_struct,)`` (imports torch)."""
        from ..compiler.structure import compile_structure
        return compile_structure(self.expr)

    def __repr__(self) -> str:
        return f"StructureMetric({self.text()!r}, kinds={sorted(self.kinds)})"


def kinds_of(expr: Expr) -> frozenset[str]:
    """The kinds every part of a checked structure score accepts (see ``_part_kinds``)."""
    out = ALL_KINDS
    for _, kinds in _parts(expr):
        out = out & kinds
    return out


def _parts(expr: Expr):
    """(node, kinds) for each part of a checked tree that restricts the kinds; a reducer's
    argument is per-weight and restricts nothing."""
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Operand) and OPERANDS[e.key].type.shape == STRUCT:
            yield e, BLOCK_KINDS
        if isinstance(e, Call):
            if e.func in STRUCT_REDUCERS:
                yield e, STRUCT_REDUCERS[e.func].kinds
                continue
            if e.func in STRUCT_NORMALIZERS or (_across_structures(e.func, len(e.args))
                                                 and e.args[0].type.shape == STRUCT):
                yield e, ACROSS_STRUCTURES_KINDS  # blocks: one structure per call
            stack.extend(e.args)
        elif hasattr(e, "left"):
            stack.extend((e.left, e.right))
        elif hasattr(e, "operand"):
            stack.append(e.operand)


def _across_structures(func: str, n_args: int) -> bool:
    return (func in WHOLE and not (func in ("min", "max") and n_args == 2)) or func in NORMALIZERS


def parse_structure_metric(text: str, *, library: Library = BUILTIN, kind: str | None = None) -> StructureMetric:
    """Parse and check a structure score: a formula, a library name (``taylor``) or one
    ``structure name(params) = formula`` definition. With ``kind``, also check that the
    formula is valid for that kind. Raises ``PruneDSLError`` with a caret."""
    if kind is not None and kind not in KINDS:
        raise DSLTypeError(f"unknown structure kind {kind!r}", hint="kinds: " + ", ".join(KINDS))
    sm = _parse_cached(text, library)
    if kind is not None and kind not in sm.kinds:
        _raise_kind(sm, kind, library)
    return sm


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, library: Library) -> StructureMetric:
    if not isinstance(text, str):
        raise DSLSyntaxError(f"expected formula text, got {type(text).__name__}")
    try:
        tree = parse_any(text)
        defs = {**library.of_kind("metric"), **library.of_kind("structure")}
        name, params, body = None, {}, tree
        if hasattr(tree, "definitions"):
            ds = tree.definitions
            if len(ds) != 1 or ds[0].kind != "structure":
                raise DSLSyntaxError("expected one formula or one 'structure name = formula' definition",
                                     span=Span(0, len(text)))
            d = ds[0]
            defs = {**defs, d.name: d}
            name, params, body = d.name, {p.name: p.default for p in d.params}, d.body
        elif _head(tree) in library.of_kind("structure"):
            name = _head(tree)
        own = (name,) if hasattr(tree, "definitions") else ()  # a definition may not call itself
        expr = check(body, Env(params=params, metrics=defs, stack=own))
        if expr.type.shape != STRUCT:
            raise DSLTypeError(f"a structure score gives one value per structure (Struct), but this "
                               f"formula is {expr.type.shape}", span=Span(0, len(text)),
                               hint=f"reduce it over each structure: group_sum({to_text(expr)})"
                               if expr.type.shape != "Scalar" else
                               "reduce a per-weight metric over each structure: group_sum(|W|)")
        _validate(body, text, defs, params, set())
        sm = StructureMetric(text, expr, name)
        if not sm.kinds:
            _raise_no_kind(sm, body, text, defs)
        return sm
    except PruneDSLError as err:
        raise err.with_source(text) from None


def _head(tree) -> str | None:
    return getattr(tree, "name", None) or getattr(tree, "func", None)


def _validate(body: Expr, source: str, defs: dict[str, Definition], params: dict, seen: set) -> None:
    """Per-layer statistics only inside a reducer (a structure spans several member layers);
    structure definitions used by name are validated against their own text."""
    stack = [body]
    while stack:
        e = stack.pop()
        if isinstance(e, Call) and e.func in STRUCT_REDUCERS:
            continue
        per_layer = _per_layer_statistic(e, params, defs)
        if per_layer:
            raise DSLTypeError(f"{per_layer} is a statistic of one layer, but a structure spans several "
                               "member layers", span=e.span, source=source,
                               hint="read layer statistics inside a reducer: group_sum(…), producers(…), "
                                    "consumers(…), e.g. group_sum(|W| * ‖X‖)"
                               if per_layer != "a per-weight metric" else
                               f"reduce it over each structure: group_sum({to_text(e)})")
        ref = _head(e) if isinstance(e, (Name, Call)) else None
        if ref in defs and ref not in params and defs[ref].kind == "structure" and ref not in seen:
            d = defs[ref]
            seen.add(ref)
            _validate(d.body, d.source or source, defs, {p.name: p.default for p in d.params}, seen)
        if isinstance(e, Call):
            stack.extend(e.args)
            stack.extend(v for _, v in e.kwargs)
        elif hasattr(e, "left"):
            stack.extend((e.left, e.right))
        elif hasattr(e, "operand"):
            stack.append(e.operand)


def _per_layer_statistic(e: Expr, params: dict, defs: dict) -> str | None:
    """What ``e`` reads of one layer, spelled for the message, or None."""
    if isinstance(e, Operand) and OPERANDS[e.key].type.shape != STRUCT:
        return OPERANDS[e.key].text   # ‖X‖ as parsed
    if isinstance(e, Name) and e.name not in params:
        if e.name in NAMED_OPERANDS:
            return e.name
        if e.name in defs and defs[e.name].kind == "metric":
            return "a per-weight metric"
    if isinstance(e, Call) and e.args and isinstance(e.args[0], Name) and e.args[0].name == "X" and \
            (e.func in X_STATISTICS or e.func == "norm"):
        return to_text(e)
    if isinstance(e, Call) and e.func in defs and defs[e.func].kind == "metric":
        return "a per-weight metric"
    return None


def _raise_no_kind(sm: StructureMetric, body: Expr, text: str, defs) -> None:
    parts = list(_parts(sm.expr))
    blocks = [n for n, k in parts if k == BLOCK_KINDS]
    width = [n for n, k in parts if not (k & BLOCK_KINDS)]
    span = _user_span(body, blocks, defs) or Span(0, len(text))
    raise DSLTypeError("this structure score is valid for no structure kind: "
                       f"{_describe(blocks[0])} is for blocks only, {_describe(width[0])} for channels "
                       "and heads only", span=span,
                       hint="score blocks and width structures (channels, heads) with separate formulas")


def _raise_kind(sm: StructureMetric, kind: str, library: Library) -> None:
    bad = next(n for n, k in _parts(sm.expr) if kind not in k)
    tree = parse_any(sm.source)
    body = tree.definitions[0].body if hasattr(tree, "definitions") else tree
    span = _user_span(body, [bad], library.of_kind("structure"))
    raise DSLTypeError(f"{_describe(bad)} is not valid for {kind}: this score is for "
                       f"{', '.join(k for k in KINDS if k in sm.kinds)}", source=sm.source,
                       span=span or Span(0, len(sm.source)),
                       hint="block statistics score whole blocks; producers/consumers and normalizing "
                            "across structures (stdnorm, std) need channels or heads")


def _describe(node: Expr) -> str:
    if isinstance(node, Operand):
        return OPERANDS[node.key].text
    return f"{node.func}(…)" if isinstance(node, Call) else to_text(node)


def _user_span(body: Expr, nodes, defs) -> Span | None:
    """The span in the user's text of the first of ``nodes`` written there (same spelling),
    else of the first structure definition named there (the part came from its body)."""
    for node in nodes:
        want = node.key if isinstance(node, Operand) else node.func
        for e in walk(body):
            if (isinstance(e, Name) and BLOCK_OPERANDS.get(e.name) == want) or \
                    (isinstance(e, Call) and e.func == want):
                return e.span
    for e in walk(body):
        if isinstance(e, (Name, Call)) and _head(e) in defs and defs[_head(e)].kind == "structure":
            return e.span
    return None


__all__ = ["StructureMetric", "parse_structure_metric", "kinds_of", "ALL_KINDS", "STRUCTURE_GROUP"]
