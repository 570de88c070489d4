"""The final report of a search: ``DIR/report.md``, ``progress.png``, the graph / lineage.

Test perplexity (WikiText-2 test, docs/design.md §5) is measured here and only here: for the
dense model, the baselines (magnitude, wanda, ria, sparsegpt: the seeds), SparseGPT
proper (``sparsegpt +R``: the sparsegpt mask with the OBS weight update, layer-wise
selection; a reference row, unless the search has that seed itself: ``--recipes search``)
and the best discovered candidates by validation perplexity, each pruned with its recipe
(runtime/job.prune_pass, as prunedsl prune) and the search's own calibration batch. Each
result is saved in the state as soon as it is measured, so a killed report phase resumes
where it stopped.

The verdict is about the **winner**, chosen on the selection slice (``search/selection.py``;
without one, the best discovered formula by validation ppl), and says "beats" only when
the paired bootstrap band of its test ppl ratio excludes 1 (``search/noise.py``). With
``transfer_models`` the top formulas and the library are measured on other models too
(``search/transfer.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..api import parse
from ..dsl.library import BUILTIN, Library
from .hall import atomic_write, best_record, fmt, hall_markdown, label, markdown_table, write_json
from .noise import METHOD, compare, ratio_cell
from .recipe import MASK, Recipe, evaluable, recipe_count_rows, with_tag
from .records import Candidate, SearchState
from .selection import best_seed, run_selection, select_ppl, selection_markdown, winner
from .transfer import measure_transfer, transfer_markdown

BASELINES = ("magnitude", "wanda", "ria", "sparsegpt")
SPARSEGPT_R = "sparsegpt +R"   # SearchState.test key of SparseGPT proper (mask + OBS update)


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i, j in enumerate(order):
            r[j] = float(i)
        return r
    a, b = ranks(xs), ranks(ys)
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a) ** 0.5
    vb = sum((y - mb) ** 2 for y in b) ** 0.5
    return cov / (va * vb) if va and vb else None


def report_candidates(state: SearchState, top: int) -> list[Candidate]:
    """Baselines (in BASELINES order, then other seeds) and the best ``top`` discoveries (and
    the winner of the selection slice, when it is not among them)."""
    recs = state.candidates
    seeds = [r for r in recs if r.seed and r.val_ppl is not None]
    seeds.sort(key=lambda r: (BASELINES.index(r.name) if r.name in BASELINES else 99, r.id))
    found = [r for r in recs if not r.seed and r.val_ppl is not None]
    found.sort(key=lambda r: (r.val_ppl, r.complexity, r.id))
    chosen = winner(state)
    extra = [chosen] if chosen is not None and not chosen.seed and chosen not in found[:top] else []
    return seeds + found[:top] + extra


def measure_test(engine) -> None:
    """Test ppl of the dense model and of every report candidate (saved one by one)."""
    cfg, state = engine.config, engine.state
    todo: list[tuple[str, Candidate | None]] = [("dense", None)]
    todo += [(r.key, r) for r in report_candidates(state, cfg.report_top)]
    sgpt = sparsegpt_seed(state)
    if sgpt is not None and not _sparsegpt_r_seed(state):
        todo.append((SPARSEGPT_R, sgpt))
    for key, rec in todo:
        if key in state.test:
            continue
        what = "dense model" if rec is None else label(rec)
        recipe = Recipe(reconstruct=True, group="layer") if key == SPARSEGPT_R else \
            None if rec is None else evaluable(rec.recipe, engine.library)
        extra = {} if recipe is None else {"recipe": recipe}
        engine.log(f"test perplexity: {what}" + (" with the OBS update (SparseGPT proper)"
                                                  if key == SPARSEGPT_R else ""))
        try:
            res = engine.fitness.test_ppl(None if rec is None else parse(rec.text),
                                          seqlen=cfg.test_seqlen, windows=cfg.test_windows, **extra)
        except Exception as err:  # one failed baseline must not lose the report
            res = {"error": f"{type(err).__name__}: {err}"}
        state.test[key] = res
        engine.save()


def wanda_seed(state: SearchState) -> Candidate | None:
    """The ``wanda`` seed with the search's base recipe (mask-only unless --recipes fixed
    fixes another): the reference of every ratio."""
    seeds = [r for r in state.candidates if r.seed and r.name == "wanda"]
    return next((r for r in seeds if r.recipe == state.config.recipe), seeds[0] if seeds else None)


def sparsegpt_seed(state: SearchState) -> Candidate | None:
    """The ``sparsegpt`` seed candidate (the mask-only one, if there is one), if it was screened."""
    seeds = [r for r in state.candidates if r.seed and r.name == "sparsegpt"]
    return next((r for r in seeds if r.recipe == MASK), seeds[0] if seeds else None)


def _sparsegpt_r_seed(state: SearchState) -> bool:
    """Whether the seeds hold SparseGPT proper (sparsegpt +R(layer), uniform) themselves."""
    return any(r.seed and r.name == "sparsegpt" and r.recipe == Recipe(reconstruct=True, group="layer")
               for r in state.candidates)


def derivation_graph(state: SearchState, library: Library = BUILTIN):
    """A GCoT graph of the fully evaluated candidates (seeds as library nodes), for the
    report of a proposer without one (evolve, enumerate): each formula under the most
    specific sketch it refines, reached from the root by one-production steps. One node per
    formula: its scores are those of its base-recipe candidate where there is one."""
    from ..errors import PruneDSLError
    from .gcot import Graph
    from ..dsl.sketch import parse_sketch
    g = Graph()
    done: set[str] = set()
    for r in sorted((r for r in state.candidates if r.val_ppl is not None),
                    key=lambda r: (r.recipe != state.config.recipe, not r.seed, r.id)):
        if r.text in done:
            continue
        done.add(r.text)
        try:
            node, _ = g.attach(parse_sketch(r.text, library), origin=r.origin)
        except PruneDSLError:
            continue  # e.g. a formula of another shape than the root's
        if r.seed:
            node.origin, node.name = "library", node.name or r.name
        g.record(node.id, ok=True, val_ppl=r.val_ppl, proxy=r.proxy, canonical=r.canonical)
    return g


def lineage(state: SearchState, rec: Candidate, depth: int = 12) -> dict[str, Any]:
    """How ``rec`` was bred: a tree over Proposal.parents (canonical forms)."""
    by = {r.key: r for r in state.candidates}

    def node(r: Candidate, d: int, seen: frozenset[str]) -> dict[str, Any]:
        out = {"id": r.id, "formula": with_tag(r.pretty, r.recipe), "canonical": r.canonical,
               "origin": r.origin, "proxy": r.proxy, "val_ppl": r.val_ppl, "parents": []}
        if r.recipe != MASK:
            out["recipe"] = r.recipe.to_json()
        if d < depth and r.key not in seen:
            for c in r.parents:
                if c in by:
                    out["parents"].append(node(by[c], d + 1, seen | {r.key}))
        return out
    return node(rec, 0, frozenset())


def lineage_text(tree: dict[str, Any]) -> str:
    lines: list[str] = []

    def walk(n, prefix, tail, first):
        scores = f"proxy {fmt(n['proxy'], 4)}" + (f", val ppl {n['val_ppl']:.3f}" if n["val_ppl"] else "")
        head = "" if first else ("└─ " if tail else "├─ ")
        lines.append(f"{prefix}{head}#{n['id']} {n['formula']}   [{n['origin']}; {scores}]")
        kids = n["parents"]
        for i, k in enumerate(kids):
            walk(k, prefix + ("" if first else ("   " if tail else "│  ")), i == len(kids) - 1, False)
    walk(tree, "", True, True)
    return "\n".join(lines)


def plot_progress(state: SearchState, path: Path, baseline: Candidate | None) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    hist = [h for h in state.history if h.best_val_ppl is not None]
    if not hist:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [h.screened for h in hist]
    ax.step(xs, [h.best_val_ppl for h in hist], where="post", label="best validation ppl")
    pts = [h for h in hist if h.val_ppl is not None]
    ax.scatter([h.screened for h in pts], [h.val_ppl for h in pts], s=12, alpha=0.6,
               c=["tab:gray" if h.seed else "tab:orange" for h in pts],
               label="full evaluations (gray: seeds)")
    base = baseline.val_ppl if baseline is not None else None  # None: its evaluation failed
    if base:
        ax.axhline(base, ls="--", c="tab:green", lw=1, label=f"{baseline.name} (seed)")
    ax.set_xlabel("candidates screened by the proxy")
    ax.set_ylabel("validation perplexity")
    best = min(h.best_val_ppl for h in hist)
    ax.set_ylim(best * 0.97, max(best * 1.5, base * 1.1 if base else best * 1.5))
    ax.legend(fontsize=8)
    ax.set_title("prunedsl search: best validation perplexity vs evaluations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def verdict_text(state: SearchState, found: list[Candidate]) -> str:
    """The report's one-paragraph verdict: the winner's test ppl vs wanda and vs the best
    library metric, "beats" only when the paired band excludes 1."""
    test, tokens = state.test, state.config.test_seqlen - 1
    chosen = winner(state)
    if not found:
        return "No formula beyond the seeds was fully evaluated."
    lead = ""
    if chosen is not None and chosen.seed:
        lead = (f"The winner on the selection slice is a library metric, `{chosen.name}`: no discovered "
                f"formula beat it on validation text the search never saw. ")
        target, what = found[0], "The best discovered formula by validation ppl"
    elif chosen is not None:
        target, what = chosen, "The winner (chosen on the selection slice, validation windows the search never saw)"
    else:
        target, what = found[0], "The best discovered formula (by validation ppl)"
    res = test.get(target.key, {})
    shown = with_tag(target.pretty, target.recipe)
    if "test_ppl" not in res:
        return lead + f"{what}, `{shown}`, has no test perplexity."
    parts = []
    seed = best_seed(state)
    wanda = wanda_seed(state)
    refs = [(wanda, "wanda")] if wanda is not None else []
    if seed is not None and seed is not wanda:
        refs.append((seed, f"the best library candidate by validation ppl ({with_tag(seed.name, seed.recipe)})"))
    for ref, name in refs:
        cell, band = ratio_cell(res, test.get(ref.key, {}), tokens)
        if band is not None:
            parts.append(f"**{compare(name, band)}**")
        elif cell != "–":
            parts.append(f"{cell} {name}'s (no per-window sums: no noise band)")
    return (lead + f"{what}, `{shown}`, has test ppl {res['test_ppl']:.3f}: "
            + ("; ".join(parts) or "no library metric to compare with") + ".")


def _ratio_cells(state: SearchState, r: Candidate, res: dict[str, Any]) -> list[str]:
    """The test table's "× best seed" and "× wanda" cells of one row."""
    tokens = state.config.test_seqlen - 1
    cells = []
    for ref in (best_seed(state), wanda_seed(state)):
        if ref is None:
            cells.append("–")
        elif ref is r and res is state.test.get(r.key):
            cells.append("(reference)")
        else:
            cells.append(ratio_cell(res, state.test.get(ref.key, {}), tokens)[0])
    return cells


def gradient_row(engine, f: dict) -> str:
    """On/off, why (``--gradients auto``'s decision) and the gradient pass's time in this process."""
    note = engine.config.cli.get("gradients_note") if isinstance(engine.config.cli, dict) else None
    text = note or ("on (--gradients)" if f.get("gradients") else "off")
    seconds = getattr(engine, "fitness_timings", {}).get("gradients")
    return text + (f"; the gradient pass took {seconds:.1f} s" if seconds is not None else "")


def write_report(engine) -> None:
    cfg, state = engine.config, engine.state
    out = Path(cfg.output)
    run_selection(engine)  # nothing to do unless finalists were added (e.g. a larger --select-top)
    measure_test(engine)
    measure_transfer(engine)
    recs = state.candidates
    c = state.counters
    f = cfg.fitness
    best = best_record(recs)
    wanda = wanda_seed(state)
    pattern = "unstructured" if not f.get("pattern") else f"{f['pattern'][0]}:{f['pattern'][1]}"
    test = state.test

    def tp(r: Candidate | None) -> float | None:
        t = test.get("dense" if r is None else r.key, {})
        return t.get("test_ppl")
    rows = []
    sgpt = sparsegpt_seed(state)
    chosen = winner(state)
    selecting = bool(state.selection)
    star = chosen if chosen is not None else best

    def sel(r: Candidate) -> list[str]:
        return [fmt(select_ppl(state, r))] if selecting else []
    for r in report_candidates(state, cfg.report_top):
        if r.seed:
            name = (r.name + (" (mask only)" if r is sgpt and r.recipe == MASK else "")
                    + (" ★ winner" if r is chosen else ""))
        else:
            name = r.name or ("★ winner" if r is chosen else "★ discovered" if r is star else "discovered")
        res = test.get(r.key, {})
        rows.append([name, with_tag(r.pretty, r.recipe), r.complexity, fmt(r.proxy, 4), fmt(r.val_ppl),
                     *sel(r), fmt(tp(r)), *_ratio_cells(state, r, res)])
        if r is sgpt and SPARSEGPT_R in test:
            t = test.get(SPARSEGPT_R, {})
            rows.append([f"{SPARSEGPT_R} (OBS update)", r.pretty + " + OBS weight update, layer-wise",
                         "", "", "", *([""] if selecting else []), fmt(t.get("test_ppl")) if "test_ppl" in t else
                         "error" if "error" in t else "–", *_ratio_cells(state, r, t)])
    rows.append(["dense", "(no pruning)", "", "", "", *([""] if selecting else []), fmt(tp(None)), "", ""])
    found = [r for r in report_candidates(state, cfg.report_top) if not r.seed]
    found.sort(key=lambda r: (r.val_ppl, r.complexity, r.id))
    verdict = verdict_text(state, found)
    evald = [r for r in recs if r.val_ppl is not None]
    rho = _spearman([r.proxy for r in evald], [r.val_ppl for r in evald])
    proxy_s = [r.proxy_seconds for r in recs if r.proxy_seconds > 0]  # 0: a recipe variant's, reused
    full_s = [r.full["prune_seconds"] + r.full.get("allocation_seconds", 0.0) + r.full["eval_seconds"]
              for r in recs if r.full and "val_ppl" in r.full]
    md = [f"# prunedsl search report: {f['model']} at {f['sparsity']:.0%} {pattern} (group {f['group']})", ""]
    md.append(f"Proposer `{cfg.proposer}`, budget {cfg.budget}, {cfg.full_evals} full evaluations, "
              f"seed {f['seed']}; {state.seconds / 60:.1f} min in total.")
    md += ["", "## Best formulas vs baselines (WikiText-2 test perplexity)", "",
           markdown_table(["metric", "formula", "complexity", "proxy", "val ppl",
                           *(["select ppl"] if selecting else []), "test ppl",
                           f"× best seed{f' ({best_seed(state).name})' if best_seed(state) else ''} [95%]",
                           "× wanda [95%]"], rows), "",
           verdict, "",
           f"Test: {cfg.test_windows or 'all'} windows of {cfg.test_seqlen} tokens (docs/design.md §5), every model "
           f"pruned with the search's calibration batch ({f['nsamples']}×{f['seqlen']} validation tokens). "
           f"Validation ppl: {f['val_windows']} held-out validation windows of {f['seqlen']} tokens, disjoint "
           f"from the calibration windows. `sparsegpt (mask only)` is the OBS saliency as a metric "
           f"(the mask only, no weight update, selected like every other metric): what the search "
           f"competes with. `{SPARSEGPT_R}` is SparseGPT proper (the same saliency with the OBS weight update, "
           f"one threshold per 128-column block over all rows of the layer). "
           + ("Recipes were searched (`--recipes search`): a candidate's recipe (+R: the OBS weight "
              "update with its selection group; alloc: an allocation rule's per-block sparsity) "
              "follows its formula, and its test ppl is measured with it."
              if cfg.recipes == "search" else
              "Every candidate used the recipe " + (f"`{cfg.recipe.tag()}`" if cfg.recipe != MASK
                                                     else "mask-only, uniform") + " (`--recipes fixed`).")
           + (f" Select ppl: the {f.get('select_windows')} selection-slice windows (next section)."
              if selecting else ""), "", METHOD + " The best seed is the library candidate (formula and "
           "recipe) with the lowest validation ppl."]
    if selecting:
        md += ["", "## Final choice (selection slice)", "", selection_markdown(state)]
    if cfg.transfer_models:
        md += ["", "## Transfer to other models (WikiText-2 test perplexity)", "",
               transfer_markdown(state, f["model"])]
    md += ["", "## Hall of fame (Pareto front: complexity vs validation ppl)", "", hall_markdown(recs)]
    md += ["", "## How the best formula was found", ""]
    if best is not None:
        if hasattr(engine.proposer, "graph_text"):
            graph_json, graph_text = engine.proposer.graph_json(), engine.proposer.graph_text()
            what = "the graph the proposer worked on"
        else:  # evolve / enumerate: the same graph, built afterwards from the evaluated formulas
            g = derivation_graph(state, engine.library)
            graph_json, graph_text = g.graph_json(), g.graph_text()
            what = (f"built for the report: the `{cfg.proposer}` proposer does not work on sketches, so this "
                    "graph derives every fully evaluated formula from the default sketches by one-production "
                    "refinements; how each was actually bred is the lineage below")
        write_json(out / "graph.json", graph_json)
        md += [f"GCoT graph (sketches with typed holes, one-production refinement edges; {what}; "
               "JSON in `graph.json`):", "", "```", graph_text, "```", ""]
        target = found[0] if found else best  # the best *discovered* formula, if any
        tree = lineage(state, target)
        write_json(out / "lineage.json", tree)
        md += [f"Lineage of the best discovered formula, `{target.pretty}` (each node lists the "
               "candidates it was bred from, via `Proposal.parents`; JSON in `lineage.json`):", "",
               "```", lineage_text(tree), "```"]
    md += ["", "## Progress", ""]
    if plot_progress(state, out / "progress.png", wanda):
        md += ["![best validation ppl vs evaluations](progress.png)"]
    else:
        md += ["(matplotlib is not installed: no plot)"]
    md += ["", "## Counts and timings", "", markdown_table(["", ""], [
        ["proposals (seeds + proposer)", c.proposed],
        ["failed (parse, type, non-finite, …)", c.failed],
        ["deduplicated (canonical form seen before)", c.duplicates],
        ["screened by the proxy (unique)", f"{c.screened} ({c.seeds} seeds)"],
        ["proxy twins (same masks as a simpler candidate; not fully evaluated)", c.twins],
        ["fully evaluated", c.full_evals],
        *recipe_count_rows(recs),
        ["proxy time per candidate (mean)", f"{sum(proxy_s) / max(1, len(proxy_s)):.2f} s"],
        ["full evaluation time (mean)", f"{sum(full_s) / max(1, len(full_s)):.1f} s" if full_s else "–"],
        ["Spearman(proxy, val ppl) over full evaluations", fmt(rho, 3)],
        ["G (gradients)", gradient_row(engine, f)],
        ["proxy settings", f"{f['proxy_blocks'] or 'all'} blocks, {f['proxy_rows']:g} of rows, "
                           f"rank {f['proxy_rank'] or 'exact'}"],
    ])]
    replies = getattr(engine.proposer, "reply_stats", None)
    if replies:  # the llm proposer: what its requests gave (search/reply_stats.py)
        from .reply_stats import reply_markdown
        view = getattr(engine.proposer, "prompt_view", "?")
        md += ["", f"## LLM replies (prompt view `{view}`)", "", reply_markdown(replies)]
    top = sorted([r for r in recs if not r.seed], key=lambda r: r.proxy)[:10]
    md += ["", "## Best candidates by proxy", "", markdown_table(
        ["#", "formula", "complexity", "proxy", "val ppl", "origin"],
        [[r.id, with_tag(r.pretty, r.recipe), r.complexity, fmt(r.proxy, 4), fmt(r.val_ppl), r.origin]
         for r in top])]
    if state.skipped_seeds:
        md += ["", "Library metrics not used as seeds: " + "; ".join(
            f"`{k}` ({v})" for k, v in state.skipped_seeds.items()) + "."]
    fails = state.failures[:5]
    if fails:
        md += ["", "## Some failed proposals", ""]
        for x in fails:
            md += [f"- `{x.input[:100]}` ({x.origin}): {x.error.splitlines()[0]}"]
    atomic_write(out / "report.md", "\n".join(md) + "\n")
    engine.log(f"report: {out / 'report.md'}")
    engine.log(json.dumps({"best": best and with_tag(best.pretty, best.recipe),
                           "winner": chosen and with_tag(chosen.pretty, chosen.recipe), "verdict": verdict},
                          ensure_ascii=False))
