"""Benchmark: how much of each GCoT prompt the server's KV cache serves, with a real model.

A tiny real search (``prunedsl search --proposer llm`` on the tiny random Llama of
``runtime.testing``, so the fitness costs seconds) asks a locally served model
(``serve-llm``'s app in this process, ``--model``, default qwen2.5-coder-0.5b, decoding
constrained to ``+reply``) for its proposals. The generator is wrapped to record, for
every request, the prompt's tokens, those served from the cache of the previous prompt's
common prefix (``usage.prompt_tokens_details.cached_tokens`` in the response), and the
prefill and decode seconds. Reports:

- the share of prompt tokens served from the cache over the consecutive GCoT prompts;
- prefill seconds of the last (a typical) GCoT prompt cold (empty cache), warm (the
  previous prompt of the search in the cache: what a search gets), and fully cached;
- the proposer's counts per reply (``search/reply_stats.py``: lines that parse and
  type-check, new formulas) and seconds of server time per valid new formula;
- the machine's load average at the start and the end (timings on a shared machine).

    python bench/bench_prompt_cache.py --model qwen2.5-coder-0.5b --budget 10 \
        --prompt-view compact --out docs/prompt_cache.md

``--prompt-view tree`` runs the earlier prompt layout for comparison (``search/prompt.py``).
``--replay RUN.json`` (the JSON an ``--out`` run writes next to its Markdown) answers the
requests with that run's reply texts instead of sampling: no generation, token counts
only (the cache share of each view on the same replies, seconds apart), e.g.

    python bench/bench_prompt_cache.py --replay docs/prompt_cache.json --prompt-view tree
``--max-requests`` caps the requests (a safety bound: later ones get an error and the
search stops, saved). ``--out`` writes the Markdown, headed by the command.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from prunedsl import cli
from prunedsl.runtime.models import load_model
from prunedsl.runtime.testing import save_tiny_workspace
from prunedsl.search.reply_stats import ReplyStats, reply_rows
from prunedsl.serve.app import start_server
from prunedsl.serve.generate import Completion, Generator


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Recorder:
    """Wraps ``Generator.generate``: one record per request, at most ``cap`` requests, each
    reply cut at ``max_tokens`` (the proposer asks for 512; a CPU-served model is slow)."""

    def __init__(self, gen: Generator, cap: int, max_tokens: int, replay: list[str] | None = None):
        self.gen, self.cap, self.max_tokens, self.real, self.calls = gen, cap, max_tokens, gen.generate, []
        self.replay = replay
        gen.generate = self

    def _replayed(self, ids) -> Completion:
        """The next recorded reply; the cached tokens are those the server's cache would
        serve (the common prefix with the previous prompt, less one token)."""
        if len(self.calls) >= len(self.replay):
            raise RuntimeError(f"all {len(self.replay)} recorded replies are used")
        prev = self.calls[-1]["ids"] if self.calls else []
        n = next((i for i, (a, b) in enumerate(zip(prev, ids)) if a != b), min(len(prev), len(ids)))
        return Completion(self.replay[len(self.calls)], "stop", len(ids), 0, 0.0, 0.0,
                          cached_tokens=min(n, len(ids) - 1) if prev else 0)

    def __call__(self, ids, params, *limits):
        if len(self.calls) >= self.cap:
            raise RuntimeError(f"the benchmark's cap of {self.cap} requests is reached")
        params = dataclasses.replace(params, max_tokens=min(params.max_tokens, self.max_tokens))
        t0 = time.perf_counter()
        c = self._replayed(ids) if self.replay is not None else self.real(ids, params, *limits)
        self.calls.append({"ids": list(ids), "prompt_tokens": c.prompt_tokens, "cached_tokens": c.cached_tokens,
                           "prefill_s": c.prefill_s, "decode_s": c.decode_s, "seconds": time.perf_counter() - t0,
                           "completion_tokens": c.completion_tokens, "attempts": c.attempts, "text": c.text})
        log(f"request {len(self.calls)}: prompt {c.prompt_tokens} (cached {c.cached_tokens}), prefill "
            f"{c.prefill_s:.1f} s, {c.completion_tokens} tokens in {c.decode_s:.1f} s: {c.text!r}")
        return c


def prefill_seconds(gen: Generator, ids: list[int], before: list[int] | None) -> tuple[float, int]:
    """Seconds to prefill ``ids`` with the cache holding ``before`` (None: empty)."""
    with gen.lock, torch.inference_mode():
        gen._prefix = None
        if before is not None:
            gen._prefill(before)
        t0 = time.perf_counter()
        _, cached = gen._prefill(ids)
        return time.perf_counter() - t0, cached


def run(args) -> dict:
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    gen = Generator(load_model(args.model))
    replay = json.loads(args.replay.read_text())["texts"] if args.replay else None
    if replay is None:
        gen.warm_up()
    log(f"{args.model} loaded in {time.perf_counter() - t0:.1f} s")
    rec = Recorder(gen, args.max_requests, args.max_tokens, replay)
    with tempfile.TemporaryDirectory() as tmp:
        root = save_tiny_workspace(Path(tmp) / "tiny")
        out = Path(tmp) / "search"
        with start_server(gen, model_id=args.model) as srv:
            t1 = time.perf_counter()
            cli.main(["search", "--model", str(root / "model"), "--data-dir", str(root / "data"),
                      "--sparsity", "0.5", "--proposer", "llm", "--llm-base-url", srv.url,
                      "--llm-model", args.model, "--llm-timeout", "900", "--llm-max-retries", "0",
                      "--llm-max-outage", "1", "--llm-temperature", str(args.temperature), "--llm-seed", str(args.seed),
                      "--llm-prompt-view", args.prompt_view, "--budget", str(args.budget),
                      "--full-evals", "2", "--batch", str(args.batch), "--nsamples", "2", "--seqlen", "16",
                      "--val-windows", "2", "--proxy-blocks", "0", "--proxy-rank", "0", "--test-windows", "2",
                      "--test-seqlen", "16", "--report-top", "1", "--seed", str(args.seed),
                      "--output", str(out), "--quiet"])
            search_s = time.perf_counter() - t1
        state = json.loads((out / "state.json").read_text())
    calls = rec.calls
    gen.generate = rec.real
    replies = [ReplyStats.from_json(r) for r in state.get("proposer", {}).get("replies", [])]
    prompt = sum(c["prompt_tokens"] for c in calls)
    cached = sum(c["cached_tokens"] for c in calls)
    later = calls[1:]  # the first prompt finds an empty cache whatever the layout
    result = {"model": args.model, "prompt_view": args.prompt_view, "requests": len(calls),
              "replay": str(args.replay) if args.replay else None,
              "prompt_tokens": prompt, "cached_tokens": cached, "cached_share": cached / max(1, prompt),
              "cached_share_after_first": sum(c["cached_tokens"] for c in later)
              / max(1, sum(c["prompt_tokens"] for c in later)),
              "prompt_tokens_each": [c["prompt_tokens"] for c in calls],
              "cached_tokens_each": [c["cached_tokens"] for c in calls],
              "prefill_s_each": [round(c["prefill_s"], 2) for c in calls],
              "server_s": sum(c["seconds"] for c in calls), "search_s": search_s,
              "replies": [r.to_json() for r in replies], "texts": [c["text"] for c in calls]}
    new = sum(r.new for r in replies)
    result["server_s_per_new_formula"] = result["server_s"] / new if new else None
    if len(calls) >= 2 and replay is None:
        last, prev = calls[-1]["ids"], calls[-2]["ids"]
        cold, _ = prefill_seconds(gen, last, None)
        warm, warm_cached = prefill_seconds(gen, last, prev)
        full, _ = prefill_seconds(gen, last, last)
        result.update(cold_prefill_s=cold, warm_prefill_s=warm, warm_cached_tokens=warm_cached,
                      cached_prefill_s=full, typical_prompt_tokens=len(last))
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    return result


def markdown(r: dict, command: str) -> str:
    la = r["load_average"]
    md = [f"# KV-cache reuse of GCoT prompts: {r['model']}, prompt view `{r['prompt_view']}`", "",
          f"`{command}`", "",
          f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}; load average {la['start'][0]:.1f} at the start, {la['end'][0]:.1f} at the end "
          "(a shared machine: the seconds are slow and noisy; the token counts are not).", "",
          *([f"Replayed: the replies of `{r['replay']}`, not sampled (token counts only; a reply "
             "names nodes of the run it came from).", ""] if r.get("replay") else []),
          "| | |", "|---|---|",
          f"| requests (consecutive GCoT prompts of one tiny search) | {r['requests']} |",
          f"| prompt tokens, all requests | {r['prompt_tokens']} |",
          f"| served from the cache (previous prompt's common prefix) | {r['cached_tokens']} "
          f"({100 * r['cached_share']:.0f}%) |",
          f"| the same, requests 2.. (the first finds an empty cache) | "
          f"{100 * r['cached_share_after_first']:.0f}% |"]
    if "cold_prefill_s" in r:
        md += [f"| prefill of the last prompt ({r['typical_prompt_tokens']} tokens), cold | "
               f"{r['cold_prefill_s']:.2f} s |",
               f"| the same, the previous prompt in the cache ({r['warm_cached_tokens']} tokens reused) | "
               f"{r['warm_prefill_s']:.2f} s |",
               f"| the same, fully cached (a resampled attempt) | {r['cached_prefill_s']:.2f} s |"]
    per = r["server_s_per_new_formula"]
    if not r.get("replay"):
        md += [f"| server seconds, all requests | {r['server_s']:.0f} s |",
               f"| server seconds per valid new formula | {per:.0f} s |" if per else
               "| server seconds per valid new formula | – (none) |"]
    md += ["", "Per request: prompt tokens " + ", ".join(map(str, r["prompt_tokens_each"])) + "; cached "
           + ", ".join(map(str, r["cached_tokens_each"])) + "; prefill seconds "
           + ", ".join(map(str, r["prefill_s_each"])) + ".", "",
           "## What the replies gave (search/reply_stats.py)", "", "| | |", "|---|---|"]
    md += [f"| {a} | {b} |" for a, b in reply_rows([ReplyStats.from_json(x) for x in r["replies"]])]
    md += ["", "Replies:", ""] + [f"{i + 1}. `{t!r}`" for i, t in enumerate(r["texts"])]
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="the served (proposing) model")
    p.add_argument("--prompt-view", default="compact", choices=("compact", "tree"))
    p.add_argument("--budget", type=int, default=10, help="proposals the search asks for (not counting seeds)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--max-requests", type=int, default=14)
    p.add_argument("--max-tokens", type=int, default=96, help="a reply's tokens at most")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0, help="the search's --seed and --llm-seed (request k is sampled "
                                                        "with seed + k)")
    p.add_argument("--out", type=Path, help="write the Markdown here, and the JSON (replies included) "
                                             "next to it (.json)")
    p.add_argument("--replay", type=Path, metavar="RUN.json", help="answer with a run's recorded replies")
    args = p.parse_args(argv)
    r = run(args)
    command = "python bench/bench_prompt_cache.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = markdown(r, command)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps({"command": command, **r}, indent=1,
                                                            ensure_ascii=False) + "\n", encoding="utf-8")
    print(text)
    print(json.dumps({k: v for k, v in r.items() if k not in ("texts",)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
