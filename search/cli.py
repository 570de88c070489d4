"""``prunedsl search``: discover pruning metrics (wired into ``prunedsl.cli``).

    prunedsl search --model smollm2-135m --sparsity 0.6 --proposer evolve --budget 300 \\
        --full-evals 20 --output runs/evolve60
    prunedsl search --output runs/evolve60 --resume      # after a crash or Ctrl-C

A candidate is a formula with a recipe (search/recipe.py): ``--recipes search`` (default)
searches the OBS weight update (+R, with its row/layer selection) and the allocation rule
with the formula; ``--recipes fixed`` gives every candidate one recipe: the formula alone
(mask-only, uniform: the search before recipes), or the one ``--reconstruct`` and/or
``--allocation RULE`` fix (they imply ``--recipes fixed``; with ``--recipes search`` they
are an error).

On ``--resume`` every setting comes from DIR/state.json; settings given again must
agree with it, except ``--budget``/``--full-evals`` (which may grow), the report ones and
the ``--llm-*`` ones. The LLM endpoint settings (``--llm-base-url``, resolved from
$OPENAI_BASE_URL when not given, ``--llm-model``, timeout, retries, temperature, max
outage) are saved, so a plain ``--resume`` talks to the same endpoint; given again on
``--resume`` they override the saved ones. The API key is never saved (it is read from
$OPENAI_API_KEY each time). The device options are saved too: ``--device``, ``--offload``
and ``--calib-batch`` may change on ``--resume``, ``--dtype`` may not (search/device_state.py).
A search saved before ``--select-windows`` existed resumes with 0 (no selection slice), so
its calibration windows stay where they were.
"""
from __future__ import annotations

import argparse
import math
import json
import os
import sys
from dataclasses import fields, replace

from ..config import GROUPS
from .recipe import RECIPE_MODES
from ..errors import ConfigError, SearchError
from .device_state import (DEVICE_DEFAULTS, DEVICE_OVERRIDABLE, check_model_dtype, check_resumed_dtype,
                           device_options, recording_model_dtype)

EPILOG = """examples:
  prunedsl search --model smollm2-135m --sparsity 0.6 --proposer evolve --budget 300 --full-evals 20 --output runs/ev60
  prunedsl search --model smollm2-135m --sparsity 0.5 --proposer enumerate --max-size 6 --budget 200 --output runs/enum
  prunedsl search --model smollm2-135m --pattern 2:4 --proposer llm --llm-base-url http://127.0.0.1:8000/v1 --budget 50 --output runs/llm
  prunedsl search --output runs/ev60 --resume
  prunedsl search --model smollm2-135m --sparsity 0.6 --recipes fixed --output runs/mask   # formulas only
  prunedsl search --model smollm2-135m --sparsity 0.6 --reconstruct --output runs/plusR    # every candidate +R
  prunedsl search --model smollm2-135m --sparsity 0.6 --budget 300 --full-evals 40 --workers 4 --output runs/ray
  prunedsl search ... --workers 16 --ray-address auto      # on a running Ray cluster (README: Search on many workers)
  prunedsl search ... --select-windows 32 --transfer-models gemma3-270m,qwen2.5-coder-0.5b

Files in DIR, rewritten after every evaluation: state.json (everything, for --resume),
hall.json / hall.md (the Pareto front); at the end report.md, progress.png, lineage.json
and graph.json (the GCoT graph: the llm proposer's own, or built from the evaluated formulas).
The final choice: the --select-top best formulas by validation ppl and the best library metric
are measured on --select-windows more validation windows the search never read; the best
there is the winner (hall.md and report.md show both). The report's test table gives each
row's test ppl ratio to the best library metric and to wanda with a paired bootstrap band,
and says "beats" only when the band excludes 1.
An LLM endpoint that fails is waited for (up to --llm-max-outage), then the search stops,
saved; `--resume` continues with the saved --llm-* settings.
"""

# option -> (default, part of the fitness: must match on --resume)
FITNESS_DEFAULTS = {"model": None, "sparsity": None, "pattern": "unstructured", "group": "row",
                    "nsamples": 16, "seqlen": 256, "val_windows": 16, "select_windows": 16, "seed": 0,
                    "calib_data": None, "eval_data": None,
                    "data_dir": None, "proxy_blocks": 8, "proxy_rows": 0.25, "proxy_rank": 64,
                    "gradients": "auto", "structure": None, "ratio": None, "heads_mode": "kv_groups",
                    "structure_blocks": None}
SEARCH_DEFAULTS = {"proposer": "evolve", "budget": 100, "full_evals": 10, "batch": 16,
                   "max_proposals": None, "test_windows": 40, "test_seqlen": 512, "report_top": 3,
                   "select_top": 5, "transfer_models": [], "population": 32, "max_size": None, "library": [],
                   "recipes": "search", "reconstruct": False, "allocation": None, "time_limit": None,
                   "proposer_seed": None}
GROWABLE = {"budget", "full_evals", "max_proposals", "test_windows", "test_seqlen", "report_top",
            "select_top", "transfer_models", "time_limit"}
# a saved search that predates an option resumes with the value that keeps what it did
SAVED_BEFORE = {"select_windows": 0, "recipes": "fixed", "gradients": False}
try:
    from .llm import LLM_DEFAULTS  # --llm-* settings: saved, and may be given again on --resume
except ImportError:  # the llm proposer is optional
    LLM_DEFAULTS = {}
OVERRIDABLE = GROWABLE | set(LLM_DEFAULTS) | DEVICE_OVERRIDABLE

ENUMERATE_HELP = ("enumerate: every formula up to --max-size AST nodes over a fixed subset of the "
                  "language (see `prunedsl/search/enumerate.py`): the statistics, the constants 1 2 0.5, "
                  "+ - * / min max, ^ 2 0.5 -1, abs sqrt log exp sq sigmoid tanh, negation, minmax, "
                  "row_/col_ sum mean max std and whole-tensor mean max std; subexpressions equal on "
                  "one fixed random sample of the statistics (or non-finite there) are dropped")


def _seconds(text: str) -> float:
    """--time-limit: a positive, finite number of seconds (else a usage error saying so)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"wants a positive number of seconds, got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="search for new pruning metrics (evolve, enumerate, llm)",
                              description="Search for pruning metrics: proposals are parsed and "
                              "type-checked, deduplicated by canonical form, screened by a proxy "
                              "(layer-wise output error from cached Gram matrices) and the best are "
                              "pruned for real and scored by validation perplexity.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    S = argparse.SUPPRESS  # defaults are filled in later, so --resume can tell what was given
    g = p.add_argument_group("task")
    g.add_argument("--model", default=S, help="alias (smollm2-135m, gemma3-270m), .gguf, directory or hub id")
    g.add_argument("--sparsity", type=float, default=S, help="fraction pruned per layer (N:M sets it)")
    g.add_argument("--pattern", default=S, help="unstructured (default) or N:M, e.g. 2:4")
    g.add_argument("--group", choices=GROUPS, default=S, help="comparison group (default row)")
    g.add_argument("--library", action="append", default=S, metavar="FILE", help="extra metric definitions")
    g.add_argument("--structure", choices=("channels", "heads", "blocks"), default=S,
                   help="search structure scores (docs/structures.md) for removing this structure "
                        "instead of per-weight metrics; needs --ratio (search/structure_mode.py)")
    g.add_argument("--ratio", type=float, default=S, metavar="R",
                   help="with --structure: fraction of the structures removed (per block; blocks: of all)")
    g.add_argument("--heads-mode", choices=("kv_groups", "query_heads"), default=S,
                   help="with --structure heads: whole KV groups (default) or query heads")
    g.add_argument("--structure-blocks", default=S, metavar="START:END",
                   help="with --structure channels|heads: remove structures only from these decoder blocks "
                        "(half-open, e.g. 3:-2), as prunedsl prune --structure-blocks does")
    g = p.add_argument_group("search")
    g.add_argument("--proposer", choices=("evolve", "enumerate", "llm"), default=S,
                   help="default evolve; " + ENUMERATE_HELP.replace("%", "%%"))
    g.add_argument("--budget", type=int, default=S, metavar="N", help="new candidates screened by the proxy (default 100)")
    g.add_argument("--full-evals", type=int, default=S, metavar="K", help="candidates pruned for real (default 10)")
    g.add_argument("--batch", type=int, default=S, help="proposals per round (default 16)")
    g.add_argument("--max-proposals", type=int, default=S, help="stop after this many proposals (default 5×budget+100)")
    g.add_argument("--proposer-seed", type=int, default=S, metavar="N",
                   help="evolve's RNG seed (default: --seed), to repeat a search on the same calibration "
                        "and validation windows with another random proposer")
    g.add_argument("--time-limit", type=_seconds, default=S, metavar="SECONDS",
                   help="wall clock for the seeds and the search (proposals, screening, full evaluations; "
                        "the selection slice and the report come after): once spent, no proposal is asked "
                        "for and no full evaluation started; --resume with a larger value continues")
    g.add_argument("--seed", type=int, default=S, help="calibration windows, proxy rows, evolve RNG (default 0)")
    g.add_argument("--population", type=int, default=S, help="evolve: parents kept (default 32)")
    g.add_argument("--max-size", type=int, default=S, help="largest formula in AST nodes (evolve 20, enumerate 7)")
    g.add_argument("--gradients", action="store_const", const=True, default=S,
                   help="offer G (one backward pass per calibration window, once per search). Default "
                        "auto: on when it costs at most a fifth of --full-evals (search/gradient_budget.py)")
    g.add_argument("--no-gradients", dest="gradients", action="store_const", const=False, default=S,
                   help="do not offer G")
    g.add_argument("--output", required=True, metavar="DIR", help="where state, hall of fame and report go")
    g.add_argument("--resume", action="store_true", help="continue the search saved in DIR")
    g = p.add_argument_group("recipes (how a candidate's mask is applied; search/recipe.py)")
    g.add_argument("--recipes", choices=RECIPE_MODES, default=S,
                   help="search (default): search the OBS update (+R, row/layer selection) and the "
                        "allocation rule with the formula; fixed: one recipe for every candidate, the "
                        "formula alone unless --reconstruct/--allocation")
    g.add_argument("--reconstruct", action="store_true", default=S,
                   help="fix +R (the OBS weight update, group layer unless --group) for every candidate; "
                        "implies --recipes fixed")
    g.add_argument("--allocation", default=S, metavar="RULE",
                   help="fix an allocation rule (owl, alpha, sdsa, or a rule's text) for every "
                        "candidate; implies --recipes fixed")
    g = p.add_argument_group("fitness")
    g.add_argument("--nsamples", type=int, default=S, help="calibration windows (default 16)")
    g.add_argument("--seqlen", type=int, default=S, help="tokens per calibration/validation window (default 256)")
    g.add_argument("--val-windows", type=int, default=S, help="held-out validation windows (default 16)")
    g.add_argument("--select-windows", type=int, default=S, metavar="N",
                   help="the next N validation windows, read only at the end to choose the winner among "
                        "the finalists (default 16; 0 = no selection slice, the fitness winner)")
    g.add_argument("--proxy-blocks", type=int, default=S, help="decoder blocks screened, evenly spaced; 0 = all (default 8)")
    g.add_argument("--proxy-rows", type=float, default=S, help="fraction of output rows measured (default 0.25)")
    g.add_argument("--proxy-rank", type=int, default=S, help="Gram rank for the proxy; 0 = exact (default 64)")
    g.add_argument("--calib-data", default=S, metavar="PATH", help="text file to calibrate on")
    g.add_argument("--eval-data", default=S, metavar="FILE",
                   help="task-specific search: the fitness reads the first --val-windows × --seqlen tokens "
                        "of this text instead of WikiText-2 validation (the same file as --calib-data "
                        "calibrates on the rest of it only)")
    g.add_argument("--data-dir", default=S, help="WikiText-2 directory (wiki.valid.tokens, wiki.test.raw)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); "
                   "with --workers, CPUs per worker (default 1)")
    g = p.add_argument_group("workers (not saved: give them again on --resume)")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="full evaluations on N Ray actors, each with its own model (default 1: in this "
                        "process, without Ray); needs prunedsl[distributed]")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to run the workers on (auto, ray://HOST:10001, HOST:6379; default: "
                        "$RAY_ADDRESS, else a local Ray on this machine)")
    g.add_argument("--worker-gpus", type=float, default=None, metavar="F",
                   help="GPUs per worker (default 1 when the cluster has GPUs, else 0; 0.5 puts two on a GPU)")
    g = p.add_argument_group("report")
    g.add_argument("--test-windows", type=int, default=S, help="WikiText-2 test windows (default 40)")
    g.add_argument("--test-seqlen", type=int, default=S, help="tokens per test window (default 512)")
    g.add_argument("--report-top", type=int, default=S, help="discovered formulas evaluated on test (default 3)")
    g.add_argument("--select-top", type=int, default=S, metavar="K",
                   help="discovered formulas (best by validation ppl) measured on the selection slice, "
                        "with the best library candidate (default 5)")
    g.add_argument("--transfer-models", default=S, metavar="A,B",
                   help="after the test table, prune the winner, the next --report-top formulas (each with "
                        "its recipe) and every library metric (mask only and +R) on these models too (aliases, "
                        "paths or hub ids); one table per model")
    g.add_argument("--no-report", action="store_true", help="stop after the search (no test perplexity)")
    g.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    from ..cli.output import add_format_option
    add_format_option(g)
    g.add_argument("--quiet", action="store_true", help="no per-candidate log lines")
    try:
        from .llm import add_llm_arguments
    except ImportError:  # the llm proposer is optional
        pass
    else:
        add_llm_arguments(p.add_argument_group("llm proposer"), suppress=True)
    from ..cli.device_options import add_device_arguments
    add_device_arguments(p, default=S, note="saved with the search: on --resume the saved ones apply unless given\n"
                     "again; all but --dtype may change (search/device_state.py)")
    p.set_defaults(handler=cmd_search)
    return p


def _settings(args, saved: dict | None) -> dict:
    """Merged settings: given > saved > defaults; conflicts with a saved search are errors."""
    defaults = {**FITNESS_DEFAULTS, **SEARCH_DEFAULTS, **LLM_DEFAULTS, **DEVICE_DEFAULTS}
    given = {k: getattr(args, k) for k in defaults if hasattr(args, k)}
    if saved is None:
        merged = {**defaults, **given}
        if merged["reconstruct"] or merged["allocation"] is not None:  # they fix the recipe
            if given.get("recipes") == "search":
                raise SearchError("--reconstruct and --allocation fix one recipe for every candidate; "
                                  "--recipes search searches it",
                                  hint="leave out --recipes (or give --recipes fixed), or leave out "
                                       "--reconstruct/--allocation to search them")
            merged["recipes"] = "fixed"
        for k in ("model", "sparsity"):
            if merged[k] is None and not (k == "sparsity" and (merged["pattern"] != "unstructured"
                                                               or merged.get("structure"))):
                raise SearchError(f"--{k} is required for a new search")
        if merged["gradients"] == "auto":  # decided once, saved: --resume keeps the answer
            from .gradient_budget import decide_gradients
            merged["gradients"], merged["gradients_note"] = decide_gradients(
                nsamples=merged["nsamples"], val_windows=merged["val_windows"],
                full_evals=merged["full_evals"], offload=bool(merged.get("offload")))
        if merged["proposer"] == "llm" and LLM_DEFAULTS and merged["llm_base_url"] is None:
            merged["llm_base_url"] = os.environ.get("OPENAI_BASE_URL") or None  # what it talks to
        return merged
    merged = {**defaults, **SAVED_BEFORE, **saved}
    for k, v in given.items():
        if k == "dtype":
            check_resumed_dtype(v, saved)
        elif k not in OVERRIDABLE and v != saved.get(k):
            raise SearchError(f"--{k.replace('_', '-')} {v} differs from the saved search ({saved.get(k)})",
                              hint="leave it out with --resume, or start a new search in another --output")
        merged[k] = v
    return merged


def cmd_search(args) -> int:
    from ..dsl.library import Library
    from ..config import check_sparsity, parse_pattern, resolve_sparsity
    from .engine import Engine, SearchConfig
    from ..cli.output import output_format, print_table
    from .hall import HALL_HEADER, best_record, hall_rows, label, read_state
    fmt = output_format(args)

    saved_state = read_state(args.output) if args.resume else None
    if args.resume and saved_state is None:
        raise SearchError(f"nothing to resume in {args.output} (no state.json)")
    saved = saved_state.config.cli if saved_state else None
    s = _settings(args, saved)
    if s.get("structure"):  # structure scores: search/structure_mode.py
        given = [o for o in ("select_windows", "select_top", "transfer_models") if hasattr(args, o)]
        if given:
            raise SearchError(f"--{given[0].replace('_', '-')} applies to metric searches, not to --structure")
        if s["reconstruct"] or s["allocation"] is not None:
            raise SearchError("--reconstruct and --allocation apply to per-weight metric searches, "
                              "not to --structure")
        from .structure_mode import run_structure_search
        return run_structure_search(args, s)
    from .transfer import parse_transfer_models
    transfer = parse_transfer_models(s["transfer_models"], s["model"])  # before anything is loaded
    s["transfer_models"] = list(transfer)
    if transfer and args.no_report:
        raise SearchError("--transfer-models is measured in the report; it does nothing with --no-report")
    if s["select_windows"] < 0 or s["select_top"] < 0:
        raise SearchError("--select-windows and --select-top must be ≥ 0 (--select-windows 0: no selection slice)")
    if s.get("structure_blocks") is not None:
        raise SearchError("--structure-blocks only applies with --structure channels|heads",
                          hint="add --structure channels --ratio R, or leave it out")
    pattern = parse_pattern(s["pattern"])
    try:
        sparsity = check_sparsity(resolve_sparsity(s["sparsity"], pattern), dense_allowed=False)
    except ConfigError as err:
        raise err.for_cli(SearchError) from None
    if s["budget"] < 0 or s["full_evals"] < 0 or s["batch"] < 1:
        raise SearchError("--budget and --full-evals must be ≥ 0 and --batch ≥ 1")
    library = Library.from_files(s["library"])
    if args.workers < 1:
        raise SearchError(f"--workers is {args.workers}; it must be at least 1")
    if args.workers == 1 and (args.ray_address or args.worker_gpus is not None):
        raise SearchError("--ray-address and --worker-gpus place Ray workers; they need --workers N with N ≥ 2")
    if args.workers > 1:
        from .ray_pool import import_ray
        import_ray()  # a missing extra is an error before anything is loaded
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    from .fitness import BASE_STATISTICS, Fitness, FitnessSettings
    fs = FitnessSettings(**{f.name: s[f.name] for f in fields(FitnessSettings)
                            if f.name not in ("sparsity", "pattern")}, sparsity=sparsity, pattern=pattern)
    available = BASE_STATISTICS | ({"G"} if fs.gradients else frozenset())
    proposer = make_proposer(s, args, available, library)
    base = saved_state.config.recipe if saved_state else base_recipe(s, args, library, fs)
    config = SearchConfig(output=args.output, proposer=s["proposer"], budget=s["budget"],
                          full_evals=s["full_evals"], batch=s["batch"], max_proposals=s["max_proposals"],
                          library_texts=library.texts, test_windows=s["test_windows"],
                          test_seqlen=s["test_seqlen"], report_top=s["report_top"],
                          report=not args.no_report, fitness=fs.to_dict(), cli=s,
                          max_outage=s.get("llm_max_outage") or 600.0, select_top=s["select_top"],
                          transfer_models=transfer, recipes=s["recipes"], recipe=base,
                          time_limit=s["time_limit"])

    def stderr(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    bars = not args.quiet and sys.stderr.isatty()
    device, placement = search_placement(s)
    log = (lambda msg: None) if args.quiet else stderr
    pool_factory = None
    if args.workers > 1:
        def pool_factory(fitness):
            from .ray_pool import RayPool
            # the workers load the model in the dtype this process loaded it in: one dtype per search
            return RayPool(fs, args.workers, address=args.ray_address, threads=args.threads,
                           gpus=args.worker_gpus, log=log, device={**device, "dtype": s["model_dtype"]})
    make_fitness = recording_model_dtype(lambda: Fitness(fs, progress=bars, log=stderr, placement=placement,
                                                         calib_batch=device["calib_batch"]), s)

    def transfer_fitness(model: str):  # the report's transfer tables: full evaluations only
        return Fitness(replace(fs, model=model), progress=bars, log=stderr, placement=placement,
                       calib_batch=device["calib_batch"], screening=False)
    engine = Engine(config, make_fitness, proposer, log=log, pool_factory=pool_factory,
                    transfer_fitness=transfer_fitness)
    summary = engine.run(resume=args.resume)
    if fmt == "json":
        print(json.dumps(summary, ensure_ascii=False, default=str))
        return 0
    best = summary["best"]
    c = summary["counters"]
    print(f"prunedsl search: {s['model']} | {sparsity:.0%} {s['pattern']} | {s['proposer']} | "
          f"{c['screened']} screened ({c['seeds']} seeds), {c['duplicates']} deduplicated, {c['failed']} failed, "
          f"{c['full_evals']} full evals | best val ppl "
          + (f"{best['val_ppl']:.3f} ({label(best_record(engine.state.candidates))})" if best else "–"))
    print()
    rows = hall_rows(engine.state.candidates)
    if rows:
        print_table(HALL_HEADER, rows, fmt)
    else:
        print("(no candidate fully evaluated yet)")
    if summary["winner"]:
        w = summary["winner"]
        print(f"\nwinner (selection slice, never seen by the search): {w['pretty']} | select ppl "
              f"{w['select_ppl']:.3f} | val ppl {w['val_ppl']:.3f}")
    if summary["report"]:
        print(f"\nreport: {summary['report']}")
    return 0


def base_recipe(s: dict, args, library, fs):
    """The recipe of every candidate with --recipes fixed (normal form): mask-only, or +R
    (the --group given, else prune's default "layer") and/or the --allocation rule."""
    from .recipe import MASK, Recipe, normalize
    if s["recipes"] != "fixed":
        return MASK
    recipe = Recipe(reconstruct=s["reconstruct"], group=s["group"] if hasattr(args, "group") else None,
                    allocation=s["allocation"])
    try:
        return normalize(recipe, group=fs.group, sparsity=fs.sparsity, pattern=fs.pattern, library=library)
    except ConfigError as err:
        raise err.for_cli(SearchError) from None


def search_placement(s: dict):
    """The device options of the merged settings and their ``Placement``; a dtype known before
    the load is checked against the saved search's here (``device_state.check_model_dtype``)."""
    from ..runtime.device import resolve_placement
    from ..runtime.job import check_calib_batch
    device = device_options(s)
    try:
        check_calib_batch(device["calib_batch"])
        placement = resolve_placement(device["device"], device["dtype"], device["offload"])
    except ConfigError as err:
        raise err.for_cli(SearchError) from None
    if placement.dtype is not None:
        check_model_dtype(s, placement.dtype)
    return device, placement


def make_proposer(s: dict, args, available, library):
    from .grammar import Vocabulary
    vocab = Vocabulary.from_available(available)
    name = s["proposer"]
    if name == "evolve":
        from .evolve import EvolveProposer
        from .recipe import RecipeSpace
        space = RecipeSpace.from_library(library, s["group"]) if s["recipes"] == "search" else None
        seed = s["seed"] if s.get("proposer_seed") is None else s["proposer_seed"]
        return EvolveProposer(seed=seed, vocab=vocab, population=s["population"],
                              max_size=s["max_size"] or 20, library=library, recipes=space)
    if name == "enumerate":
        from .enumerate import EnumerateProposer
        return EnumerateProposer(vocab=vocab, group=s["group"], max_size=s["max_size"] or 7,
                                 library=library)
    try:
        from .llm import LLMProposer
    except ImportError as err:
        raise SearchError(f"the llm proposer is not available ({err})",
                          hint="pip install openai") from None
    from .engine import seed_metrics
    from ..api import parse
    seeds = [text for _, text in seed_metrics(library)
             if parse(text, library=library).requires <= available]
    return LLMProposer.from_args(s, seeds=seeds, available=frozenset(available), library=library,
                                 group=s["group"])
