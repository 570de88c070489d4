"""The ``evolve`` proposer: genetic programming on typed metric ASTs (Pruner-Zero style).

Individuals are checked trees. Parents are chosen by tournament on the proxy (ties
within 1% go to the simpler formula). Children come from:

- ``crossover``: a subtree of parent A replaced by a subtree of parent B of the same shape;
- ``mutate``: a subtree replaced by a fresh random subtree of the same shape (``Grower``);
- ``point``: one operand, function, operator or reducer swapped for one of the same kind;
- ``constant``: a constant (exponents included) scaled by exp(N(0, 0.4)) and rounded;
- ``hoist`` / ``wrap``: a subtree replaced by a same-shaped descendant / put under a
  function or an operator with a fresh leaf;
- ``random``: a fresh random formula (the first proposals, then 10% immigrants).

Recipes (``search/recipe.py``; only with a ``RecipeSpace``, i.e. ``--recipes search``): an
individual is a formula with a recipe. A share (``RecipeSpace.rate``) of the children
change only the recipe of a parent picked by tournament: ``reconstruct`` (toggle the OBS
update), ``group`` (row ↔ layer selection of a +R recipe), ``allocation`` (set, clear or
switch the library allocation rule) and ``alloc_param`` (one parameter of the rule, e.g.
OWL's lam or AlphaPruning's eps, times a factor in [1/1.5, 1.5], kept within 4× of its
default); every allocation text passes the allocation checker before it is proposed. The
formula operators keep the first parent's recipe (crossover: parent A's); random
immigrants have the search's base recipe. Recipe variants share their formula's proxy, so
in a tournament the one with the lower validation perplexity wins (not evaluated: last).
Without a space, no random number is drawn for recipes: a seeded run proposes what it
proposed before recipes (exact proxy ties happen between recipe variants only).

Every child is type-checked by the language's checker and must be a Mat formula that
reads W (or G), at most ``max_size`` nodes, and not proposed before (by text and recipe).
Duplicates by canonical form and recipe are the engine's business; they come back in
``observe``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from ..api import parse
from ..dsl.ast import BinOp, Call, Expr, Num, Operand, size
from ..dsl.functions import ELEMENTWISE_FUNCTIONS, searchable_elementwise
from ..dsl.library import BUILTIN, Library
from ..dsl.printer import to_text
from ..dsl.types import COL, MAT
from ..errors import PruneDSLError
from .base import Outcome, Proposal
from .recipe import Recipe, RecipeSpace, recipe_key
from .grammar import (ARITH, NORMALIZERS, PAIRWISE, REDUCERS, WHOLE, Grower,
                      Vocabulary, is_exponent, nodes, reads_weights, replace_at, typecheck)

OPERATORS = ("crossover", "mutate", "point", "constant", "hoist", "wrap")
WEIGHTS = (0.3, 0.25, 0.15, 0.15, 0.05, 0.1)


@dataclass
class Individual:
    text: str
    canonical: str
    proxy: float
    complexity: int
    tree: Expr
    val_ppl: float | None = None
    recipe: Recipe | None = None     # normal form; None: the search's base recipe

    @property
    def key(self) -> str:
        """The engine's candidate key: canonical form [+ recipe]."""
        return recipe_key(self.canonical, self.recipe)


def _ppl(i: Individual) -> float:
    return math.inf if i.val_ppl is None else i.val_ppl


def _seen(text: str, recipe: Recipe | None) -> str:
    """What ``seen`` holds for a proposal: its text, with the recipe's tag if it has one."""
    return text if recipe is None else f"{text}  [{recipe.tag()}]"


def _rng_state(rng: random.Random) -> list:
    v, internal, gauss = rng.getstate()
    return [v, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class EvolveProposer:
    name = "evolve"

    def __init__(self, *, seed: int = 0, vocab: Vocabulary | None = None, population: int = 32,
                 tournament: int = 3, max_size: int = 20, initial_random: int = 16,
                 immigrants: float = 0.1, library: Library = BUILTIN, recipes: RecipeSpace | None = None):
        self.rng = random.Random(seed)
        self.vocab = vocab or Vocabulary()
        self.grower = Grower(self.rng, self.vocab)
        self.population, self.tournament, self.max_size = population, tournament, max_size
        self.initial_random, self.immigrants = initial_random, immigrants
        self.library = library
        self.recipes = recipes                      # None: formulas only (--recipes fixed)
        self.archive: dict[str, Individual] = {}   # key (canonical [+ recipe]) -> individual
        self.seen: set[str] = set()                 # texts (+ recipe tags) proposed or observed
        self.randoms = 0

    # --- Proposer protocol ------------------------------------------------------------
    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        for _ in range(n * 20):  # bounded: a tiny vocabulary may run out of new texts
            if len(out) >= n:
                break
            p = self._child()
            if p is not None and _seen(p.text, p.recipe) not in self.seen:
                self.seen.add(_seen(p.text, p.recipe))
                out.append(p)
        return out

    def observe(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.seen.add(_seen(o.proposal.text, o.proposal.recipe))
            if not o.ok or o.canonical is None or o.proxy is None:
                continue
            key = recipe_key(o.canonical, o.proposal.recipe)
            old = self.archive.get(key)
            if old is not None:
                if o.val_ppl is not None:
                    old.val_ppl = o.val_ppl
                continue
            if o.duplicate_of:
                continue
            twin = self.archive.get(o.extra.get("twin_of")) if o.extra else None
            if twin is not None:  # prunes like a known individual: keep the simpler one
                if o.complexity is None or o.complexity >= twin.complexity:
                    continue
                del self.archive[twin.key]
            try:
                tree = parse(o.proposal.text, library=self.library).expr
            except PruneDSLError:
                continue
            self.archive[key] = Individual(to_text(tree), o.canonical, o.proxy, size(tree), tree,
                                           o.val_ppl, o.proposal.recipe)

    def state(self) -> dict[str, Any]:
        # an archive row is [text, canonical, proxy, val_ppl] (+ the recipe, when there is one)
        return {"rng": _rng_state(self.rng), "randoms": self.randoms, "seen": sorted(self.seen),
                "archive": [[i.text, i.canonical, i.proxy, i.val_ppl]
                            + ([i.recipe.to_json()] if i.recipe is not None else [])
                            for i in self.archive.values()]}

    def load_state(self, state: dict[str, Any]) -> None:
        _set_rng_state(self.rng, state["rng"])
        self.randoms = int(state.get("randoms", 0))
        self.seen = set(state.get("seen", []))
        self.archive = {}
        for text, canonical, proxy, val_ppl, *recipe in state.get("archive", []):
            tree = parse(text, library=self.library).expr
            ind = Individual(text, canonical, proxy, size(tree), tree, val_ppl,
                             Recipe(**recipe[0]) if recipe else None)
            self.archive[ind.key] = ind

    # --- selection --------------------------------------------------------------------
    def _pool(self) -> list[Individual]:
        ranked = sorted(self.archive.values(), key=lambda i: (i.proxy, i.complexity))
        return ranked[: self.population]

    def _select(self, pool: list[Individual]) -> Individual:
        picks = [self.rng.choice(pool) for _ in range(self.tournament)]
        best = picks[0]
        for p in picks[1:]:
            if p.proxy < best.proxy * 0.99 or (p.proxy <= best.proxy * 1.01 and p.complexity < best.complexity):
                best = p
            elif (p.proxy, p.complexity) == (best.proxy, best.complexity) and _ppl(p) < _ppl(best):
                best = p  # recipe variants of one formula: the proxy ties, the full evaluation decides
        return best

    # --- variation --------------------------------------------------------------------
    def _child(self) -> Proposal | None:
        pool = self._pool()
        if self.randoms < self.initial_random or len(pool) < 2 or self.rng.random() < self.immigrants:
            tree = self.grower.formula(self.rng.randint(1, 3))
            if tree is None:
                return None
            self.randoms += 1
            return Proposal(to_text(tree), "evolve:random")
        if self.recipes is not None and self.rng.random() < self.recipes.rate:
            return self._recipe_child(pool)
        op = self.rng.choices(OPERATORS, WEIGHTS)[0]
        a = self._select(pool)
        parents = (a.key,)
        if op == "crossover":
            b = self._select(pool)
            child = self._crossover(a.tree, b.tree)
            parents = (a.key, b.key) if b.key != a.key else parents
        else:
            child = getattr(self, f"_{op}")(a.tree)
        child = self._accept(child)
        if child is None:
            return None
        return Proposal(to_text(child), f"evolve:{op}", parents=parents, recipe=a.recipe)

    def _recipe_child(self, pool: list[Individual]) -> Proposal | None:
        """A parent's formula with one change to its recipe (module doc)."""
        a = self._select(pool)
        r = a.recipe or Recipe()
        op = self.rng.choice(self.recipes.operators(r))
        new = self.recipes.apply(op, r, self.rng)
        if new is None or new == r:
            return None
        return Proposal(a.text, f"evolve:{op}", parents=(a.key,), recipe=None if new == Recipe() else new)

    def _accept(self, tree: Expr | None) -> Expr | None:
        """The checked child if it is a valid metric for the search, else None."""
        if tree is None:
            return None
        checked = typecheck(tree)
        if checked is None or checked.type.shape != MAT or not reads_weights(checked):
            return None
        return checked if size(checked) <= self.max_size else None

    def _site(self, tree: Expr) -> tuple[tuple[int, ...], Expr]:
        sites = [(p, n) for p, n in nodes(tree) if not is_exponent(tree, p)]
        return self.rng.choice(sites)

    def _crossover(self, a: Expr, b: Expr) -> Expr | None:
        path, node = self._site(a)
        donors = [n for p, n in nodes(b) if not is_exponent(b, p) and n.type.shape == node.type.shape]
        if not donors:
            return None
        return replace_at(a, path, self.rng.choice(donors))

    def _mutate(self, tree: Expr) -> Expr:
        path, node = self._site(tree)
        new = self.grower.grow(node.type.shape, self.rng.randint(0, 2), nonneg=node.type.nonneg)
        return replace_at(tree, path, new)

    def _point(self, tree: Expr) -> Expr | None:
        path, node = self._site(tree)
        r = self.rng
        if isinstance(node, Operand):
            same = (self.vocab.mat if node.type.shape == MAT else
                    self.vocab.col if node.type.shape == COL else self.vocab.scalar)
            others = [k for k in same if k != node.key]
            return replace_at(tree, path, Operand(r.choice(others))) if others else None
        if isinstance(node, BinOp) and node.op != "^":
            return replace_at(tree, path, BinOp(r.choice([o for o in ARITH if o != node.op]),
                                                node.left, node.right))
        if isinstance(node, Call):
            f = node.func
            for family in (searchable_elementwise(), PAIRWISE, WHOLE, NORMALIZERS):
                if f in family:
                    return replace_at(tree, path, Call(r.choice([g for g in family if g != f]), node.args))
            if f[:4] in ("row_", "col_"):
                red = r.choice([x for x in REDUCERS if x != f[4:]])
                return replace_at(tree, path, Call(f"{f[:4]}{red}", node.args))
        return self._mutate(tree)

    def _constant(self, tree: Expr) -> Expr:
        consts = [(p, n) for p, n in nodes(tree) if isinstance(n, Num)]
        if not consts:
            return self._mutate(tree)
        path, node = self.rng.choice(consts)
        value = node.value * math.exp(self.rng.gauss(0, 0.4))
        if node.value == 0:
            value = self.rng.choice((0.1, 0.5, 1.0))
        value = float(f"{value:.3g}")
        return replace_at(tree, path, Num(value))  # checked trees hold signed constants

    def _hoist(self, tree: Expr) -> Expr | None:
        path, node = self._site(tree)
        below = [n for p, n in nodes(node) if p and not is_exponent(node, p)
                 and n.type.shape == node.type.shape]
        return replace_at(tree, path, self.rng.choice(below)) if below else self._mutate(tree)

    def _wrap(self, tree: Expr) -> Expr:
        path, node = self._site(tree)
        r = self.rng
        if r.random() < 0.5:
            f = r.choice(searchable_elementwise())
            needs_nonneg = ELEMENTWISE_FUNCTIONS[f].needs_nonneg
            inner = Call("abs", (node,)) if needs_nonneg and not node.type.nonneg else node
            return replace_at(tree, path, Call(f, (inner,)))
        leaf = self.grower.leaf(r.choice((node.type.shape, "Col", "Scalar")), nonneg=True)
        op = r.choice(("+", "*", "/", "-"))
        pair = BinOp(op, node, leaf) if r.random() < 0.7 else BinOp(op, leaf, node)
        return replace_at(tree, path, pair)

    # --- for the report ---------------------------------------------------------------
    def best(self) -> Individual | None:
        pool = self._pool()
        return pool[0] if pool else None
