"""The ``enumerate`` proposer: every well-typed formula up to a size bound, smallest first.

Bottom-up enumeration (as in program synthesis): the formulas of size n are built from
the tables of sizes < n with every production (arithmetic and min/max first, then
``e ^ c``, unary functions, negation, normalizers, reductions), each typed by the
language's checker. Two pruning steps keep the tables small:

- *observational equivalence* for subexpressions: a subexpression whose values on a
  fixed random set of statistics equal an earlier one's (``W * ‖X‖`` vs ``‖X‖ * W``) is
  dropped, and so is one that is non-finite there;
- *canonical form* for the emitted formulas: a Mat formula is proposed only if its
  rank-equivalence canonical form (``Metric.canonical(group)``) is new.

Size = number of AST nodes (``dsl.ast.size``), the search's complexity measure.

The enumerated language is a fixed *subset* of the DSL (not derived from
``dsl.functions``), exactly:

- leaves: the statistics the run provides (``Vocabulary``: the searchable operands of
  ``dsl.operands``, today W, G with --gradients, the X statistics ‖X‖ ‖X‖₁ ‖X‖∞ mean(X)
  std(X) var(X), hinv, n_in, n_out) and the constants 1, 2, 0.5 (no other numbers);
- binary: ``+ - * /`` and ``min``/``max`` (two Scalars are never combined);
- powers ``e ^ 2``, ``e ^ 0.5``, ``e ^ -1`` of non-Scalar ``e`` only;
- unary: the searchable elementwise functions (``dsl.functions``), negation, ``minmax`` (Mat/Row/Col);
- reductions ``row_/col_`` ``sum mean max std`` and whole-tensor ``mean max std``;
- not enumerated: the other functions of ``dsl.functions`` (e.g. other normalizers and
  reductions), keyword arguments, library metric names and calls, holes.

And it is *sample-based*: observational equivalence and finiteness are judged on one
fixed random sample of the statistics (5×7 weights, seeded). Two subexpressions that
agree on that sample but differ elsewhere are merged (the later one is dropped), and a
subexpression non-finite on that sample (``log`` of a negative, division by a value
near 0) is dropped even if it would be finite on a real layer.
Enumeration is deterministic, so the state is just the number of formulas handed out.
Its proposals have the search's base recipe (search/recipe.py): with ``--recipes search``
only the seeds vary the recipe (+R, allocation rules); the enumerated formulas do not.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from ..api import parse
from ..compiler import interpret
from ..dsl.ast import BinOp, Call, Expr, Neg, Num, Operand
from ..dsl.functions import searchable_elementwise
from ..dsl.library import BUILTIN, Library
from ..dsl.printer import to_text
from ..dsl.operands import OPERANDS, search_operands
from ..dsl.types import COL, MAT, ROW, SCALAR, SIGNED
from ..errors import PruneDSLError
from .base import Outcome, Proposal
from .grammar import Vocabulary, reads_weights, typecheck

# The order the enumerator has always tried the built-in functions in (its output order
# stays the same as earlier runs'); functions registered later come after them.
_BUILTIN_ORDER = ("abs", "sqrt", "log", "exp", "sq", "sigmoid", "tanh")
ARITH = ("+", "-", "*", "/")
COMMUTATIVE = frozenset({"+", "*", "min", "max"})
REDUCERS = ("sum", "mean", "max", "std")
WHOLE = ("mean", "max", "std")
EXPONENTS = (2.0, 0.5, -1.0)
CONSTANTS = (1.0, 2.0, 0.5)


def _unary() -> list[str]:
    names = searchable_elementwise()
    last = len(_BUILTIN_ORDER)
    return sorted(names, key=lambda f: _BUILTIN_ORDER.index(f) if f in _BUILTIN_ORDER else last)


def _fingerprint_stats(seed: int = 1234) -> dict[str, Any]:
    """One random value of every operand, drawn in the search's operand order (so the
    built-in operands' values stay those of earlier runs): signed ones normal, the others
    in [0.1, 2.1); n_in and n_out the sample's sizes."""
    g = torch.Generator().manual_seed(seed)
    out, inp = 5, 7
    dims = {MAT: (out, inp), ROW: (out, 1), COL: (1, inp), SCALAR: ()}
    sizes = {"n_in": float(inp), "n_out": float(out)}
    stats: dict[str, Any] = {}
    for key in search_operands() + tuple(k for k in OPERANDS if not OPERANDS[k].searchable):
        t = OPERANDS[key].type
        if t.shape not in dims:  # a block statistic of structure scores: no metric reads it
            continue
        if key in sizes:
            stats[key] = sizes[key]
        elif t.sign == SIGNED:
            stats[key] = torch.randn(*dims[t.shape], generator=g)
        else:
            stats[key] = torch.rand(*dims[t.shape], generator=g) * 2 + 0.1
    return stats


class EnumerateProposer:
    name = "enumerate"

    def __init__(self, *, vocab: Vocabulary | None = None, group: str = "row", max_size: int = 7,
                 library: Library = BUILTIN):
        self.vocab = vocab or Vocabulary()
        self.group, self.max_size = group, max_size
        self.library = library
        self.stats = _fingerprint_stats()
        self.tables: dict[int, list[Expr]] = {}
        self.values: set[tuple] = set()
        self.canonicals: set[str] = set()
        self.emitted = 0
        self.size = 0          # size being enumerated (for notes and the report)
        self._gen = self._formulas()

    # --- Proposer protocol ------------------------------------------------------------
    def propose(self, n: int) -> list[Proposal]:
        out = []
        for tree in self._gen:
            self.emitted += 1
            out.append(Proposal(to_text(tree), "enumerate", note=f"size {self.size}"))
            if len(out) >= n:
                break
        return out

    def observe(self, outcomes: list[Outcome]) -> None:
        pass  # exhaustive: nothing to learn

    def state(self) -> dict[str, Any]:
        return {"emitted": self.emitted, "max_size": self.max_size}

    def load_state(self, state: dict[str, Any]) -> None:
        self.__init__(vocab=self.vocab, group=self.group, max_size=self.max_size,
                      library=self.library)
        for _ in range(int(state.get("emitted", 0))):  # deterministic: replay the order
            if next(self._gen, None) is None:
                break
            self.emitted += 1

    # --- enumeration ------------------------------------------------------------------
    def _formulas(self) -> Iterator[Expr]:
        for n in range(1, self.max_size + 1):
            self.size = n
            self.tables[n] = []
            for tree in self._build(n):
                checked = typecheck(tree)
                if checked is None or not self._new_value(checked):
                    continue
                self.tables[n].append(checked)
                if checked.type.shape == MAT and reads_weights(checked) and self._new_canonical(checked):
                    yield checked

    def _new_value(self, e: Expr) -> bool:
        try:
            v = interpret(e, self.stats)
        except (PruneDSLError, RuntimeError, ValueError):
            return False
        if not bool(torch.isfinite(v).all()):
            return False
        key = (e.type.shape, tuple(v.reshape(-1).double().mul(1e6).round().tolist()))
        if key in self.values:
            return False
        self.values.add(key)
        return True

    def _new_canonical(self, e: Expr) -> bool:
        try:
            c = parse(to_text(e), library=self.library).canonical(self.group)
        except PruneDSLError:
            return False
        if c in self.canonicals:
            return False
        self.canonicals.add(c)
        return True

    def _build(self, n: int) -> Iterator[Expr]:
        v = self.vocab
        if n == 1:
            yield from (Operand(k) for k in v.mat + v.col + v.scalar)
            yield from (Num(c) for c in CONSTANTS)
            return
        for i in range(1, n - 1):
            for ia, a in enumerate(self.tables.get(i, [])):
                for ib, b in enumerate(self.tables.get(n - 1 - i, [])):
                    if a.type.shape == SCALAR and b.type.shape == SCALAR:
                        continue  # constants folded into other constants add nothing
                    first = (i, ia) <= (n - 1 - i, ib)
                    for op in ARITH:
                        if first or op not in COMMUTATIVE:
                            yield BinOp(op, a, b)
                    if first:
                        yield from (Call(f, (a, b)) for f in ("min", "max"))
        for c in self.tables.get(n - 1, []):
            yield from (Call(f, (c,)) for f in _unary())
            yield Neg(c)
            if c.type.shape in (MAT, COL, ROW):
                yield Call("minmax", (c,))
            if c.type.shape in (MAT, COL):
                yield from (Call(f"col_{r}" if c.type.shape == MAT else f"row_{r}", (c,)) for r in REDUCERS)
            if c.type.shape == MAT:
                yield from (Call(f"row_{r}", (c,)) for r in REDUCERS)
            if c.type.shape in (MAT, COL):
                yield from (Call(f, (c,)) for f in WHOLE)
        for c in self.tables.get(n - 2, []):
            if c.type.shape != SCALAR:
                yield from (BinOp("^", c, Num(x)) for x in EXPONENTS)
