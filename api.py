"""The Python API: ``prunedsl.parse(text) -> Metric``.

>>> m = parse("sqrt(|W| * ‖X‖)")
>>> m.type, sorted(m.requires)
(Type(shape='Mat', sign='nonneg'), ['W', 'x_norm2'])
>>> m.canonical(group="row") == parse("wanda").canonical(group="row")
True
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .dsl import symbolic
from .dsl.ast import BinOp, Call, Expr, Neg, Num, Operand, walk
from .dsl.checker import Env, check
from .dsl.library import BUILTIN, Library
from .dsl.parser import parse as _parse_any
from .dsl.views import FormulaViews
from .dsl.types import SCALAR, STRUCT, Type
from .errors import DSLSyntaxError, DSLTypeError, PruneDSLError, Span


@dataclass(frozen=True, eq=False)
class Metric(FormulaViews):
    """A checked pruning metric. Build it with :func:`parse`."""

    source: str          # the text the user wrote
    expr: Expr           # resolved, typed AST (library metrics inlined, parameters substituted)
    name: str | None = None  # library name, if the text was one

    @property
    def type(self) -> Type:
        """The type of the simplified formula (the one shown): ``|W|·‖X‖ − |W|·‖X‖ + |W|``
        is nonneg. Where the original is NaN, any sign holds, so this is sound."""
        return symbolic.simplify(self.expr).type

    @property
    def requires(self) -> frozenset[str]:
        """The statistics the runtime must collect (keys of ``dsl.operands.OPERANDS``)."""
        return _requires(self.scored)

    @functools.cached_property
    def scored(self) -> Expr:
        """The tree the runtime computes. The simplified one where simplifying dropped a
        statistic (``0 * G``) and the formula only adds, multiplies, negates, takes abs,
        max or min, so it is finite on finite statistics and the dropped part was exactly
        0; otherwise (``0 * log(W)`` is NaN at W = 0) the formula as resolved, NaNs kept."""
        simple = symbolic.simplify(self.expr)
        if _requires(simple) < _requires(self.expr) and all(map(_finite_node, walk(self.expr))):
            return simple
        return self.expr

    def canonical(self, group: str = "row") -> str:
        """Text equal for metrics that rank weights identically under ``group``."""
        return symbolic.canonical(self.expr, group)

    def compile(self):
        """A torch callable ``(stats: dict[str, Tensor]) -> scores`` (imports torch)."""
        from .compiler import compile_expr  # dsl stays torch-free; torch only when compiling
        return compile_expr(self.scored)

    def __repr__(self) -> str:
        return f"Metric({self.text()!r}, type={self.type})"


def _requires(expr: Expr) -> frozenset[str]:
    return frozenset(n.key for n in walk(expr) if isinstance(n, Operand)) | {"W"}


def _finite_node(node) -> bool:
    """Finite on finite inputs: no division, power, log, sqrt, exp, reduction, ..."""
    if isinstance(node, BinOp):
        return node.op in "+-*"
    if isinstance(node, Call):
        return node.func in ("abs", "max", "min")
    return isinstance(node, (Num, Operand, Neg))


def parse(text: str, *, library: Library = BUILTIN, allow_scalar: bool = False) -> Metric:
    """Parse and type-check a metric: a formula, a library name (``ria(a=0.3)``), or a
    single ``metric name(params) = formula`` definition. Raises ``PruneDSLError``."""
    return _parse_cached(text, library, allow_scalar)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, library: Library, allow_scalar: bool) -> Metric:
    if not isinstance(text, str):
        raise DSLSyntaxError(f"expected formula text, got {type(text).__name__}")
    try:
        tree = _parse_any(text)
        metrics = library.of_kind("metric")
        name = None
        if hasattr(tree, "definitions"):
            defs = tree.definitions
            if len(defs) != 1 or defs[0].kind != "metric":
                raise DSLSyntaxError("expected one formula or one 'metric name = formula' definition",
                                     source=text, span=Span(0, len(text)))
            d = defs[0]
            metrics = {**metrics, d.name: d}
            expr = check(d.body, Env(params={p.name: p.default for p in d.params}, metrics=metrics,
                                     stack=(d.name,)))
            name = d.name
        else:
            expr = check(tree, Env(metrics=metrics))
            if getattr(tree, "name", None) in metrics or getattr(tree, "func", None) in metrics:
                name = getattr(tree, "name", None) or tree.func
        if expr.type.shape == STRUCT:
            raise DSLTypeError("this is a structure score (one value per coupled structure), not a "
                               "per-weight metric", span=Span(0, len(text)),
                               hint="structure scores are read by parse_structure_metric (CLI: prunedsl "
                                    "check shows them); a metric scores each weight, e.g. |W| * G")
        if expr.type.shape == SCALAR and not allow_scalar:
            raise DSLTypeError("a metric must score weights, but this formula is a Scalar "
                               "(one value per layer)", span=Span(0, len(text)),
                               hint="multiply by a per-weight term such as |W|")
        return Metric(text, expr, name)
    except PruneDSLError as err:
        raise err.with_source(text) from None


def parse_allocation(text: str, *, library: Library = BUILTIN):
    """Parse and check an allocation rule (docs/design.md §3): a library name (``owl``,
    ``owl(M = 3)``), a rule (``spread(skew(score), 0.1)``, ``0``), or one
    ``allocation name(params) = rule`` definition. Returns a ``dsl.allocation.Allocation``
    with ``text()/formula()/pretty()/latex()`` and ``requires`` (block statistics)."""
    return _parse_allocation_cached(text, library)


@functools.lru_cache(maxsize=1024)
def _parse_allocation_cached(text: str, library: Library):
    from .dsl.allocation import Allocation, check_allocation, definition_of
    if not isinstance(text, str):
        raise DSLSyntaxError(f"expected allocation text, got {type(text).__name__}")
    try:
        tree = _parse_any(text)
        rules = library.of_kind("allocation")
        if hasattr(tree, "definitions"):
            d = definition_of(tree)
            body = check_allocation(d.body, {**rules, d.name: d},
                                    {p.name: p.default for p in d.params}, (d.name,))
            return Allocation(text, body, d.name)
        head = getattr(tree, "func", None) or getattr(tree, "name", None)
        return Allocation(text, check_allocation(tree, rules), head if head in rules else None)
    except PruneDSLError as err:
        raise err.with_source(text) from None


def parse_structure_metric(text: str, *, library: Library = BUILTIN, kind: str | None = None):
    """Parse and check a structure score (docs/structures.md): a library name (``taylor``), a
    formula (``group_sum(|W| * G)``) or one ``structure name(params) = formula`` definition;
    with ``kind`` ("channels", "heads", "blocks") also check it is valid for that kind.
    Returns a ``dsl.structure_metric.StructureMetric`` (``requires``, ``kinds``, ``compile()``)."""
    from .dsl.structure_metric import parse_structure_metric as parse_structure
    return parse_structure(text, library=library, kind=kind)


def is_structure(text: str, *, library: Library = BUILTIN) -> bool:
    """Whether ``text`` reads as a structure score: a ``structure`` definition, a library
    structure name, or a formula using a structure reducer or a block statistic."""
    from .dsl.structure_vocab import BLOCK_OPERANDS, STRUCT_FUNCTIONS
    try:
        tree = _parse_any(text)
    except PruneDSLError:
        return False
    if hasattr(tree, "definitions"):
        return any(d.kind == "structure" for d in tree.definitions)
    structures = library.of_kind("structure")
    return any((isinstance(n, Call) and (n.func in STRUCT_FUNCTIONS or n.func in structures)) or
               (getattr(n, "name", None) in structures or getattr(n, "name", None) in BLOCK_OPERANDS)
               for n in walk(tree))


def is_allocation(text: str, *, library: Library = BUILTIN) -> bool:
    """Whether ``text`` reads as an allocation rule rather than a metric (False if it
    does not parse); ``prunedsl check`` uses it to pick the checker."""
    from .dsl.allocation import is_allocation_tree
    try:
        tree = _parse_any(text)
        return is_allocation_tree(tree, library.of_kind("allocation"), library.of_kind("metric"))
    except PruneDSLError:
        return False
