"""Benchmark: the search's proposers compared at equal compute (issue #14).

Each arm runs the same search task (``prunedsl search``: same model, sparsity, fitness
settings, budget and full-evaluation count) as a subprocess with the same wall-clock
``--time-limit``; an ``llm`` arm first starts ``prunedsl serve-llm --model M`` and the time
its replies take is inside the limit (the server is started before the clock: loading it
is reported, not charged). The limit covers the seeds and the search; the selection slice
and the report (test ppl of the winner and the baselines) come after it, equal for all.

Columns, from each run's ``state.json`` (search/records.py counters):

- proposals: what the proposer returned (LLM: formula lines of its replies);
- valid: those that parsed, type-checked and scored (proposals − failed);
- new: valid and not seen before by canonical form and recipe (valid − duplicates);
- screened: new candidates the proxy screened (seeds not counted);
- full evals: discovered candidates pruned for real (seeds not counted);
- best val ppl and its formula: the best discovered candidate by fitness val ppl, and the
  winner on the selection slice with its test ppl (the report's verdict, with the paired
  band to wanda).

    python bench/bench_proposers.py --minutes 30 --out docs/proposers.md       # the study
    python bench/bench_proposers.py --arms evolve:0 enumerate --minutes 5      # a subset
    python bench/bench_proposers.py --quick                                     # tiny model, seconds

Arms: ``evolve:SEED`` (the evolve proposer with that RNG seed), ``enumerate``, and
``llm:MODEL`` (a model alias ``serve-llm`` loads). Results are appended to ``--out``'s JSON
(next to the Markdown) as each arm finishes; a rerun skips arms already there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prunedsl.search.recipe import Recipe, with_tag

DEFAULT_ARMS = ["evolve:0", "evolve:1", "enumerate", "llm:smollm2-135m", "llm:qwen2.5-coder-0.5b",
                "llm:qwen2.5-coder-1.5b"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, threads: int | None, logfile: Path, timeout: float = 1800) -> tuple[subprocess.Popen, int, float]:
    """``prunedsl serve-llm --model MODEL`` on a free port; waits until /v1/models answers."""
    port = free_port()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "prunedsl", "serve-llm", "--model", model, "--port", str(port)],
                            stdout=logfile.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"serve-llm --model {model} exited with {proc.returncode}; see {logfile}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc, port, time.perf_counter() - t0
        except OSError:
            time.sleep(2)
    stop(proc)
    raise SystemExit(f"serve-llm --model {model} did not answer in {timeout:.0f} s; see {logfile}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def search_command(args, arm: str, out: Path, port: int | None) -> list[str]:
    kind, _, value = arm.partition(":")
    cmd = [sys.executable, "-m", "prunedsl", "search", "--model", args.model, "--sparsity", str(args.sparsity),
           "--budget", str(args.budget), "--full-evals", str(args.full_evals),
           "--time-limit", str(args.minutes * 60), "--report-top", "1", "--test-windows", str(args.test_windows),
           "--output", str(out), "--json", "--quiet", *args.search_args]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if kind == "evolve":
        cmd += ["--proposer", "evolve", "--proposer-seed", value or "0"]
    elif kind == "enumerate":
        cmd += ["--proposer", "enumerate"]
    elif kind == "llm":
        cmd += ["--proposer", "llm", "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--llm-model", value]
    else:
        raise SystemExit(f"unknown arm {arm!r}: evolve:SEED, enumerate or llm:MODEL")
    return cmd


def counts(state: dict) -> dict:
    c = state["counters"]
    found = [r for r in state["candidates"] if not r.get("seed")]
    full = [r for r in found if r.get("full") and r["full"].get("val_ppl") is not None]
    best = min(full, key=lambda r: r["full"]["val_ppl"], default=None)
    return {"proposals": c["from_proposer"], "valid": c["from_proposer"] - c["failed"],
            "new": c["from_proposer"] - c["failed"] - c["duplicates"], "screened": c["screened"] - c["seeds"],
            "twins": c["twins"], "full_evals": len(full),
            "best_val_ppl": best and best["full"]["val_ppl"], "best_formula": best and best["pretty"],
            "best_recipe": best and best.get("recipe"), "search_seconds": state["seconds"]["total"]}


def run_arm(args, arm: str, workdir: Path) -> dict:
    kind, _, value = arm.partition(":")
    out = workdir / arm.replace(":", "_").replace("/", "_")
    proc, port, load_s = (None, None, 0.0)
    if kind == "llm":
        proc, port, load_s = start_server(value, args.server_threads, workdir / f"{out.name}.server.log")
        log(f"{arm}: server up in {load_s:.0f} s")
    cmd = search_command(args, arm, out, port)
    log("$ " + shlex.join(cmd))
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        if proc is not None:
            stop(proc)
    wall = time.perf_counter() - t0
    (workdir / f"{out.name}.search.log").write_text(res.stderr)
    if res.returncode != 0:
        return {"arm": arm, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc {res.returncode}",
                "wall_seconds": wall}
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    state = json.loads((out / "state.json").read_text())
    row = {"arm": arm, **counts(state), "wall_seconds": wall, "server_load_seconds": load_s,
           "winner": summary.get("winner"), "verdict": None}
    key = (summary.get("winner") or {}).get("key")
    row["winner_test_ppl"] = state.get("test", {}).get(key, {}).get("test_ppl") if key else None
    report = out / "report.md"
    if report.exists():
        text = report.read_text()
        row["verdict"] = next((line for line in text.splitlines() if line.startswith("The winner")
                               or line.startswith("The best discovered")), None)
    return row


def shown(formula: str | None, recipe: dict | None) -> str:
    """A formula with its recipe's tag, as the hall prints it (``|W|·‖X‖  +R(layer)``)."""
    if not formula:
        return "–"
    return with_tag(formula, Recipe(**recipe) if recipe else None).replace("|", "\\|")


def fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(rows: list[dict], args, command: str) -> str:
    head = ["arm", "proposals", "valid", "new", "screened", "full evals", "best val ppl", "best formula (by val)",
            "winner (selection slice)", "winner test ppl", "search s"]
    lines = [f"Command: `{command}`", "",
             f"Task: {args.model}, {args.sparsity:.0%} unstructured, the search's default fitness, budget "
             f"{args.budget}, {args.full_evals} full evaluations, time limit {args.minutes:g} min per arm "
             f"(seeds and search; server replies inside it, server loading outside).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arm']} | error: {r['error']} |")
            continue
        w = r.get("winner") or {}
        lines.append("| " + " | ".join([r["arm"], str(r["proposals"]), str(r["valid"]), str(r["new"]),
                                         str(r["screened"]), str(r["full_evals"]), fmt(r["best_val_ppl"], 3),
                                         shown(r["best_formula"], r["best_recipe"]),
                                         shown(w.get("pretty"), w.get("recipe")),
                                         fmt(r.get("winner_test_ppl"), 3), fmt(r["search_seconds"], 0)]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_ARMS)}")
    p.add_argument("--model", default="smollm2-135m", help="the search's target model")
    p.add_argument("--sparsity", type=float, default=0.6)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock limit per arm (seeds + search)")
    p.add_argument("--budget", type=int, default=100000, help="screening budget (large: the time limit binds)")
    p.add_argument("--full-evals", type=int, default=20)
    p.add_argument("--test-windows", type=int, default=40)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the search process")
    p.add_argument("--server-threads", type=int, default=None, help="OMP threads of the serve-llm process")
    p.add_argument("--search-args", nargs=argparse.REMAINDER, default=[],
                   help="passed to every `prunedsl search` (last on the line)")
    p.add_argument("--out", default=None, help="Markdown file (its .json sibling holds the rows)")
    p.add_argument("--quick", action="store_true", help="tiny random model and data (give --minutes, e.g. 0.3), "
                                                          "evolve and enumerate unless --arms")
    args = p.parse_args(argv)
    command = "python bench/bench_proposers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.quick:
            from prunedsl.runtime.testing import save_tiny_workspace
            root = save_tiny_workspace(workdir / "ws")
            args.model = str(root / "model")
            args.search_args = ["--data-dir", str(root / "data"), "--nsamples", "4", "--seqlen", "32",
                                "--val-windows", "4", "--select-windows", "2", "--test-seqlen", "32",
                                *args.search_args]
            args.full_evals, args.test_windows = 3, 2
            args.arms = args.arms or ["evolve:0", "enumerate"]
        arms = args.arms or DEFAULT_ARMS
        out_json = Path(args.out).with_suffix(".json") if args.out else workdir / "proposers.json"
        rows = json.loads(out_json.read_text()) if out_json.exists() else []
        done = {r["arm"] for r in rows if "error" not in r}
        for arm in arms:
            if arm in done:
                continue
            rows = [r for r in rows if r["arm"] != arm] + [run_arm(args, arm, workdir)]
            out_json.write_text(json.dumps(rows, indent=1))
            log(json.dumps(rows[-1], ensure_ascii=False))
        text = markdown([r for a in arms for r in rows if r["arm"] == a], args, command)
        text += (f"\n\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
                 f"{os.getloadavg()[0]:.1f}.")
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
