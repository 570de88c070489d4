"""A search candidate's recipe: how its formula's mask is applied (docs/design.md §4).

    Recipe()                           # the mask only, uniform sparsity: the formula alone
    Recipe(reconstruct=True)           # + SparseGPT's OBS weight update ("+R"; group layer)
    Recipe(allocation="owl")           # per-block sparsity from a library allocation rule

A candidate is (formula, recipe). With ``prunedsl search --recipes search`` (the CLI's
default) the recipe is searched with the formula: the seeds (``seed_list``) and the
``evolve`` proposer's recipe operators (``RecipeSpace``) vary it. With ``--recipes fixed``
every candidate gets one recipe, the search's base recipe: mask-only and uniform (the
search as it was before recipes), or what ``--reconstruct`` / ``--allocation RULE`` give.

Normal form (``normalize``, applied by the screening to every proposal): with
``reconstruct`` the group is explicit (None becomes ``runtime/job.default_group``'s
"layer", as ``prunedsl prune --reconstruct`` does); without it, a group equal to the
search's is None; a uniform allocation rule (``uniform``, ``0``) is None. Allocation
texts compare as written (the proposers spell a library rule one way: ``owl``,
``owl(lam = 0.1)``), and are resolved into self-contained rule text (``evaluable``)
before they go to a worker, which has no library.

The proxy cannot see a recipe: a candidate's proxy is its formula's (search/screening.py).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

from ..config import check_selection, default_group
from ..dsl.library import Library

RECIPE_MODES = ("search", "fixed")


@dataclass(frozen=True)
class Recipe:
    reconstruct: bool = False            # SparseGPT's OBS weight update after masking
    group: str | None = None             # selection group; None: the search's --group
    #                                      (with reconstruct: prune's default, "layer")
    allocation: str | None = None        # a library allocation rule or a rule's text; None: uniform

    def tag(self) -> str:
        """What the recipe adds to the formula, for people: ``+R(layer) · alloc owl``; "" for none."""
        parts = []
        if self.reconstruct:
            parts.append(f"+R({self.group})" if self.group else "+R")
        elif self.group:
            parts.append(f"group {self.group}")
        if self.allocation:
            parts.append(f"alloc {self.allocation}")
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"reconstruct": self.reconstruct, "group": self.group, "allocation": self.allocation}


MASK = Recipe()


def is_mask(recipe: Recipe | None) -> bool:
    """The formula alone: no weight update, the search's group, uniform sparsity."""
    return recipe is None or recipe == MASK


def recipe_key(canonical: str, recipe: Recipe | None) -> str:
    """A candidate's identity: its canonical form, and its recipe where there is one (so a
    mask-only candidate's key is its canonical form, as before recipes)."""
    return canonical if is_mask(recipe) else f"{canonical}  [{recipe.tag()}]"


def with_tag(text: str, recipe: Recipe | None) -> str:
    """``text`` followed by the recipe's tag: ``|W|·‖X‖  +R(layer) · alloc owl``."""
    return text if is_mask(recipe) else f"{text}  {recipe.tag()}"


def seed_label(name: str, recipe: Recipe | None) -> str:
    """A seed's name in ``skipped_seeds`` and failures: ``wanda``, ``wanda +R(layer)``."""
    return name if is_mask(recipe) else f"{name} {recipe.tag()}"


def normalize(recipe: Recipe, *, group: str, sparsity: float, pattern, library: Library) -> Recipe:
    """``recipe`` in normal form (module doc), checked: an allocation text that does not
    parse or check, or an allocation with the global group, raises (a PruneDSLError)."""
    from ..api import parse_allocation
    rgroup = default_group(recipe.group, True) if recipe.reconstruct else (
        None if recipe.group == group else recipe.group)
    alloc = recipe.allocation
    if alloc is not None and parse_allocation(alloc, library=library).uniform:
        alloc = None
    out = Recipe(recipe.reconstruct, rgroup, alloc)
    check_selection(sparsity=sparsity, group=rgroup or group, pattern=pattern, metric_shape="Mat",
                    allocation=alloc is not None)
    return out


def evaluable(recipe: Recipe | None, library: Library) -> Recipe | None:
    """What a worker evaluates: None for the mask-only recipe, else the recipe with its
    allocation resolved into rule text that parses without the library."""
    if is_mask(recipe):
        return None
    if recipe.allocation is None:
        return recipe
    from ..api import parse_allocation
    return replace(recipe, allocation=parse_allocation(recipe.allocation, library=library).formula())


# --- seeds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seed:
    name: str                            # the library metric's name
    text: str
    recipe: Recipe | None = None         # normal form; None: the search's base recipe
    skip: str | None = None              # why it is not offered in this search

    @property
    def label(self) -> str:
        return seed_label(self.name, self.recipe)


def seed_list(metrics: list[tuple[str, str]], library: Library, *, mode: str, base: Recipe,
              group: str) -> list[Seed]:
    """The seeds of a search, in screening order. ``metrics``: (name, text) of the library
    metrics (``engine.seed_metrics``). ``fixed``: each metric with the base recipe.
    ``search``: each metric mask-only, then each with +R (prune's default group), then
    wanda with each non-uniform library allocation rule (skipped with ``--group global``,
    which sets per-layer sparsity itself)."""
    if mode != "search":
        return [Seed(name, text, None if is_mask(base) else base) for name, text in metrics]
    out = [Seed(name, text) for name, text in metrics]
    plus_r = Recipe(reconstruct=True, group=default_group(None, True))
    out += [Seed(name, text, plus_r) for name, text in metrics]
    wanda = dict(metrics).get("wanda")
    if wanda is not None:
        skip = "allocation rules need --group row or layer" if group == "global" else None
        out += [Seed("wanda", wanda, Recipe(allocation=rule), skip) for rule in allocation_rules(library)]
    return out


def allocation_rules(library: Library) -> list[str]:
    """Names of the library's allocation rules that are not uniform."""
    from ..api import parse_allocation
    return [name for name in library.of_kind("allocation")
            if not parse_allocation(name, library=library).uniform]


# --- the evolve proposer's recipe operators ----------------------------------------------
@dataclass(frozen=True)
class RecipeSpace:
    """What ``evolve`` may change in a recipe (``--recipes search``): toggle +R, switch the
    group of a +R recipe, set/clear/switch the allocation rule, and move one of its
    parameters by a factor in [1/factor, factor], kept within [default/span, default·span]."""

    rules: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]   # (rule, ((param, default), ...))
    groups: tuple[str, ...] = ("row", "layer")
    allocation: bool = True              # False with --group global
    rate: float = 0.25                   # share of evolve's children that change only the recipe
    factor: float = 1.5
    span: float = 4.0
    library: Library = Library()

    @classmethod
    def from_library(cls, library: Library, group: str) -> "RecipeSpace":
        defs = library.of_kind("allocation")
        rules = tuple((n, tuple((p.name, p.default) for p in defs[n].params)) for n in allocation_rules(library))
        return cls(rules, allocation=group != "global" and bool(rules), library=library)

    def operators(self, r: Recipe) -> list[str]:
        ops = ["reconstruct"] + (["group"] if r.reconstruct else [])
        if self.allocation:
            ops.append("allocation")
            if r.allocation and self._params(r.allocation):
                ops.append("alloc_param")
        return ops

    def apply(self, op: str, r: Recipe, rng: random.Random) -> Recipe | None:
        """The recipe ``op`` makes of ``r`` (None when it cannot); allocation texts checked."""
        if op == "reconstruct":
            return Recipe(not r.reconstruct, None, r.allocation)
        if op == "group":
            return replace(r, group=rng.choice([g for g in self.groups if g != (r.group or "layer")]))
        if op == "allocation":
            names = [n for n, _ in self.rules if n != self._rule(r.allocation)]
            choices = ([None] if r.allocation else []) + names
            return self._checked(replace(r, allocation=rng.choice(choices))) if choices else None
        if op == "alloc_param":
            return self._checked(replace(r, allocation=self._perturb(r.allocation, rng)))
        raise ValueError(f"unknown recipe operator {op!r}")

    # --- rule texts: name or name(p = v, ...) with the parameters that differ from the defaults
    def _rule(self, text: str | None) -> str | None:
        return None if text is None else text.split("(")[0].strip()

    def _params(self, text: str) -> dict[str, float]:
        """The rule's parameter values (defaults filled in); {} for a rule without any."""
        from ..dsl.ast import Call
        from ..dsl.checker import constant_value
        from ..dsl.parser import parse_expr
        defaults = dict(dict(self.rules).get(self._rule(text), ()))
        tree = parse_expr(text)
        if isinstance(tree, Call):
            values = dict(zip(defaults, (constant_value(a) for a in tree.args)))
            values.update((k, constant_value(v)) for k, v in tree.kwargs)
            return {**defaults, **{k: v for k, v in values.items() if v is not None}}
        return defaults

    def _perturb(self, text: str, rng: random.Random) -> str:
        params = self._params(text)
        defaults = dict(dict(self.rules)[self._rule(text)])
        name = rng.choice(sorted(params))
        lo, hi = defaults[name] / self.span, defaults[name] * self.span
        value = params[name] * math.exp(rng.uniform(-math.log(self.factor), math.log(self.factor)))
        params[name] = float(f"{min(hi, max(lo, value)):.3g}")
        return self.spell(self._rule(text), params)

    def spell(self, rule: str, params: dict[str, float]) -> str:
        from ..dsl.printer import format_number
        defaults = dict(dict(self.rules)[rule])
        given = [f"{k} = {format_number(v)}" for k, v in params.items() if v != defaults[k]]
        return f"{rule}({', '.join(given)})" if given else rule

    def _checked(self, r: Recipe) -> Recipe | None:
        """``r`` if its allocation passes the allocation checker, else None."""
        if r.allocation is None:
            return r
        from ..api import parse_allocation
        from ..errors import PruneDSLError
        try:
            parse_allocation(r.allocation, library=self.library)
        except PruneDSLError:
            return None
        return r


def recipe_count_rows(records) -> list[list[Any]]:
    """The report's count rows for full evaluations that used +R or an allocation rule
    (none when no candidate had a recipe: the report is as before recipes)."""
    rows = []
    done = [r for r in records if r.full and "val_ppl" in r.full]
    for what, used in (("with the OBS update (+R)", lambda r: r.recipe.reconstruct),
                       ("with an allocation rule", lambda r: r.recipe.allocation is not None)):
        picked = [r for r in done if used(r)]
        if picked or any(not is_mask(r.recipe) for r in records):
            secs = [sum(r.full.get(k, 0.0) for k in ("prune_seconds", "allocation_seconds", "eval_seconds"))
                    for r in picked]
            rows.append([f"fully evaluated {what}",
                         f"{len(picked)}" + (f" (mean {sum(secs) / len(secs):.1f} s)" if secs else "")])
    return rows
