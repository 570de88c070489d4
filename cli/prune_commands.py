"""``prunedsl prune`` and ``prunedsl eval``: torch and transformers load inside the handlers."""
from __future__ import annotations

import sys

from ..dsl.library import Library
from ..errors import ConfigError
from .device_options import device_settings
from .eval_options import command_line, eval_data_row, print_zero_shot, task_settings
from .output import output_format, print_json, print_table


def cmd_prune(args) -> int:
    from ..api import parse
    from ..config import parse_pattern, resolve_sparsity
    from ..runtime.job import PruneJob, run_prune
    if args.structure is not None or args.ratio is not None:
        from .structure_commands import cmd_prune_structure
        return cmd_prune_structure(args)
    from .structure_commands import check_no_structure_options
    check_no_structure_options(args)
    if args.metric is None:
        raise ConfigError("{metric} is required (or {structure} with {ratio} for structured removal)",
                          hint="e.g. --metric wanda --sparsity 0.5")
    fmt = output_format(args)
    library = Library.from_files(args.library)
    metric = parse(args.metric, library=library)
    allocation = None
    if args.allocation is not None:
        from ..api import parse_allocation
        allocation = parse_allocation(args.allocation, library=library)
    pattern = parse_pattern(args.pattern)
    sparsity = resolve_sparsity(args.sparsity, pattern)
    job = PruneJob(model=args.model, metric=metric, sparsity=sparsity, pattern=pattern, group=args.group,
                   nsamples=args.nsamples, seqlen=512 if args.seqlen is None else args.seqlen, seed=args.seed, calib_data=args.calib_data,
                   data_dir=args.data_dir, eval_windows=args.eval_windows, output=args.output,
                   evaluate=not args.no_eval, allow_nonfinite=args.allow_nonfinite, allocation=allocation,
                   reconstruct=args.reconstruct, overwrite=args.overwrite, eval_data=args.eval_data,
                   within_block=args.within_block, command=command_line(args), **task_settings(args),
                   **device_settings(args))
    result = run_prune(job)
    if fmt == "json":
        print_json(result.to_dict())
        return 0
    ppl = f"ppl {result.ppl:.3f}" if result.ppl is not None else "not evaluated"
    ev = result.evaluation
    print(f"prunedsl prune: {args.model} | {result.pretty} | sparsity {result.sparsity:.4f} "
          f"({result.pattern}, group={result.group}{', + OBS update' if result.reconstruct else ''})"
          f" | {ppl} | prune {result.prune_seconds:.1f} s"
          + (f", eval {ev.eval_seconds:.1f} s" if ev is not None else ""))
    print()
    rows = [["formula", result.formula], ["canonical", result.canonical],
            ["sparsity", f"{result.sparsity:.4f}"], *result.settings_rows()]
    if result.allocation:
        a = result.allocation
        rows.append(["allocation", f"{a['rule']}: blocks {min(a['block_sparsity']):.3f}–"
                                   f"{max(a['block_sparsity']):.3f}, {a['statistics_pass']} pass "
                                   f"{result.allocation_seconds:.1f} s"])
    if ev is not None:
        rows.append(["wikitext-2 test ppl", f"{ev.ppl:.3f} ({ev.eval_windows} windows of {result.seqlen})"])
    if result.eval_data is not None:
        rows.append(eval_data_row(result.eval_data.to_dict(), result.seqlen))
    if result.output:
        rows.append(["saved to", result.output])
    print_table(["", ""], rows, fmt)
    print_zero_shot(result.zero_shot, fmt)
    return 0


def cmd_eval(args) -> int:
    from ..runtime.job import TaskSettings, run_eval
    fmt = output_format(args)
    result = run_eval(args.model, seqlen=args.seqlen, eval_windows=args.eval_windows, data_dir=args.data_dir,
                      eval_data=args.eval_data, tasks=TaskSettings(**task_settings(args)),
                      **device_settings(args, calibration=False))
    if fmt == "json":
        print_json(result.to_dict())
        return 0
    if result.settings_from:
        print(f"prunedsl eval: seqlen {result.seqlen} and {result.windows} windows as in "
              f"{result.settings_from} (--seqlen / --eval-windows override)", file=sys.stderr)
    print(f"prunedsl eval: {args.model} | wikitext-2 test ppl {result.ppl:.3f} | "
          f"{result.windows} windows of {result.seqlen} tokens | {result.evaluation.eval_seconds:.1f} s")
    if result.eval_data is not None:
        print()
        print_table(["", ""], [eval_data_row(result.eval_data.to_dict(), result.seqlen)], fmt)
    print_zero_shot(result.zero_shot, fmt)
    return 0
