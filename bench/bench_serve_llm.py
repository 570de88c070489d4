"""Benchmark: grammar-constrained vs free generation with the serve-llm generator.

Same prompts (the language summary as the system prompt, a rotating user request), same
seeds; the two modes alternate request by request so that a busy machine slows both
alike. Budgets: ``--max-tokens`` for a constrained formula (the closer finishes it in
budget), ``--free-max-tokens`` for free text (larger: a free reply needs room for its
prose, and one cut at the budget is reported as such). Reports, in one run:

- decode tokens/s of each and their ratio, counting the tokens the *model sampled*
  (one forward pass each: rejected attempts and tokens the closer's fallback dropped
  included; the tokens the closer appends without a model call excluded) over the
  decode time. Constrained replies are type-checked and sampled again while the checker
  rejects them (``--max-attempts``, as the server does); the seconds per reply cover
  all attempts;
- the share of replies that are valid formulas, i.e. parse (``parse_expr``) and
  type-check (``prunedsl.parse``). A free reply is scored as a whole ("strict") and by
  its first line that parses after stripping Markdown ("lenient");
- mean attempts per constrained reply, and how many were valid on the first attempt
  (what the grammar alone gives);
- how replies ended: the model's EOS, the grammar complete (nothing more allowed), the
  closer at the budget, the fallback to a safe point, or the budget (free text cut);
- a few example replies of each mode.

    python bench/bench_serve_llm.py --model smollm2-135m --n 50 --max-tokens 24 --free-max-tokens 96 \
        --threads 1 --out docs/serve_llm.md

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
from prunedsl.serve.generate import MAX_ATTEMPTS, Generator, SamplingParams
from prunedsl.serve.prompts import system_prompt
from prunedsl.serve.replies import check_reply

REQUESTS = (
    "Propose a new pruning metric formula.",
    "Write a pruning metric that combines the weight magnitude with the input norm.",
    "Give a pruning metric formula that improves on wanda.",
    "Write one formula that scores weights for pruning, using W and ‖X‖.",
    "Suggest a pruning metric that uses the gradient G.",
)
MODES = ("formula", None)  # constrained, free
ENDINGS = ("eos", "grammar", "stop", "closer", "fallback", "budget")  # Completion.ended_by


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
    system = {"role": "system", "content": system_prompt("formula")}
    stats = {m: {"sampled": 0, "tokens": 0, "returned_tokens": 0, "decode_s": 0.0, "prefill_s": 0.0, "parses": 0,
                 "typed": 0, "lenient_parses": 0, "lenient_typed": 0, "attempts": 0, "first_attempt_typed": 0,
                 "ended_by": {e: 0 for e in ENDINGS}, "examples": [], "rejected_examples": []} for m in MODES}
    for i in range(args.n):
        ids = gen.prompt_ids([system, {"role": "user", "content": REQUESTS[i % len(REQUESTS)]}])
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            budget = args.max_tokens if mode else args.free_max_tokens
            c = gen.generate(ids, SamplingParams(max_tokens=budget, temperature=args.temperature,
                                                 seed=args.seed + i, grammar=mode, max_attempts=args.max_attempts))
            s = stats[mode]
            s["sampled"] += c.sampled_tokens         # forward passes: rejected attempts too, not the closer's
            s["tokens"] += c.generated_tokens        # tokens of every attempt's text (closer's included)
            s["returned_tokens"] += c.completion_tokens
            s["decode_s"] += c.decode_s
            s["prefill_s"] += c.prefill_s
            s["ended_by"][c.ended_by] += 1
            s["attempts"] += c.attempts
            parses, typed, _ = check_reply(c.text.strip(), "formula")
            s["parses"] += parses
            s["typed"] += typed
            s["first_attempt_typed"] += typed and c.attempts == 1
            line = c.text.strip() if parses else lenient(c.text)
            s["lenient_parses"] += line is not None
            s["lenient_typed"] += line is not None and check_reply(line, "formula")[1]
            if len(s["examples"]) < args.show:
                s["examples"].append({"seed": args.seed + i, "request": REQUESTS[i % len(REQUESTS)], "text": c.text,
                                      "ended_by": c.ended_by, "valid": bool(typed), "attempts": c.attempts})
            s["rejected_examples"] += list(c.rejected)[:max(0, args.show - len(s["rejected_examples"]))]
        if (i + 1) % 10 == 0:
            log(f"  {i + 1}/{args.n} prompts")
    for mode, s in stats.items():
        s["tok_per_s"] = s["sampled"] / max(s["decode_s"], 1e-9)
        s["mean_attempts"] = s["attempts"] / args.n
        log(f"examples ({mode or 'free'}): " + " | ".join(repr(e["text"][:80]) for e in s["examples"]))
        if s["rejected_examples"]:
            log(f"rejected by the checker ({mode}): " + " | ".join(repr(t[:80]) for t in s["rejected_examples"]))
    return stats


def _example(e: dict) -> str:
    text = e["text"].replace("`", "'").replace("\n", " ⏎ ")
    if len(text) > 240:
        text = text[:240] + " …"
    return (f"- seed {e['seed']}, “{e['request']}” → `{text}` ({e['ended_by']}; "
            f"{'valid' if e['valid'] else 'not a valid formula'}"
            + (f"; {e['attempts']} attempts" if e["attempts"] > 1 else "") + ")")


def markdown(result: dict, command: str) -> str:
    con, free, n = result["constrained"], result["free"], result["n"]
    k = result["max_attempts"]

    def per_reply(s):
        return f"{(s['prefill_s'] + s['decode_s']) / n:.2f}"

    def ended(s, e):
        return f"{s['ended_by'][e]}/{n}"

    rows = [
        ("**decode tokens/s** (tokens the model sampled, one forward pass each; rejected attempts and "
         "dropped tokens included, the closer's tokens not)", f"**{con['tok_per_s']:.2f}**",
         f"**{free['tok_per_s']:.2f}**"),
        ("**ratio constrained / free tokens/s**", f"**{result['ratio']:.2f}**", ""),
        ("max_tokens", str(result["max_tokens"]), str(result["free_max_tokens"])),
        ("seconds per reply (prompt + decode, all attempts)", per_reply(con), per_reply(free)),
        ("tokens per returned reply", f"{con['returned_tokens'] / n:.1f}", f"{free['returned_tokens'] / n:.1f}"),
        ("tokens sampled by the model per reply (all attempts)", f"{con['sampled'] / n:.1f}",
         f"{free['sampled'] / n:.1f}"),
        ("tokens of all attempts' texts per reply (the closer's included)", f"{con['tokens'] / n:.1f}",
         f"{free['tokens'] / n:.1f}"),
        (f"**mean attempts per reply** (at most {k})", f"**{con['mean_attempts']:.2f}**", "1"),
        ("valid on the first attempt (the grammar alone)", f"{con['first_attempt_typed']}/{n}", "-"),
        ("reply parses (whole reply)", f"{con['parses']}/{n}", f"{free['parses']}/{n}"),
        ("**valid formula: parses and type-checks (whole reply)**", f"**{con['typed']}/{n}**",
         f"**{free['typed']}/{n}**"),
        ("a line parses and type-checks (lenient: Markdown stripped)", f"{con['lenient_typed']}/{n}",
         f"{free['lenient_typed']}/{n}"),
        ("ended: the model sampled EOS", ended(con, "eos"), ended(free, "eos")),
        ("ended: the grammar was complete (no token allowed but EOS)", ended(con, "grammar"), "-"),
        ("ended: finished by the closer at the budget", ended(con, "closer"), "-"),
        ("ended: cut back to a safe point and closed (fallback)", ended(con, "fallback"), "-"),
        ("ended: max_tokens reached (free: the text is cut; constrained: the formula happened to be complete)", ended(con, "budget"), ended(free, "budget")),
    ]
    head = [
        "# serve-llm: grammar-constrained vs free generation",
        "",
        f"Command: `{command}`",
        "",
        f"{result['date']} | {result['model']} | {n} replies per mode, max_tokens {result['max_tokens']} "
        f"(constrained) / {result['free_max_tokens']} (free), temperature {result['temperature']}, "
        f"seeds {result['seed']}..{result['seed'] + n - 1} | "
        f"{result['threads']} torch threads, {result['machine']} | {result['minutes']:.1f} min",
        "",
        "Constrained: `prunedsl_grammar: formula` (llguidance mask from grammar.lark), each reply "
        f"type-checked and sampled again while the checker rejects it (at most {k} attempts). "
        "Free: the same prompt and seed, no mask, no check, a larger budget. Tokens/s count "
        "the tokens the model sampled (forward passes) over the decode time: the tokens the "
        "closer appends to finish a formula cost no forward pass and are not counted, the "
        "tokens the fallback drops are. The two modes alternate request by request on the "
        "same (loaded) machine.",
        "",
        "| | constrained (formula) | free |",
        "|---|---|---|",
    ]
    body = [f"| {a} | {b} | {c} |" for a, b, c in rows]
    examples = ["", f"## Example replies (the first {len(con['examples'])} of each mode)", "",
                "Constrained:", ""] + [_example(e) for e in con["examples"]] + \
               ["", "Free:", ""] + [_example(e) for e in free["examples"]]
    return "\n".join(head + body + examples) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=50, help="replies per mode (default 50)")
    p.add_argument("--max-tokens", type=int, default=24, help="max_tokens of a constrained request (default 24)")
    p.add_argument("--free-max-tokens", type=int, default=96,
                   help="max_tokens of a free request (default 96: room for the prose around a formula)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0, help="first seed; request i uses seed + i")
    p.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS,
                   help=f"constrained replies sampled until one type-checks (default {MAX_ATTEMPTS}, as the server)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", metavar="FILE", help="write the Markdown table here (e.g. docs/serve_llm.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--show", type=int, default=5, help="example replies per mode (stderr and the table)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + shlex.join(["bench/bench_serve_llm.py", *argv])

    t0 = time.perf_counter()
    gen = Generator(load_model(args.model))
    gen.warm_up()
    log(f"{args.model} loaded in {time.perf_counter() - t0:.1f} s; {args.n} replies per mode, "
        f"max_tokens {args.max_tokens} / free {args.free_max_tokens}, temperature {args.temperature}, max attempts {args.max_attempts}, "
        f"torch threads {torch.get_num_threads()}")
    stats = run(gen, args)
    con, free = stats["formula"], stats[None]
    result = {"model": args.model, "n": args.n, "max_tokens": args.max_tokens,
              "free_max_tokens": args.free_max_tokens, "temperature": args.temperature,
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
    print(f"bench_serve_llm: {args.model} | {n} replies per mode, max_tokens {args.max_tokens} "
          f"(free {args.free_max_tokens}) | "
          f"constrained/free tokens/s = {result['ratio']:.2f} | valid formulas {con['typed']}/{n} constrained "
          f"(mean {con['mean_attempts']:.2f} attempts; {con['first_attempt_typed']}/{n} on the first) vs "
          f"{free['typed']}/{n} free ({free['lenient_typed']}/{n} lenient) | {result['minutes']:.1f} min")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
