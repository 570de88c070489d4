"""Transfer: do the search's top formulas still beat the library on models they were not searched on?

    prunedsl search --model smollm2-135m ... --transfer-models gemma3-270m,qwen2.5-coder-0.5b

After the test table, the report prunes, on each transfer model, the top formulas (the
winner, or without a selection slice the best by validation ppl, and the next
``report_top`` discovered ones by validation ppl) and every library metric the search
used as a seed, mask only and with +R (SparseGPT's OBS weight update, layer-wise
selection, as the report's ``sparsegpt +R`` row), and measures the report's test
perplexity (WikiText-2 test, ``test_windows`` × ``test_seqlen``). Everything else is the
search's: sparsity, pattern, group, calibration (``nsamples`` windows of ``seqlen`` tokens of
that model's tokenization of the validation split, drawn after its fitness and selection
slices, same seed). The pruning path is the report's own: a full-evaluation-only
``Fitness`` of the other model (``screening=False``) and its ``test_ppl``.

One model is loaded at a time, after the search model is released, and released before
the next. Each result is saved in ``SearchState.transfer[model][key]`` as soon as it is
measured, so a killed report resumes where it stopped; a model whose rows are all
measured is not loaded again.

Which rows are measured is ``transfer_rows``: (candidate, recipe) pairs. Discovered
formulas keep their own recipe (search/recipe.py); every library metric is measured mask
only and with +R (layer-wise selection, SparseGPT proper's).
"""
from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from ..errors import SearchError
from .hall import fmt, markdown_table
from .noise import compare, ratio_cell
from .recipe import MASK, Recipe, evaluable, recipe_key
from .records import Candidate, SearchState

RECONSTRUCT = Recipe(reconstruct=True, group="layer")   # a library row's +R: SparseGPT proper's selection
DENSE = "dense"


@dataclass(frozen=True)
class TransferRow:
    """One (metric, recipe) pair measured on every transfer model."""
    key: str                        # SearchState.transfer[model] key: recipe_key(canonical, recipe)
    name: str                       # the table's first column
    rec: Candidate | None           # None: the dense model
    recipe: Recipe = MASK           # a discovered row's own recipe; a library row's mask-only or +R

    @property
    def tag(self) -> str:
        return self.recipe.tag()


# --- the option, checked before the search starts ----------------------------------------
def parse_transfer_models(text: str | list[str] | None, main_model: str | None) -> tuple[str, ...]:
    """``--transfer-models a,b`` as a tuple; an empty name, a repeat, the search's own model or
    a name that cannot be a model (not an alias, file, directory or hub id) is an error."""
    if not text:
        return ()
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    for spec in items:
        problem = _spec_problem(spec)
        if problem is None and spec == main_model:
            problem = "it is the search's own --model"
        if problem is None and items.count(spec) > 1:
            problem = "it is named twice"
        if problem is not None:
            from ..runtime.models import ALIASES
            raise SearchError(f"--transfer-models: {spec!r}: {problem}",
                              hint=f"a comma list of model aliases ({', '.join(ALIASES)}), .gguf files, "
                                   "directories written by save_pretrained, or hub ids (org/name)")
    return tuple(items)


def _spec_problem(spec: str) -> str | None:
    from ..runtime.models import ALIASES
    if not spec:
        return "an empty name (two commas in a row?)"
    path = Path(spec).expanduser()
    if spec in ALIASES or path.is_dir():
        return None
    if spec.endswith(".gguf"):
        return None if path.is_file() else "no such .gguf file"
    if spec.startswith(("/", ".", "~")):
        return "no such directory"
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec):
        return None  # a hub id: whether it exists is known when it loads
    return "not a model alias, an existing .gguf file or directory, or a hub id (org/name)"


# --- what is measured ---------------------------------------------------------------------
def top_formulas(state: SearchState) -> list[Candidate]:
    """The winner, then the next ``report_top`` discovered formulas by val ppl. Without a
    selection slice the winner is the best by val ppl; a library winner is a library row."""
    from .selection import winner
    found = sorted((r for r in state.candidates if not r.seed and r.val_ppl is not None),
                   key=lambda r: (r.val_ppl, r.complexity, r.id))
    chosen = winner(state)
    first = found[:1] if chosen is None else [] if chosen.seed else [chosen]
    rest = [r for r in found if r not in first]
    return first + rest[:state.config.report_top]


def library_seeds(state: SearchState) -> list[Candidate]:
    from .report import BASELINES
    seeds = [r for r in state.candidates if r.seed]
    return sorted(seeds, key=lambda r: (BASELINES.index(r.name) if r.name in BASELINES else 99, r.id))


def transfer_rows(state: SearchState) -> list[TransferRow]:
    """Dense, the top formulas with their recipes, every library metric mask only and +R
    (and a winning library candidate with its own recipe)."""
    from .selection import winner
    chosen = winner(state)
    rows = [TransferRow(DENSE, "dense", None)]
    for i, r in enumerate(top_formulas(state)):
        rows.append(TransferRow(r.key, "★ winner" if r is chosen else
                                "★ discovered" if i == 0 and chosen is None else "discovered", r, r.recipe))
    seen = {row.key for row in rows}
    for r in library_seeds(state):
        for recipe in [MASK, RECONSTRUCT] + ([r.recipe] if r is chosen else []):
            key = recipe_key(r.canonical, recipe)
            if key in seen:
                continue
            seen.add(key)
            won = r is chosen and recipe == r.recipe
            rows.append(TransferRow(key, (r.name or "library") + (" (★ winner)" if won else ""), r, recipe))
    return rows


def pending(state: SearchState) -> bool:
    """Whether some row of some transfer model has no result yet."""
    models = state.config.transfer_models
    if not models:
        return False
    keys = [row.key for row in transfer_rows(state)]
    return any(_missing(state, m, k) for m in models for k in keys)


def _missing(state: SearchState, model: str, key: str) -> bool:
    """No result for the row yet, or only the error of a model that did not load (a missing
    package, memory): that is retried on --resume; a row that failed itself is not."""
    res = state.transfer.get(model, {}).get(key)
    if res is None or res.get("load_failed"):
        return True  # (states saved before the flag: the same error text, "loading MODEL failed")
    return "test_ppl" not in res and str(res.get("error", "")).startswith(f"loading {model} failed")


# --- measuring ----------------------------------------------------------------------------
def default_transfer_fitness(engine) -> Callable[[str], Any]:
    """A full-evaluation-only Fitness of another model with the search's settings."""
    from .fitness import Fitness, FitnessSettings
    known = {f.name for f in fields(FitnessSettings)}
    base = {k: v for k, v in engine.config.fitness.items() if k in known}
    if base.get("pattern") is not None:
        base["pattern"] = tuple(base["pattern"])
    return lambda model: Fitness(FitnessSettings(**{**base, "model": model}), progress=False,
                                 log=engine.log, screening=False)


def _free() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def measure_transfer(engine, rows: list[TransferRow] | None = None) -> None:
    """Test ppl of every row on every transfer model not measured yet (saved one by one)."""
    state, cfg = engine.state, engine.config
    rows = transfer_rows(state) if rows is None else rows
    todo = [(m, [r for r in rows if _missing(state, m, r.key)]) for m in cfg.transfer_models]
    todo = [(m, left) for m, left in todo if left]
    if not todo:
        return
    engine.fitness = None  # the search model is released: one model in memory at a time
    _free()
    factory = engine.transfer_fitness or default_transfer_fitness(engine)
    for model, left in todo:
        results = state.transfer.setdefault(model, {})
        engine.log(f"transfer: {model} ({len(left)} rows to measure)")
        try:
            fit = factory(model)
        except Exception as err:  # a model that does not load must not lose the report
            msg = f"loading {model} failed: {type(err).__name__}: {err}"
            engine.log(f"transfer: {msg}")
            for row in left:
                results[row.key] = {"error": msg, "load_failed": True}
            engine.save()
            continue
        for row in left:
            engine.log(f"transfer {model}: {row.name}" + (f" {row.tag}" if row.tag else "")
                       + ("" if row.rec is None else f": {row.rec.pretty}"))
            try:
                metric = None if row.rec is None else engine.screening.parse(row.rec.text)
                res = fit.test_ppl(metric, seqlen=cfg.test_seqlen, windows=cfg.test_windows,
                                   recipe=None if row.rec is None else evaluable(row.recipe, engine.library))
            except Exception as err:  # one failed row must not lose the others
                res = {"error": f"{type(err).__name__}: {err}"}
            results[row.key] = res
            engine.save()
        del fit
        _free()


# --- the report's tables ------------------------------------------------------------------
def _ranks(ppl: dict[str, float | None]) -> dict[str, int]:
    order = sorted((v, k) for k, v in ppl.items() if v is not None and math.isfinite(v))
    return {k: i for i, (_, k) in enumerate(order, 1)}


def _model_results(state: SearchState, model: str | None) -> dict[str, dict]:
    """Results by row key on a transfer model, or (None) on the search model from the test table."""
    if model is not None:
        return state.transfer.get(model, {})
    from .report import SPARSEGPT_R
    out = dict(state.test)
    sgpt = next((r for r in state.candidates if r.seed and r.name == "sparsegpt"), None)
    if sgpt is not None and SPARSEGPT_R in state.test:
        out.setdefault(recipe_key(sgpt.canonical, RECONSTRUCT), state.test[SPARSEGPT_R])
    return out


def display_name(model: str, models: list[str] | tuple[str, ...]) -> str:
    """A path's last part (``runs/x/qwen`` -> ``qwen``), unless two models would share it."""
    short = Path(model).name if ("/" in model and Path(model).expanduser().exists()) else model
    same = [m for m in models if m != model and Path(m).name == short]
    return model if same else short


def model_table(state: SearchState, model: str, rows: list[TransferRow]) -> tuple[str, str]:
    """One transfer model's table (test ppl, ratio to wanda with its band, rank) and a
    one-line verdict for the first top formula."""
    tokens = state.config.test_seqlen - 1
    res = _model_results(state, model)
    wanda = next((r for r in rows if r.rec is not None and r.rec.seed and r.rec.name == "wanda"
                  and r.recipe == MASK), None)
    ref = res.get(wanda.key, {}) if wanda is not None else {}
    ppl = {r.key: res.get(r.key, {}).get("test_ppl") for r in rows if r.rec is not None}
    ranks = _ranks(ppl)
    table = []
    for r in rows:
        got = res.get(r.key, {})
        cell = fmt(got["test_ppl"]) if "test_ppl" in got else "error" if "error" in got else "–"
        ratio = "" if r.rec is None else "(reference)" if r is wanda else ratio_cell(got, ref, tokens)[0]
        table.append([r.name, "(no pruning)" if r.rec is None else r.rec.pretty, r.tag,
                      cell, ratio, ranks.get(r.key, "")])
    top = next((r for r in rows if r.rec is not None and not r.rec.seed), None)
    line = ""
    if top is not None and top.key in ranks:
        _, band = ratio_cell(res.get(top.key, {}), ref, tokens)
        where = display_name(model, state.config.transfer_models)
        vs = compare("wanda", band) if band is not None else "no band (no per-window sums)"
        line = (f"`{top.rec.pretty}` ({top.name.lstrip('★ ')}): rank {ranks[top.key]} of {len(ranks)} "
                f"on {where}; {vs}.")
    return markdown_table(["metric", "formula", "", "test ppl", "× wanda [95%]", "rank"], table), line


def transfer_markdown(state: SearchState, search_model: str) -> str:
    """The report's transfer section: a table per model, then one across models."""
    models = state.config.transfer_models
    if not models:
        return ""
    cfg, rows = state.config, transfer_rows(state)
    f = cfg.fitness
    md = [f"The top formulas and every library metric (mask only, and +R: the OBS weight update with "
          f"layer-wise selection) pruned on other models with this search's settings ({f.get('sparsity', 0):.0%}, "
          f"pattern {f.get('pattern') or 'unstructured'}, group {f.get('group')}, calibration "
          f"{f.get('nsamples')}×{f.get('seqlen')} validation tokens of each model, seed {f.get('seed')}); test: "
          f"{cfg.test_windows or 'all'} WikiText-2 test windows of {cfg.test_seqlen} tokens. Ranks are by test "
          f"ppl among the pruned rows of each table (1 = best); × wanda is the paired ratio to wanda mask-only "
          f"on the same model, with its bootstrap band (see the noise band above)."]
    for model in models:
        failed = next((r["error"] for k, r in state.transfer.get(model, {}).items()
                       if "test_ppl" not in r and _missing(state, model, k)), None)
        if failed is not None:  # said once, not in every row
            md += ["", f"### {display_name(model, models)}", "", f"Model: `{model}`: {failed}. "
                   "`prunedsl search --output DIR --resume` tries it again."]
            continue
        table, line = model_table(state, model, rows)
        md += ["", f"### {display_name(model, models)}", "", f"Model: `{model}`.", "", table]
        if line:
            md += ["", line]
    names = [display_name(search_model, [search_model]) + " (searched)", *(display_name(m, models) for m in models)]
    across = []
    per_model = []
    for model in [None, *models]:
        res = _model_results(state, model)
        wanda = next((r for r in rows if r.rec is not None and r.rec.seed and r.rec.name == "wanda"
                      and r.recipe == MASK), None)
        ref = res.get(wanda.key, {}) if wanda is not None else {}
        ranks = _ranks({r.key: res.get(r.key, {}).get("test_ppl") for r in rows if r.rec is not None})
        per_model.append((res, ref, ranks))
    for r in rows:
        if r.rec is None:
            continue
        cells = []
        for res, ref, ranks in per_model:
            got = res.get(r.key, {})
            b = ref.get("test_ppl")
            cells.append(f"{got['test_ppl'] / b:.3f}× #{ranks[r.key]}" if r.key in ranks and b else "–")
        across.append([r.name, r.rec.pretty, r.tag, *cells])
    md += ["", "### Across models (test ppl / wanda's, and rank)", "",
           markdown_table(["metric", "formula", "", *names], across), "",
           f"On {search_model} only the rows of the test table above were measured (of the +R rows, "
           f"`sparsegpt +R`)."]
    return "\n".join(md)
