"""Benchmark: grammar-constrained vs free generation with the serve-llm generator.

Same prompts (the language summary as the system prompt, a rotating user request), same
seeds, same ``max_tokens``; the two modes alternate request by request so that a busy
machine slows both alike. Reports, in one run:

- decode tokens/s of each and their ratio. Constrained replies are type-checked and
  sampled again while the checker rejects them (``--max-attempts``, as the server does):
  its tokens/s counts *every* sampled token, rejected attempts included, and the
  seconds per reply cover all attempts;
- the share of replies that are valid formulas, i.e. parse (``parse_expr``) and
  type-check (``prunedsl.parse``). A free reply is scored as a whole ("strict") and by
  its first line that parses after stripping Markdown ("lenient");
- mean attempts per constrained reply, and how many were valid on the first attempt
  (what the grammar alone gives).

    python bench/bench_serve_llm.py --model smollm2-135m --n 50 --max-tokens 24 --out docs/serve_llm.md

Runs the generator in-process (no HTTP) so the timings are generation only; the server
adds a JSON round trip per request. ``--out`` writes the Markdown table, headed by the
command that made it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch

from prunedsl.runtime.models import load_model
from prunedsl.runtime.serve.generate import MAX_ATTEMPTS, Generator, SamplingParams
from prunedsl.runtime.serve.prompts import language_summary
from prunedsl.runtime.serve.replies import check_reply

REQUESTS = (
    "Propose a new pruning metric formula.",
    "Write a pruning metric that combines the weight magnitude with the input norm.",
    "Give a pruning metric formula that improves on wanda.",
    "Write one formula that scores weights for pruning, using W and ‖X‖.",
    "Suggest a pruning metric that uses the gradient G.",
)
MODES = ("formula", None)  # constrained, free


def lenient(text: str) -> str | None:
    """The first line of a free reply that parses, after stripping Markdown and prefixes."""
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*]|\d+[.)])\s+", "", line.strip().strip("`").strip())
        line = re.sub(r"^(?:formula|metric|answer)\s*[:=]\s*", "", line, flags=re.I).strip("`$ ")
        if line and check_reply(line, "formula")[0]:
            return line
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(gen: Generator, args) -> dict:
    system = {"role": "system", "content": language_summary("formula")}
    stats = {m: {"tokens": 0, "returned_tokens": 0, "decode_s": 0.0, "prefill_s": 0.0, "parses": 0, "typed": 0,
                 "lenient_parses": 0, "lenient_typed": 0, "closed": 0, "stop": 0, "attempts": 0,
                 "first_attempt_typed": 0, "examples": [], "rejected_examples": []} for m in MODES}
    for i in range(args.n):
        ids = gen.prompt_ids([system, {"role": "user", "content": REQUESTS[i % len(REQUESTS)]}])
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            c = gen.generate(ids, SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                                                 seed=args.seed + i, grammar=mode, max_attempts=args.max_attempts))
            s = stats[mode]
            s["tokens"] += c.generated_tokens        # every sampled token, rejected attempts too
            s["returned_tokens"] += c.completion_tokens
            s["decode_s"] += c.decode_s
            s["prefill_s"] += c.prefill_s
            s["closed"] += c.closed
            s["stop"] += c.finish_reason == "stop"
            s["attempts"] += c.attempts
            parses, typed, _ = check_reply(c.text.strip(), "formula")
            s["parses"] += parses
            s["typed"] += typed
            s["first_attempt_typed"] += typed and c.attempts == 1
            line = c.text.strip() if parses else lenient(c.text)
            s["lenient_parses"] += line is not None
            s["lenient_typed"] += line is not None and check_reply(line, "formula")[1]
            if len(s["examples"]) < args.show:
                s["examples"].append(c.text)
            s["rejected_examples"] += list(c.rejected)[:max(0, args.show - len(s["rejected_examples"]))]
        if (i + 1) % 10 == 0:
            log(f"  {i + 1}/{args.n} prompts")
    for mode, s in stats.items():
        s["tok_per_s"] = s["tokens"] / max(s["decode_s"], 1e-9)
        s["mean_attempts"] = s["attempts"] / args.n
        log(f"examples ({mode or 'free'}): " + " | ".join(repr(t[:80]) for t in s["examples"]))
        if s["rejected_examples"]:
            log(f"rejected by the checker ({mode}): " + " | ".join(repr(t[:80]) for t in s["rejected_examples"]))
    return stats


def markdown(result: dict, command: str) -> str:
    con, free, n = result["constrained"], result["free"], result["n"]
    k = result["max_attempts"]

    def per_reply(s):
        return f"{(s['prefill_s'] + s['decode_s']) / n:.2f}"

    rows = [
        ("decode tokens/s (every sampled token, rejected attempts included)", f"{con['tok_per_s']:.2f}",
         f"{free['tok_per_s']:.2f}"),
        ("**ratio constrained / free tokens/s**", f"**{result['ratio']:.2f}**", ""),
        ("seconds per reply (prompt + decode, all attempts)", per_reply(con), per_reply(free)),
        ("tokens per returned reply", f"{con['returned_tokens'] / n:.1f}", f"{free['returned_tokens'] / n:.1f}"),
        ("tokens sampled per reply (all attempts)", f"{con['tokens'] / n:.1f}", f"{free['tokens'] / n:.1f}"),
        (f"**mean attempts per reply** (at most {k})", f"**{con['mean_attempts']:.2f}**", "1"),
        ("valid on the first attempt (the grammar alone)", f"{con['first_attempt_typed']}/{n}", "-"),
        ("reply parses (whole reply)", f"{con['parses']}/{n}", f"{free['parses']}/{n}"),
        ("**valid formula: parses and type-checks (whole reply)**", f"**{con['typed']}/{n}**",
         f"**{free['typed']}/{n}**"),
        ("a line parses and type-checks (lenient: Markdown stripped)", f"{con['lenient_typed']}/{n}",
         f"{free['lenient_typed']}/{n}"),
        ("ended by the model (EOS)", f"{con['stop']}/{n}", f"{free['stop']}/{n}"),
        ("finished by the closer at the budget", f"{con['closed']}/{n}", "-"),
    ]
    head = [
        "# serve-llm: grammar-constrained vs free generation",
        "",
        f"Command: `{command}`",
        "",
        f"{result['date']} | {result['model']} | {n} replies per mode, max_tokens {result['max_tokens']}, "
        f"temperature {result['temperature']}, seeds {result['seed']}..{result['seed'] + n - 1} | "
        f"{result['threads']} torch threads, {result['machine']} | {result['minutes']:.1f} min",
        "",
        "Constrained: `prunedsl_grammar: formula` (llguidance mask from grammar.lark), each reply "
        f"type-checked and sampled again while the checker rejects it (at most {k} attempts). "
        "Free: the same prompt and seed, no mask, no check.",
        "",
        "| | constrained (formula) | free |",
        "|---|---|---|",
    ]
    return "\n".join(head + [f"| {a} | {b} | {c} |" for a, b, c in rows]) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=50, help="replies per mode (default 50)")
    p.add_argument("--max-tokens", type=int, default=24, help="max_tokens of every request (default 24)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0, help="first seed; request i uses seed + i")
    p.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS,
                   help=f"constrained replies sampled until one type-checks (default {MAX_ATTEMPTS}, as the server)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", metavar="FILE", help="write the Markdown table here (e.g. docs/serve_llm.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--show", type=int, default=5, help="example replies per mode to print (stderr)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + shlex.join(["bench/bench_serve_llm.py", *argv])

    t0 = time.perf_counter()
    gen = Generator(load_model(args.model))
    gen.warm_up()
    log(f"{args.model} loaded in {time.perf_counter() - t0:.1f} s; {args.n} replies per mode, "
        f"max_tokens {args.max_tokens}, temperature {args.temperature}, max attempts {args.max_attempts}, "
        f"torch threads {torch.get_num_threads()}")
    stats = run(gen, args)
    con, free = stats["formula"], stats[None]
    result = {"model": args.model, "n": args.n, "max_tokens": args.max_tokens, "temperature": args.temperature,
              "seed": args.seed, "max_attempts": args.max_attempts, "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {platform.processor()}".strip(),
              "date": datetime.date.today().isoformat(), "command": command,
              "constrained": con, "free": free, "ratio": con["tok_per_s"] / max(free["tok_per_s"], 1e-9),
              "minutes": (time.perf_counter() - t0) / 60}
    table = markdown(result, command)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table, encoding="utf-8")
        log(f"wrote {args.out}")
    if args.json:
        json.dump(result, sys.stdout, default=str)
        print()
        return 0
    n = args.n
    print(f"bench_serve_llm: {args.model} | {n} replies per mode, max_tokens {args.max_tokens} | "
          f"constrained/free tokens/s = {result['ratio']:.2f} | valid formulas {con['typed']}/{n} constrained "
          f"(mean {con['mean_attempts']:.2f} attempts; {con['first_attempt_typed']}/{n} on the first) vs "
          f"{free['typed']}/{n} free ({free['lenient_typed']}/{n} lenient) | {result['minutes']:.1f} min")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
