"""The evaluation options ``prune`` (masked and ``--structure``) and ``eval`` share: the user's own
text, lm-eval tasks, output format; and how their results are printed."""
from __future__ import annotations

import shlex

from ..errors import ConfigError
from .output import add_format_option, print_table

# Options that only shape the --tasks evaluation: given without --tasks they would do nothing.
_TASK_ONLY = ("tasks_dir", "limit", "num_fewshot")


def add_evaluation_options(parser) -> None:
    g = parser.add_argument_group("task-specific evaluation")
    g.add_argument("--eval-data", default=None, metavar="FILE",
                   help="a text file: its perplexity too, by the WikiText-2 test protocol (non-overlapping "
                        "windows of --seqlen, the first --eval-windows); keep it apart from --calib-data")
    g.add_argument("--tasks", default=None, metavar="T1,T2",
                   help="zero-shot accuracy on lm-eval tasks, e.g. boolq,piqa,hellaswag,winogrande,arc_easy,"
                        "arc_challenge,openbookqa (needs: pip install 'prunedsl[eval]'); online, lm-eval "
                        "downloads their datasets")
    g.add_argument("--tasks-dir", default=None, metavar="DIR",
                   help="more lm-eval tasks: a directory of task YAML files (lm-eval's include path); "
                        "how tasks run offline")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate the first N documents of each task (default: all)")
    g.add_argument("--num-fewshot", type=int, default=None, metavar="K",  # None: not given (refused without --tasks)
                   help="examples in each prompt (default 0: zero-shot)")
    add_format_option(g)


def task_settings(args) -> dict:
    """PruneJob / run_eval keywords from the parsed options; task options without --tasks are refused
    (before anything loads) rather than silently ignored."""
    from ..runtime.tasks import parse_task_list
    if args.tasks is None:
        for name in _TASK_ONLY:
            if getattr(args, name) is not None:
                raise ConfigError("{%s} only applies with {tasks}" % name,
                                  hint="add {tasks} (e.g. boolq,piqa) or leave out {%s}" % name)
    tasks = tuple(parse_task_list(args.tasks)) if args.tasks is not None else ()
    return {"tasks": tasks, "tasks_dir": args.tasks_dir, "task_limit": args.limit,
            "num_fewshot": args.num_fewshot or 0}


def eval_data_row(eval_data: dict, seqlen: int) -> list[str]:
    """The summary row of an --eval-data perplexity (the record's ``eval_data`` dict)."""
    return [f"{eval_data['source']} ppl", f"{eval_data['ppl']:.3f} ({eval_data['eval_windows']} windows of {seqlen})"]


def print_zero_shot(zero_shot: dict | None, fmt: str) -> None:
    """The --tasks accuracy table under the summary (the record's ``zero_shot`` dict)."""
    if not zero_shot:
        return
    from ..runtime.tasks import TABLE_HEADER, table_rows
    print(f"\nzero-shot accuracy (lm-eval {zero_shot['lm_eval']}, {zero_shot['num_fewshot']}-shot"
          + (f", first {zero_shot['limit']} documents per task" if zero_shot.get("limit") else "")
          + f", {zero_shot['seconds']:.1f} s)\n")
    print_table(TABLE_HEADER, table_rows(zero_shot), fmt)


def command_line(args) -> str | None:
    """The command as typed (for the model card), when ``main`` recorded it."""
    argv = getattr(args, "argv", None)
    return None if argv is None else shlex.join(["prunedsl", *argv])
