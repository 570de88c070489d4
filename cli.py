"""The ``prunedsl`` command line.

    prunedsl check "sqrt(|W| * ‖X‖)"            # parse, type-check, simplify, print
    prunedsl metrics                             # the built-in library
    prunedsl prune --model smollm2-135m --metric wanda --sparsity 0.5
    prunedsl eval --model smollm2-135m --eval-windows 40

Results go to stdout (a one-line summary, then a Markdown table, or one JSON object with
``--json``); logs and progress bars go to stderr. Bad input exits with status 2 and a
message with a caret under the offending part of the formula. Heavy imports (torch,
transformers) happen inside the command handlers so ``check`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import PruneDSLError

EXAMPLES = {
    "check": """examples:
  prunedsl check "|W| * ‖X‖"
  prunedsl check "sqrt(abs(W) * norm(X))" --group row --json
  prunedsl check "ria(a = 0.3)"
  prunedsl check owl                                   # an allocation rule (per-block sparsity)
  prunedsl check --allocation "spread(skew(score) - depth, 0.1)"
""",
    "metrics": """examples:
  prunedsl metrics
  prunedsl metrics --json
""",
    "prune": """examples:
  prunedsl prune --model smollm2-135m --metric wanda --sparsity 0.5
  prunedsl prune --model smollm2-135m --metric "|W| * ‖X‖ ^ 0.5" --sparsity 0.6 --group layer
  prunedsl prune --model smollm2-135m --metric magnitude --pattern 2:4 --output out/mag24
  prunedsl prune --model smollm2-135m --metric wanda --sparsity 0.7 --allocation owl
  prunedsl prune --model smollm2-135m --metric wanda --pattern 4:8 --allocation "sdsa(lam = 0.1)"
  prunedsl prune --model ./my-model --metric "ria(a = 0.3)" --sparsity 0.5 --calib-data notes.txt --json
""",
    "eval": """examples:
  prunedsl eval --model smollm2-135m --seqlen 512 --eval-windows 40
  prunedsl eval --model out/mag24 --json
""",
}


def _add_library(p):
    p.add_argument("--library", action="append", default=[], metavar="FILE",
                   help="extra definitions (metric NAME(params) = formula), may repeat")


def _add_model_data(p):
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True,
                   help="alias (smollm2-135m, gemma3-270m), a .gguf file, a local directory, or a hub id")
    g.add_argument("--data-dir", default=None,
                   help="directory with WikiText-2 (wiki.test.raw, wiki.valid.tokens); "
                        "default: ../shared/data/wikitext-2 or $PRUNEDSL_DATA_DIR")
    g.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    g.add_argument("--eval-windows", type=int, default=None, metavar="N",
                   help="evaluate on the first N test windows only (default: all)")
    g.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunedsl", description="A typed language for LLM pruning metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run 'prunedsl COMMAND --help' for a command's options and examples")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help):
        return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("check", "parse, type-check, simplify and print a metric formula")
    p.add_argument("formula", help="a formula or a library metric name, e.g. \"|W| * ‖X‖\"")
    p.add_argument("--allocation", action="store_true",
                   help="check FORMULA as an allocation rule (per-block sparsity); automatic when it "
                        "starts with 'allocation', names a library rule (uniform, owl, alpha, sdsa) or "
                        "uses spread/score/depth/params or a block statistic")
    p.add_argument("--group", choices=("row", "layer", "global"), default="row",
                   help="comparison group for the canonical (rank-equivalence) form")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _add_library(p)
    p.set_defaults(handler=cmd_check)

    p = command("metrics", "list the metric library and the allocation rules, each with its formula")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _add_library(p)
    p.set_defaults(handler=cmd_metrics)

    p = command("prune", "prune a model with a metric and report its perplexity")
    _add_model_data(p)
    g = p.add_argument_group("pruning")
    g.add_argument("--metric", required=True, help="a formula or a library name, e.g. wanda or \"ria(a=0.3)\"")
    g.add_argument("--sparsity", type=float, default=None,
                   help="fraction of weights to prune in each linear layer (default 0.5; N:M sets it)")
    g.add_argument("--pattern", default="unstructured", help="unstructured (default) or N:M, e.g. 2:4")
    g.add_argument("--group", choices=("row", "layer", "global"), default=None,
                   help="comparison group: per output row (default), per layer, or over all layers; "
                        "with --reconstruct the default is layer, SparseGPT's selection (one threshold "
                        "over all rows of each 128-column block)")
    g.add_argument("--allocation", default=None, metavar="NAME|FORMULA",
                   help="per-block sparsity rule: uniform, owl, alpha, sdsa (with parameters, e.g. "
                        "\"owl(M = 3)\") or spread(importance, lam); the mean stays --sparsity; "
                        "with N:M each block gets its own N (mixed N:M); not with --group global")
    g.add_argument("--allow-nonfinite", action="store_true",
                   help="rank NaN scores lowest instead of stopping with an error")
    g.add_argument("--reconstruct", action="store_true",
                   help="SparseGPT's OBS weight update on the kept weights (masks chosen per "
                        "128-column block on the updated weights, by default over all rows of the block "
                        "as SparseGPT does; --metric sparsegpt --reconstruct is SparseGPT)")
    _add_library(g)
    g = p.add_argument_group("calibration")
    g.add_argument("--nsamples", type=int, default=32, help="calibration windows (default 32)")
    g.add_argument("--seed", type=int, default=0, help="seed for choosing calibration windows")
    g.add_argument("--calib-data", default=None, metavar="PATH",
                   help="a text file to calibrate on instead of WikiText-2 validation")
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="DIR",
                   help="save the pruned model (save_pretrained) and pruning.json here")
    g.add_argument("--no-eval", action="store_true", help="skip the perplexity evaluation")
    p.set_defaults(handler=cmd_prune)

    p = command("eval", "WikiText-2 test perplexity of a model (DESIGN.md §5 protocol)")
    _add_model_data(p)
    p.set_defaults(handler=cmd_eval)
    # Commands that live with their subsystems; their modules import heavy things lazily.
    from .serve import add_parser as add_serve_llm_parser
    from .search.cli import add_parser as add_search_parser
    add_search_parser(sub)
    add_serve_llm_parser(sub)
    return parser


# --- handlers -----------------------------------------------------------------------
def _library_texts(paths) -> tuple[str, ...]:
    from .dsl.library import read_library_file
    return tuple(read_library_file(p) for p in paths)


def metric_record(metric, group: str) -> dict:
    from .dsl.operands import OPERANDS
    return {
        "input": metric.source,
        "name": metric.name,
        "text": metric.text(),
        "formula": metric.formula(),
        "pretty": metric.pretty(),
        "latex": metric.latex(),
        "type": {"shape": metric.type.shape, "sign": metric.type.sign},
        "group": group,
        "canonical": metric.canonical(group),
        "requires": sorted(metric.requires),
        "requires_pretty": [OPERANDS[k].pretty for k in sorted(metric.requires)],
    }


def cmd_check(args) -> int:
    from .api import is_allocation, parse
    if args.allocation or is_allocation(args.formula, library_texts=_library_texts(args.library)):
        return _check_allocation(args)
    metric = parse(args.formula, library_texts=_library_texts(args.library))
    rec = metric_record(metric, args.group)
    if args.json:
        _print_json(rec)
        return 0
    rows = [("formula", rec["formula"]), ("pretty", rec["pretty"]), ("latex", rec["latex"]),
            ("type", str(metric.type)), (f"canonical ({args.group})", rec["canonical"]),
            ("requires", ", ".join(rec["requires_pretty"]))]
    if rec["text"] != rec["formula"]:
        rows.insert(1, ("as written", rec["text"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def allocation_record(alloc) -> dict:
    return {"input": alloc.source, "name": alloc.name, "kind": "allocation", "formula": alloc.formula(),
            "pretty": alloc.pretty(), "latex": alloc.latex(), "lam": alloc.lam, "uniform": alloc.uniform,
            "requires": sorted(alloc.requires),
            "pass": "dense forward over the calibration batch" if alloc.needs_scores else
                    "none (weights only)" if alloc.requires - {"depth", "params"} else "none"}


def _check_allocation(args) -> int:
    from .api import parse_allocation
    rec = allocation_record(parse_allocation(args.formula, library_texts=_library_texts(args.library)))
    if args.json:
        _print_json(rec)
        return 0
    rows = [("rule", rec["formula"]), ("pretty", rec["pretty"]), ("latex", rec["latex"]),
            ("type", "allocation (per-block sparsity" + (", uniform)" if rec["uniform"] else ")")),
            ("requires", ", ".join(rec["requires"]) or "nothing"), ("statistics pass", rec["pass"])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_metrics(args) -> int:
    from .api import parse, parse_allocation
    from .dsl.library import library
    from .dsl.printer import format_number, to_text
    texts = _library_texts(args.library)

    def entry(name: str, d, parsed) -> dict:
        params = ", ".join(f"{p.name} = {format_number(p.default)}" for p in d.params)
        return {"name": name, "signature": f"{name}({params})" if params else name,
                "definition": to_text(d.body), "formula": parsed.formula(), "pretty": parsed.pretty(),
                "requires": sorted(parsed.requires), "doc": d.doc}

    rows = [{**entry(n, d, m := parse(n, library_texts=texts)), "type": str(m.type)}
            for n, d in library("metric", texts).items()]
    rules = [entry(n, d, parse_allocation(n, library_texts=texts))
             for n, d in library("allocation", texts).items()]
    if args.json:
        _print_json({"metrics": rows, "allocations": rules})
        return 0
    print(f"{len(rows)} metrics\n")
    print(markdown_table(["metric", "definition", "formula", "type", "source"],
                         [[r["signature"], r["definition"], r["pretty"], r["type"], r["doc"]] for r in rows]))
    print(f"\n{len(rules)} allocation rules (prunedsl prune --allocation NAME)\n")
    print(markdown_table(["rule", "definition", "formula", "block statistics", "source"],
                         [[r["signature"], r["definition"], r["pretty"], ", ".join(r["requires"]) or "–",
                           r["doc"]] for r in rules]))
    return 0


def cmd_prune(args) -> int:
    from .api import parse
    from .runtime.job import PruneJob, parse_pattern, run_prune
    metric = parse(args.metric, library_texts=_library_texts(args.library))
    allocation = None
    if args.allocation is not None:
        from .api import parse_allocation
        allocation = parse_allocation(args.allocation, library_texts=_library_texts(args.library))
    pattern = parse_pattern(args.pattern)
    sparsity = args.sparsity
    if pattern is not None:
        n, m = pattern
        if sparsity is not None and abs(sparsity - n / m) > 1e-9:
            raise PruneDSLError(f"--pattern {args.pattern} prunes {n}/{m} = {n / m:g} of the weights, "
                                f"but --sparsity is {sparsity:g}", hint="leave out --sparsity with N:M")
        sparsity = n / m
    if sparsity is None:
        sparsity = 0.5
    job = PruneJob(model=args.model, metric=metric, sparsity=sparsity, pattern=pattern, group=args.group,
                   nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, calib_data=args.calib_data,
                   data_dir=args.data_dir, eval_windows=args.eval_windows, output=args.output,
                   evaluate=not args.no_eval, allow_nonfinite=args.allow_nonfinite, allocation=allocation,
                   reconstruct=args.reconstruct)
    result = run_prune(job)
    if args.json:
        _print_json(result)
        return 0
    ppl = f"ppl {result['ppl']:.3f}" if result.get("ppl") is not None else "not evaluated"
    print(f"prunedsl prune: {args.model} | {result['pretty']} | sparsity {result['sparsity']:.4f} "
          f"({result['pattern']}, group={result['group']}{', + OBS update' if result.get('reconstruct') else ''})"
          f" | {ppl} | prune {result['prune_seconds']:.1f} s"
          + (f", eval {result['eval_seconds']:.1f} s" if result.get("eval_seconds") is not None else ""))
    print()
    rows = [["formula", result["formula"]], ["canonical", result["canonical"]],
            ["sparsity", f"{result['sparsity']:.4f}"], ["pattern", result["pattern"]],
            ["group", result["group"]],
            ["reconstruct", "SparseGPT's OBS weight update" if result.get("reconstruct") else "no"],
            ["calibration", f"{result['calibration']['nsamples']}×{result['calibration']['seqlen']} "
                            f"tokens from {result['calibration']['source']} (seed {result['calibration']['seed']})"]]
    if result.get("allocation"):
        a = result["allocation"]
        rows.append(["allocation", f"{a['rule']}: blocks {min(a['block_sparsity']):.3f}–"
                                   f"{max(a['block_sparsity']):.3f}, {a['statistics_pass']} pass "
                                   f"{result['allocation_seconds']:.1f} s"])
    if result.get("ppl") is not None:
        rows.append(["wikitext-2 test ppl", f"{result['ppl']:.3f} ({result['eval_windows']} windows of {args.seqlen})"])
    if result.get("output"):
        rows.append(["saved to", result["output"]])
    print(markdown_table(["", ""], rows))
    return 0


def cmd_eval(args) -> int:
    from .runtime.job import run_eval
    result = run_eval(args.model, seqlen=args.seqlen, eval_windows=args.eval_windows, data_dir=args.data_dir)
    if args.json:
        _print_json(result)
        return 0
    print(f"prunedsl eval: {args.model} | wikitext-2 test ppl {result['ppl']:.3f} | "
          f"{result['windows']} windows of {args.seqlen} tokens | {result['eval_seconds']:.1f} s")
    return 0


# --- output helpers -----------------------------------------------------------------
def markdown_table(header, rows) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=None, default=str)
    sys.stdout.write("\n")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except PruneDSLError as err:
        print(err.render(), file=sys.stderr)
        if getattr(args, "json", False):
            _print_json({"error": {"kind": err.kind, "message": err.message, "hint": err.hint,
                                   "span": [err.span.start, err.span.end] if err.span else None,
                                   "rendered": err.render()}})
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
