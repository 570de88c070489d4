"""Benchmark: structured removal (MLP channels, attention heads, whole blocks) on a real model:
WikiText-2 test ppl, parameter count, checkpoint size and real CPU speed vs the dense model.

    python bench/bench_structured.py --model smollm2-135m --threads 2 \\
        --out /tmp/bench_structured_smollm2.json          # the full table (~hours on 2 cores)
    python bench/bench_structured.py --quick              # a tiny random Llama, seconds: smoke test
    python bench/bench_structured.py --kinds channels --fractions 0.2 --metrics wanda_sp \\
        --eval-windows 4                                  # one configuration

For ``channels`` and ``heads`` the target is a fraction (10/20/30%) of the *decoder's*
parameters: the per-block count of structures is the nearest whole number (for query heads
a multiple of the KV groups), the achieved fraction is reported, and a target that would
empty a layer (e.g. 30% of SmolLM2's decoder from attention alone: it is only 25% of it) is
listed as unreachable. ``blocks`` removes 2/4/6 whole blocks. Each structure metric's scores
come from one statistics pass on the dense model (they do not depend on the ratio); each
configuration removes from a fresh copy of the dense model (same code path as
``prunedsl prune --structure``: ``runtime/structured_prune.py``).

Speed, in the same process and thread count: prefill tokens/s = 512 / time of one forward of
(1, 512) tokens without cache; decode tokens/s = new tokens / time of greedy ``generate``
with the KV cache from a 16-token prompt (min = max new tokens). Each is the median of
``--speed-reps`` runs after one warm-up; the dense model is timed at the start and at the
end of the run, and the speedups use their mean (the spread shows machine noise). With
``--paired-speed`` each pruned model is timed interleaved with the dense one (a, b, a, b, …)
and its speedup uses that paired dense time: use it on a machine shared with other work.
The decode timing switches the KV cache on (``load_model`` turns it off) and checks every
step after the prompt ran on one token (``runtime/speed.py``).

Scores are the language's library structure scores (``language_score``); "masked" rows are
today's zeroed Row/Col masks (``Workbench.prune`` with ``--masked-metrics``) at the same
fractions of the decoder, for comparison: same ppl path, dense shapes, size and speed.
Every finished configuration is appended to ``--out``; a rerun skips those already there.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Library structure scores (dsl/library.pdsl), compiled by runtime.structure_scoring.language_score.
KIND_METRICS = {"channels": ["magnitude_sp", "taylor", "wanda_sp", "flap", "saap_fusion"],
                "heads": ["magnitude_sp", "taylor", "wanda_sp", "flap", "saap_fusion"],
                "blocks": ["shortgpt", "magnitude_sp", "taylor", "wanda_sp"]}
# Today's masked structured pruning (README "Structured pruning follows the metric's type"):
# a Row metric zeroes whole output rows, a Col metric whole input columns, of every linear.
MASKED_METRICS = ["row_sum(wanda)", "col_sum(wanda)"]
SPEED_KEYS = ("prefill_tok_s", "decode_tok_s", "paired_dense")


def structure_params(model, group) -> int:
    """Parameters one structure of ``group`` owns (weights + q/k/v bias entries)."""
    total = 0
    for spec in group.members:
        layer = model.get_submodule(spec.name)
        k = spec.index.shape[1]
        if spec.role == "producer":
            total += k * layer.in_features + (k if layer.bias is not None else 0)
        else:
            total += k * layer.out_features
    return total


def count_for_fraction(model, groups, fraction: float, decoder_params: int) -> tuple[int | None, str]:
    """Per-block count removing about ``fraction`` of the decoder parameters, or (None, why)."""
    g = groups[0]
    per = structure_params(model, g)
    exact = fraction * decoder_params / (len(groups) * per)
    step = max(g.kv_group) + 1 if g.kv_group is not None else 1   # query heads: per KV group alike
    n = max(step, round(exact / step) * step)
    if n >= g.count:
        return None, f"needs {exact:.1f} of {g.count} structures per block"
    return n, ""


def zeroed_decoder_fraction(model) -> float:
    """Fraction of the decoder parameters that are exactly zero (a masked model's budget)."""
    from prunedsl.runtime.models import find_blocks
    blocks, _ = find_blocks(model)
    params = list(blocks.parameters())
    return sum(int((p == 0).sum()) for p in params) / sum(p.numel() for p in params)


def checkpoint_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def quick_workspace() -> Path:
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(Path(tempfile.mkdtemp(prefix="bench_structured_")), layers=4, hidden=128)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--kinds", nargs="+", default=list(KIND_METRICS), choices=list(KIND_METRICS))
    ap.add_argument("--metrics", nargs="+", default=None,
                    help="library structure scores or formulas (default: every library entry valid for the kind)")
    ap.add_argument("--masked-metrics", nargs="+", default=MASKED_METRICS,
                    help="Row/Col metrics for the zeroed-mask comparison at the same fractions ('none': skip)")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2, 0.3],
                    help="fractions of the decoder parameters (channels, heads, masks)")
    ap.add_argument("--blocks", nargs="+", type=int, default=[2, 4, 6], help="blocks to remove")
    ap.add_argument("--heads-modes", nargs="+", default=["kv_groups", "query_heads"])
    ap.add_argument("--bias-compensation", action="store_true",
                    help="also run every channels/heads configuration with FLAP bias compensation")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for everything (same for dense)")
    ap.add_argument("--speed-reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="time the shapes of an --out made with --no-speed (ppl rows kept): run the "
                         "perplexities under load, the timings later on a quiet machine")
    ap.add_argument("--paired-speed", action="store_true",
                    help="time the dense model again with each pruned one, runs interleaved; the "
                         "speedups use that paired dense time (for a loaded machine)")
    ap.add_argument("--quick", action="store_true",
                    help="a tiny random Llama and tiny settings: checks the bench runs (seconds)")
    ap.add_argument("--out", default="/tmp/bench_structured.json")
    args = ap.parse_args()
    if args.quick:
        ws = quick_workspace()
        args.model, args.data_dir = str(ws / "model"), str(ws / "data")
        args.nsamples, args.seqlen, args.eval_windows = 4, 64, 2
        args.speed_reps, args.decode_tokens, args.blocks = 1, 8, [1, 2]
        args.out = str(ws / "bench.json")
    masked_metrics = [] if args.masked_metrics == ["none"] else args.masked_metrics

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from prunedsl.api import parse, parse_structure_metric
    from prunedsl.dsl.library import BUILTIN
    from prunedsl.errors import ConfigError, PruneDSLError
    from prunedsl.runtime import data
    from prunedsl.runtime.bias_compensation import STATISTIC, compensate, consumer_means
    from prunedsl.runtime.models import load_model
    from prunedsl.runtime.perplexity import perplexity
    from prunedsl.runtime.remove import decoder_parameters, parameter_count, remove_structures
    from prunedsl.runtime.speed import measure_speed, paired_speed
    from prunedsl.runtime.structure_plan import select_removal
    from prunedsl.runtime.structure_scoring import collect_dense, language_score, score_structures
    from prunedsl.runtime.structures import find_structures
    from prunedsl.runtime.workbench import Workbench

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": [], "dense": None}
    done = {(r["kind"], r["heads_mode"], r["metric"], r["target"], r.get("bias_compensation", False))
            for r in results["runs"]}
    loaded = load_model(args.model)
    dense = loaded.model
    test_ids = data.tokenize(loaded.tokenizer, data.load_text("test", data_dir=args.data_dir))
    calib = data.calibration_windows(data.tokenize(loaded.tokenizer, data.load_text(
        "validation", data_dir=args.data_dir)), args.nsamples, args.seqlen, args.seed)
    speed_len = min(512, test_ids.shape[1])
    ids512, prompt = test_ids[:, :speed_len], test_ids[:, :16]

    # Speed depends on the shapes only, not on which structures went: every metric's model of
    # one (kind, heads mode, count, bias) has the same shapes, so it is timed once (the first
    # metric's model) and the other rows say whose timing they share.
    row_metric = [""]   # the metric whose model is being measured (named in shared timings)
    speed_by_shape: dict[tuple, dict] = {
        tuple(r["shape"]): {k: r[k] for k in SPEED_KEYS if k in r} | {"speed_of": r["metric"]}
        for r in results["runs"] if "shape" in r and "prefill_tok_s" in r and "speed_of" not in r}

    def timing(model) -> dict:  # noqa: E306 (attributes below, for fill_speed)
        if args.paired_speed and model is not dense:
            both = paired_speed({"model": model, "dense": dense}, ids512, prompt,
                                new_tokens=args.decode_tokens, reps=args.speed_reps)
            return {**both["model"], "paired_dense": {k: both["dense"][k] for k in ("prefill_tok_s", "decode_tok_s")}}
        return measure_speed(model, ids512, prompt, new_tokens=args.decode_tokens, reps=args.speed_reps)

    timing.ids512, timing.prompt, timing.new_tokens, timing.reps = ids512, prompt, args.decode_tokens, args.speed_reps

    def measure(model, speed: bool = True, shape: tuple | None = None) -> dict:
        ppl = perplexity(model, test_ids, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False)
        row = {"ppl": ppl["ppl"], "params": parameter_count(model), "decoder_params": decoder_parameters(model),
               "checkpoint_mb": checkpoint_bytes(model) / 2**20}
        if speed and not args.no_speed:
            if shape is not None and shape in speed_by_shape:
                row.update(speed_by_shape[shape])
            else:
                row.update(timing(model))
                if shape is not None:
                    speed_by_shape[shape] = {k: row[k] for k in SPEED_KEYS if k in row} | {"speed_of": row_metric[0]}
        return row

    def record(run: dict) -> None:
        results["runs"].append(run)
        results["dense"] = dense_start
        out.write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in run.items() if k != "plan"}), file=sys.stderr)

    if args.speed_only:
        fill_speed(results, dense, timing, out)
        print(table(results))
        return
    dense_start = measure(dense)
    print(f"dense: ppl {dense_start['ppl']:.3f}, {dense_start['params']:,} parameters", file=sys.stderr)
    dec_params = dense_start["decoder_params"]
    # Library structure scores compiled from the language; one statistics pass serves all of them.
    scores_by_kind = {}
    for kind in args.kinds:
        for metric in args.metrics or KIND_METRICS[kind]:
            try:
                scores_by_kind[(kind, metric)] = language_score(metric, kind)
            except PruneDSLError as err:   # not valid for this kind (e.g. shortgpt for channels)
                if kind in parse_structure_metric(metric, library=BUILTIN).kinds:
                    raise
                print(f"skipping {metric} for {kind}: {str(err).splitlines()[0]}", file=sys.stderr)
    requires = frozenset().union(*(s.requires for s in scores_by_kind.values()), {STATISTIC})
    t0 = time.perf_counter()
    stats = collect_dense(dense, calib, requires) if scores_by_kind else None
    stat_s = time.perf_counter() - t0
    variants = [False, True] if args.bias_compensation else [False]
    for (kind, metric), score in scores_by_kind.items():
        for mode in (args.heads_modes if kind == "heads" else ["kv_groups"]):
            groups = find_structures(dense, kind, mode)
            means = consumer_means(dense, kind, stats.layers) if kind != "blocks" else None
            scores = score_structures(groups, stats, score.fn)
            for bc in (variants if kind != "blocks" else [False]):
                for target in args.blocks if kind == "blocks" else args.fractions:
                    if (kind, mode if kind == "heads" else None, metric, target, bc) in done:
                        continue
                    run = {"kind": kind, "heads_mode": mode if kind == "heads" else None,
                           "metric": metric, "formula": score.doc, "target": target,
                           "bias_compensation": bc, "statistics_seconds": stat_s}
                    count, why = (target, "") if kind == "blocks" else \
                        count_for_fraction(dense, groups, target, dec_params)
                    if count is None:
                        record({**run, "unreachable": why})
                        continue
                    plan = select_removal(groups, scores, count=count, heads_mode=mode)
                    model = copy.deepcopy(dense)
                    try:
                        if bc:
                            compensate(model, plan, means)
                    except ConfigError as err:
                        record({**run, "unreachable": f"bias compensation refused: {str(err).splitlines()[0]}"})
                        continue
                    remove_structures(model, plan)
                    shape = [kind, run["heads_mode"], count, bc]
                    row_metric[0] = metric
                    run.update(count=count, shape=shape, plan=plan.to_dict(), **measure(model, shape=tuple(shape)))
                    run["decoder_removed"] = 1 - run["decoder_params"] / dec_params
                    del model
                    record(run)
    del stats
    # Today's masked Row/Col structured pruning at the same fractions: shapes, checkpoint size
    # and speed stay the dense model's, so only ppl and the zeroed fraction are measured.
    if masked_metrics:
        bench = Workbench(loaded, calib, progress=False)
        for text in masked_metrics:
            metric = parse(text)
            for target in args.fractions:
                if ("masked", None, text, target, False) in done:
                    continue
                bench.prune(metric, sparsity=target, group="layer")
                run = {"kind": "masked", "heads_mode": None, "metric": text,
                       "formula": f"{metric.type.shape} mask", "target": target, "bias_compensation": False,
                       **measure(dense, speed=False)}
                run["decoder_removed"] = zeroed_decoder_fraction(dense)
                bench.restore()
                record(run)
    if not args.no_speed:
        results["dense_end"] = measure(dense)
    results["settings"] = {k: v for k, v in vars(args).items()}
    results["settings"]["torch_threads"] = torch.get_num_threads()
    out.write_text(json.dumps(results, indent=1))
    print(table(results))


class _ZeroMeans(dict):
    """Consumer input means of zero: a bias-compensated model's shapes and biases (all zero) for
    timing, without a statistics pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def __missing__(self, name: str):
        import torch
        return torch.zeros(self.model.get_submodule(name).in_features)


def fill_speed(results: dict, dense, timing, out: Path) -> None:
    """--speed-only: time each removed shape of ``results`` that has no timing yet. Any plan of
    the same count has the same shapes, so the structures removed are the first ones of each
    block (structure index order), not a metric's choice; ppl rows are left as measured."""
    import torch
    from prunedsl.runtime.bias_compensation import compensate
    from prunedsl.runtime.remove import remove_structures
    from prunedsl.runtime.speed import measure_speed
    from prunedsl.runtime.structure_plan import select_removal
    from prunedsl.runtime.structures import find_structures
    ids512, prompt = timing.ids512, timing.prompt
    start = measure_speed(dense, ids512, prompt, new_tokens=timing.new_tokens, reps=timing.reps)
    results["dense"].update(start)
    timed: dict[tuple, dict] = {}
    for r in results["runs"]:
        if "shape" not in r or "prefill_tok_s" in r:
            continue
        kind, mode, count, bc = r["shape"]
        key = (kind, mode, count, bc)
        if key not in timed:
            groups = find_structures(dense, kind, mode or "kv_groups")
            scores = [torch.arange(g.count, dtype=torch.float64) for g in groups]  # lowest index goes
            plan = select_removal(groups, scores, count=count, heads_mode=mode or "kv_groups")
            model = copy.deepcopy(dense)
            if bc:
                compensate(model, plan, _ZeroMeans(model))
            remove_structures(model, plan)
            timed[key] = timing(model) | {"speed_of": "shape only (first structures of each block)"}
            del model
            print(f"timed {key}: {timed[key]}", file=sys.stderr)
        r.update(timed[key])
        out.write_text(json.dumps(results, indent=1))
    results["dense_end"] = {**results["dense"], **measure_speed(dense, ids512, prompt,
                                                                new_tokens=timing.new_tokens, reps=timing.reps)}
    out.write_text(json.dumps(results, indent=1))


def table(results: dict) -> str:
    """Markdown: one row per configuration; speed as tok/s and × the dense model's (mean of the
    dense runs at the start and the end); masked rows keep the dense shapes, size and speed."""
    d = results["dense"]
    end = results.get("dense_end") or d
    base = {k: (d[k] + end[k]) / 2 for k in ("prefill_tok_s", "decode_tok_s") if k in d}
    lines = [f"dense: ppl {d['ppl']:.3f}, {d['params']:,} parameters, {d['checkpoint_mb']:.1f} MB"
             + (f", prefill {d['prefill_tok_s']:.0f}→{end['prefill_tok_s']:.0f} tok/s, decode "
                f"{d['decode_tok_s']:.1f}→{end['decode_tok_s']:.1f} tok/s (start→end, "
                f"{d.get('torch_threads', '?')} threads)" if base else ""),
             "", "| structure | metric | target | removed (decoder) | params | MB | ppl | prefill tok/s (×) "
                 "| decode tok/s (×) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        name = r["kind"] + (f" ({r['heads_mode']})" if r["heads_mode"] else "") \
            + (" + bias comp." if r.get("bias_compensation") else "")
        target = f"{r['target']} blocks" if r["kind"] == "blocks" else f"{r['target']:.0%}"
        if "unreachable" in r:
            lines.append(f"| {name} | {r['metric']} | {target} | unreachable: {r['unreachable']} | | | | | |")
            continue
        if r["kind"] == "masked":
            sp = "= dense | = dense"
        elif base and "prefill_tok_s" in r:
            ref = r.get("paired_dense") or base   # --paired-speed: the dense time interleaved with it
            sp = (f"{r['prefill_tok_s']:.0f} ({r['prefill_tok_s'] / ref['prefill_tok_s']:.2f}) | "
                  f"{r['decode_tok_s']:.1f} ({r['decode_tok_s'] / ref['decode_tok_s']:.2f})")
            if r.get("speed_of"):
                sp = " | ".join(f"{cell} *" for cell in sp.split(" | "))
        else:
            sp = " | "
        lines.append(f"| {name} | {r['metric']} | {target} | {r['decoder_removed']:.1%} | {r['params']:,} | "
                     f"{r['checkpoint_mb']:.1f} | {r['ppl']:.3f} | {sp} |")
    if any(r.get("speed_of") for r in results["runs"]):
        lines += ["", "\\* timed on a model of the same shapes (speed depends on the shapes, not on which "
                  "structures went): the first metric's model of that structure and count, or with "
                  "--speed-only the dense model with the first structures of each block removed."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
