"""The ``prunedsl`` command line.

    prunedsl check "sqrt(|W| * ‖X‖)"            # parse, type-check, simplify, print
    prunedsl metrics                             # the built-in library
    prunedsl prune --model smollm2-135m --metric wanda --sparsity 0.5
    prunedsl eval --model smollm2-135m --eval-windows 40

Results go to stdout (a one-line summary, then a table: aligned plain text on a terminal,
Markdown in a pipe or file, ``--format text|md|json`` to choose; or one JSON object with
``--json``); logs and progress bars go to stderr. Bad input exits with status 2 and a
message with a caret under the offending part of the formula. Heavy imports (torch,
transformers) happen inside the command handlers so ``check`` stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config import GROUPS
from ..errors import ConfigError, PruneDSLError
from . import dsl_commands, prune_commands, structure_commands
from .device_options import add_device_arguments
from .eval_options import add_evaluation_options
from .output import add_format_option, print_json

EXAMPLES = {
    "check": """examples:
  prunedsl check "|W| * ‖X‖"
  prunedsl check "sqrt(abs(W) * norm(X))" --group row --json
  prunedsl check "ria(a = 0.3)"
  prunedsl check owl                                   # an allocation rule (per-block sparsity)
  prunedsl check "stdnorm(taylor) + stdnorm(wanda_sp)"  # a structure score (channels, heads)
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
  prunedsl prune --model smollm2-135m --structure channels --ratio 0.2 --output out/ch20
  prunedsl prune --model smollm2-135m --structure heads --ratio 0.34 --structure-metric taylor
  prunedsl prune --model smollm2-135m --structure blocks --ratio 0.15 --structure-metric block_influence
  prunedsl prune --model smollm2-135m --metric wanda --device cuda --dtype bfloat16 --nsamples 128 --calib-batch 8
  prunedsl prune --model smollm2-135m --metric wanda --calib-data code_train.txt --eval-data code_test.txt
  prunedsl prune --model smollm2-135m --metric wanda --tasks boolq,piqa --limit 200 --output out/wanda50
""",
    "eval": """examples:
  prunedsl eval --model smollm2-135m --seqlen 512 --eval-windows 40
  prunedsl eval --model out/mag24 --json
  prunedsl eval --model out/mag24 --tasks boolq,piqa,arc_easy --limit 200
  prunedsl eval --model out/mag24 --tasks my_task --tasks-dir ./tasks --eval-data my_domain.txt
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
    g.add_argument("--seqlen", type=int, default=None,
                   help="tokens per window (default 512; eval of a directory prunedsl saved: the seqlen "
                        "its pruning.json was evaluated with)")
    g.add_argument("--eval-windows", type=int, default=None, metavar="N",
                   help="evaluate on the first N test windows only (default: all)")
    g.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_evaluation_options(p)


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
    p.add_argument("--structure", action="store_true",
                   help="check FORMULA as a structure score (one value per MLP channel, head or block); "
                        "automatic when it starts with 'structure', names a library structure score "
                        "(taylor, flap, ...) or uses group_sum/producers/consumers/group_max/stdnorm or "
                        "block_influence")
    p.add_argument("--group", choices=GROUPS, default="row",
                   help="comparison group for the canonical (rank-equivalence) form")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _add_library(p)
    p.set_defaults(handler=dsl_commands.cmd_check)

    p = command("metrics", "list the metric library and the allocation rules, each with its formula")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_format_option(p)
    _add_library(p)
    p.set_defaults(handler=dsl_commands.cmd_metrics)

    p = command("prune", "prune a model with a metric and report its perplexity")
    _add_model_data(p)
    g = p.add_argument_group("pruning")
    g.add_argument("--metric", default=None,
                   help="a formula or a library name, e.g. wanda or \"ria(a=0.3)\" (required unless --structure)")
    g.add_argument("--sparsity", type=float, default=None,
                   help="fraction of weights to prune in each linear layer (default 0.5; N:M sets it)")
    g.add_argument("--pattern", default="unstructured", help="unstructured (default) or N:M, e.g. 2:4")
    g.add_argument("--group", choices=GROUPS, default=None,
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
    g.add_argument("--within-block", choices=("sequential", "parallel"), default=None,
                   help="sequential: each linear is scored on the output of the linears pruned before "
                        "it in its block (SparseGPT's true-sequential); parallel: every linear of a block "
                        "on the block's unpruned input, as Wanda's, OWL's and llm-compressor's code do "
                        "(one extra forward per block). Default: parallel with --allocation, else "
                        "sequential (docs/allocation.md measures both)")
    _add_library(g)
    structure_commands.add_structure_arguments(p)
    g = p.add_argument_group("calibration")
    g.add_argument("--nsamples", type=int, default=32, help="calibration windows (default 32)")
    g.add_argument("--seed", type=int, default=0, help="seed for choosing calibration windows")
    g.add_argument("--calib-data", default=None, metavar="PATH",
                   help="a text file to calibrate on instead of WikiText-2 validation")
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="DIR",
                   help="save the pruned model (save_pretrained) and pruning.json here; never the input "
                        "model's directory, and a non-empty one only if prunedsl wrote it (or --overwrite)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --output directory that is not an earlier prunedsl output")
    g.add_argument("--no-eval", action="store_true", help="skip the perplexity evaluation")
    add_device_arguments(p)
    p.set_defaults(handler=prune_commands.cmd_prune)

    p = command("eval", "WikiText-2 test perplexity of a model (docs/design.md §5 protocol)")
    _add_model_data(p)
    add_device_arguments(p, calibration=False)
    p.set_defaults(handler=prune_commands.cmd_eval)
    # Commands that live with their subsystems; their modules import heavy things lazily.
    from ..serve import add_parser as add_serve_llm_parser
    from ..search.cli import add_parser as add_search_parser
    add_search_parser(sub)
    add_serve_llm_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for the model card
    try:
        return args.handler(args)
    except ConfigError as err:
        return _report_error(err.for_cli(), args)
    except PruneDSLError as err:
        return _report_error(err, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `prunedsl metrics | head`: the reader left, which is no error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second BrokenPipeError when Python flushes at exit
        return 0


def _report_error(err: PruneDSLError, args) -> int:
    print(err.render(), file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"error": {"kind": err.kind, "message": err.message, "hint": err.hint,
                               "span": [err.span.start, err.span.end] if err.span else None,
                               "rendered": err.render()}})
    return 2


if __name__ == "__main__":
    sys.exit(main())
