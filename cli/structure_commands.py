"""``prunedsl prune --structure channels|heads|blocks --ratio R``: remove coupled structures
for real (a physically smaller model), see docs/structured.md. torch loads inside the handler.

Of ``prune``'s other options, the model/data, calibration, output, evaluation (--eval-data,
--tasks, --tasks-dir, --limit, --num-fewshot, --format), device (but --offload) and --library
(definitions a --structure-metric may name) apply; the masked-pruning ones (``_MASK_ONLY``)
are refused before anything loads."""
from __future__ import annotations

import argparse
import sys

from ..dsl.library import Library
from ..runtime.block_range import describe_blocks
from ..errors import ConfigError
from .device_options import device_settings
from .eval_options import command_line, eval_data_row, print_zero_shot, task_settings
from .output import output_format, print_json, print_table

# Spelled here too so building the parser imports no torch (runtime/structures.py has them).
STRUCTURES = ("channels", "heads", "blocks")
HEADS_MODES = ("kv_groups", "query_heads")
# Options of unstructured / masked pruning that mean nothing with --structure.
_MASK_ONLY = {"metric": None, "sparsity": None, "pattern": "unstructured", "group": None,
              "allocation": None, "reconstruct": False, "allow_nonfinite": False, "within_block": None}


def add_structure_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "structured removal (physically smaller model: the saved config has the new widths)")
    g.add_argument("--structure", choices=STRUCTURES, default=None,
                   help="remove whole MLP channels, attention heads (GQA-aware) or decoder blocks "
                        "instead of masking weights; needs --ratio")
    g.add_argument("--ratio", type=float, default=None, metavar="R",
                   help="fraction in [0, 1) of the structures to remove (per block for channels/heads, "
                        "of all blocks for blocks), rounded to whole structures")
    g.add_argument("--structure-metric", default=None, metavar="NAME|FORMULA",
                   help="structure score in the language: a library name (prunedsl metrics lists "
                        "them: magnitude_sp, taylor, wanda_sp, flap, shortgpt, saap_fusion) or a formula "
                        "such as \"group_sum(|W| * G)\" (default: wanda_sp; shortgpt for blocks)")
    g.add_argument("--heads-mode", choices=HEADS_MODES, default="kv_groups",
                   help="heads: remove whole KV groups with their query heads (default), or the same "
                        "number of query heads from every KV group")
    g.add_argument("--structure-allocation", choices=("uniform", "global"), default="uniform",
                   help="uniform (default): the same count in every block, loadable by plain "
                        "transformers; global: one ranking over all blocks (per-block widths: --output "
                        "writes a prunedsl-format checkpoint, loaded by prunedsl eval/prune --model DIR, "
                        "not by plain transformers)")
    g.add_argument("--structure-blocks", default=None, metavar="START:END",
                   help="channels/heads: remove structures only from these decoder blocks, half-open like "
                        "a Python slice (e.g. 3:-2 leaves the first 3 and last 2 blocks whole, as "
                        "LLM-Pruner does); the ratio applies to the blocks inside; widths then differ per "
                        "block, so --output writes a prunedsl-format checkpoint (default: all blocks; a negative "
                        "START needs the = form: --structure-blocks=-4:)")
    g.add_argument("--bias-compensation", action="store_true",
                   help="FLAP: fold the removed channels' (heads') mean output over the calibration data "
                        "into down_proj's (o_proj's) bias; refused where the model's config cannot carry "
                        "that bias (Qwen2; Gemma-3 MLP)")


# Options of structured removal that mean nothing without --structure (their defaults).
_STRUCTURE_ONLY = {"structure_metric": None, "heads_mode": "kv_groups", "structure_allocation": "uniform",
                   "structure_blocks": None, "bias_compensation": False}


def check_no_structure_options(args) -> None:
    """Masked pruning: refuse the structured-removal options instead of ignoring them."""
    given = [name for name, default in _STRUCTURE_ONLY.items() if getattr(args, name, default) != default]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ConfigError(flags.replace("{", "{{") + " only apply with {structure} (structured removal)",
                          hint="add --structure channels|heads|blocks --ratio R, or leave them out")


def cmd_prune_structure(args) -> int:
    from ..runtime.structured_job import StructuredJob, run_structured
    if args.structure is None or args.ratio is None:
        raise ConfigError("{structure} and {ratio} go together", hint="e.g. --structure channels --ratio 0.2")
    given = [name for name, default in _MASK_ONLY.items() if getattr(args, name) != default]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ConfigError("{structure} removes whole structures; " + flags.replace("{", "{{")
                          + " only apply to masked pruning", hint="use --structure-metric to choose the score")
    fmt = output_format(args)
    job = StructuredJob(model=args.model, structure=args.structure, ratio=args.ratio,
                        metric=args.structure_metric, heads_mode=args.heads_mode,
                        allocation=args.structure_allocation, structure_blocks=args.structure_blocks,
                        bias_compensation=args.bias_compensation, nsamples=args.nsamples,
                        seqlen=512 if args.seqlen is None else args.seqlen, seed=args.seed,
                        calib_data=args.calib_data, data_dir=args.data_dir,
                        eval_windows=args.eval_windows, output=args.output, evaluate=not args.no_eval,
                        overwrite=args.overwrite, eval_data=args.eval_data, command=command_line(args),
                        library=Library.from_files(args.library), **task_settings(args), **device_settings(args))
    record = run_structured(job)
    if record.get("output") and not record["loadable_by_transformers"]:   # on stderr with --json too
        print(f"note: {record['output']} is a prunedsl-format checkpoint with per-block widths: plain "
              f"transformers cannot load it; load it with prunedsl (prunedsl eval --model {record['output']}, "
              "or prunedsl.runtime.models.load_model)", file=sys.stderr)
    if fmt == "json":
        print_json(record)
        return 0
    s = record["structured"]
    plan = s["plan"]
    ppl = f"ppl {record['ppl']:.3f}" if record["ppl"] is not None else "not evaluated"
    print(f"prunedsl prune: {args.model} | {args.structure} removed by {record['structure_metric']} | "
          f"{s['decoder_fraction_removed']:.1%} of decoder parameters | {ppl}")
    print()
    widths = sorted(set(plan["widths"]))
    rows = [["structure", args.structure + (f" ({args.heads_mode})" if args.structure == "heads" else "")],
            ["score", f"{record['structure_metric']}: {record['structure_metric_doc']}"],
            ["allocation", plan["allocation"]],
            *([["pruned blocks", f"{describe_blocks(plan['blocks'])} of {len(plan['total'])}"]]
              if plan.get("blocks") else []),
            ["removed", f"{plan['removed']} of {sum(plan['total'])} structures"],
            ["kept per block" if args.structure != "blocks" else "kept blocks",
             ", ".join(map(str, widths)) if args.structure != "blocks" else str(plan["keep"][0])],
            ["parameters", f"{s['params_before']:,} → {s['params_after']:,}"],
            ["calibration", f"{args.nsamples}×{record['seqlen']} tokens from {record['calibration']['source']}"]]
    if record["ppl"] is not None:
        rows.append(["wikitext-2 test ppl", f"{record['ppl']:.3f} ({record['eval_windows']} windows "
                                            f"of {record['seqlen']})"])
    if "eval_data" in record:
        rows.append(eval_data_row(record["eval_data"], record["seqlen"]))
    if record.get("output") and record["loadable_by_transformers"]:
        rows.append(["saved to", f"{record['output']} (loads with AutoModelForCausalLM.from_pretrained)"])
    elif record.get("output"):
        rows.append(["saved to", f"{record['output']} (prunedsl-format checkpoint with per-block widths: "
                                 f"load it with prunedsl eval --model {record['output']}, not plain transformers)"])
    print_table(["", ""], rows, fmt)
    print_zero_shot(record.get("zero_shot"), fmt)
    return 0
