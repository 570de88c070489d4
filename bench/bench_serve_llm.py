"""Benchmark: grammar-constrained vs free generation with the serve-llm generator.

Same prompts (the language summary as the system prompt, a rotating user request), same
seeds, same ``max_tokens``; the two modes alternate request by request so that a busy
machine slows both alike. Reports decode tokens/s of each and their ratio, and the share
of replies that are valid formulas: *parses* (``parse_expr``) and *type-checks*
(``prunedsl.parse``). A free reply is scored twice: as a whole ("strict") and by its
first line that is a formula after stripping Markdown ("lenient").

    python bench/bench_serve_llm.py --model smollm2-135m --n 50 --max-tokens 24

Runs the generator in-process (no HTTP) so the timings are generation only; the server
adds a JSON round trip per request.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time

import torch

from prunedsl.runtime.models import load_model
from prunedsl.runtime.serve.replies import check_reply
from prunedsl.runtime.serve.generate import Generator, SamplingParams
from prunedsl.runtime.serve.prompts import language_summary

REQUESTS = (
    "Propose a new pruning metric formula.",
    "Write a pruning metric that combines the weight magnitude with the input norm.",
    "Give a pruning metric formula that improves on wanda.",
    "Write one formula that scores weights for pruning, using W and ‖X‖.",
    "Suggest a pruning metric that uses the gradient G.",
)


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=50, help="replies per mode (default 50)")
    p.add_argument("--max-tokens", type=int, default=24, help="max_tokens of every request (default 24)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0, help="first seed; request i uses seed + i")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--show", type=int, default=5, help="example replies per mode to print (stderr)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    gen = Generator(load_model(args.model))
    gen.warm_up()
    log(f"{args.model} loaded in {time.perf_counter() - t0:.1f} s; {args.n} replies per mode, "
        f"max_tokens {args.max_tokens}, temperature {args.temperature}, torch threads {torch.get_num_threads()}")
    system = {"role": "system", "content": language_summary("formula")}
    stats = {m: {"tokens": 0, "decode_s": 0.0, "prefill_s": 0.0, "parses": 0, "typed": 0, "lenient_parses": 0,
                 "lenient_typed": 0, "closed": 0, "stop": 0, "examples": []} for m in ("formula", None)}
    for i in range(args.n):
        ids = gen.prompt_ids([system, {"role": "user", "content": REQUESTS[i % len(REQUESTS)]}])
        for mode in ("formula", None) if i % 2 == 0 else (None, "formula"):
            c = gen.generate(ids, SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                                                 seed=args.seed + i, grammar=mode))
            s = stats[mode]
            s["tokens"] += c.completion_tokens
            s["decode_s"] += c.decode_s
            s["prefill_s"] += c.prefill_s
            s["closed"] += c.closed
            s["stop"] += c.finish_reason == "stop"
            parses, typed, _ = check_reply(c.text.strip(), "formula")
            s["parses"] += parses
            s["typed"] += typed
            line = c.text.strip() if parses else lenient(c.text)
            s["lenient_parses"] += line is not None
            s["lenient_typed"] += line is not None and check_reply(line, "formula")[1]
            if len(s["examples"]) < args.show:
                s["examples"].append(c.text)
        if (i + 1) % 10 == 0:
            log(f"  {i + 1}/{args.n} prompts")
    for mode, s in stats.items():
        s["tok_per_s"] = s["tokens"] / max(s["decode_s"], 1e-9)
        log(f"examples ({mode or 'free'}): " + " | ".join(repr(t[:80]) for t in s["examples"]))
    con, free = stats["formula"], stats[None]
    ratio = con["tok_per_s"] / free["tok_per_s"]
    result = {"model": args.model, "n": args.n, "max_tokens": args.max_tokens, "temperature": args.temperature,
              "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {platform.processor()}".strip(),
              "constrained": con, "free": free, "ratio": ratio, "minutes": (time.perf_counter() - t0) / 60}
    if args.json:
        json.dump(result, sys.stdout, default=str)
        print()
        return 0
    n = args.n
    print(f"bench_serve_llm: {args.model} | {n} replies per mode, max_tokens {args.max_tokens}, "
          f"T={args.temperature} | constrained/free tokens/s = {ratio:.2f} | "
          f"type-checked formulas {con['typed']}/{n} constrained vs {free['lenient_typed']}/{n} free (lenient) | "
          f"{result['minutes']:.1f} min, {result['threads']} torch threads")
    print()
    rows = [("decode tokens/s", f"{con['tok_per_s']:.2f}", f"{free['tok_per_s']:.2f}"),
            ("tokens per reply", f"{con['tokens'] / n:.1f}", f"{free['tokens'] / n:.1f}"),
            ("ended by the model (EOS)", f"{con['stop']}/{n}", f"{free['stop']}/{n}"),
            ("finished by the closer at the budget", f"{con['closed']}/{n}", "-"),
            ("reply parses (whole reply)", f"{con['parses']}/{n}", f"{free['parses']}/{n}"),
            ("reply type-checks (whole reply)", f"{con['typed']}/{n}", f"{free['typed']}/{n}"),
            ("a line parses (lenient)", f"{con['lenient_parses']}/{n}", f"{free['lenient_parses']}/{n}"),
            ("a line type-checks (lenient)", f"{con['lenient_typed']}/{n}", f"{free['lenient_typed']}/{n}")]
    print("| | constrained (formula) | free |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(f"| ratio constrained/free tokens/s | {ratio:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
