"""Report robustness and the search's safety rules.

- the report survives a wanda whose full evaluation failed (and --resume of it);
- the report has SparseGPT proper (``sparsegpt +R``: OBS update, layer-wise) next to
  the mask-only ``sparsegpt`` row, and a GCoT graph for any proposer;
- no module of search/ or dsl/ calls eval, exec, sympify or sympy's parse_expr;
- a slow reply that arrives within the timeout is used; JSON as the message content is
  handled (fed back, never raised);
- the test split is read only in the report phase.
"""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from fake_openai_server import MODEL, FakeOpenAI, Reply
from prunedsl.errors import PruneRuntimeError
from prunedsl.search.engine import Engine, SearchConfig
from prunedsl.search.fitness import FitnessSettings
from prunedsl.search.recipe import Recipe
from test_search_engine import FakeFitness, Scripted

ROOT = Path(__file__).resolve().parents[1]
WANDA = "|W| * ‖X‖"


class Fitness(FakeFitness):
    """wanda's full evaluation fails; test_ppl records its keyword arguments."""

    def __init__(self):
        super().__init__()
        self.test_calls: list[tuple[str | None, dict]] = []

    def full(self, metric):
        if metric.text() == WANDA:
            raise PruneRuntimeError("validation perplexity overflowed (the pruned model is broken)")
        return super().full(metric)

    def test_ppl(self, metric, *, seqlen, windows, **kw):
        self.test_calls.append((None if metric is None else metric.text(), kw))
        res = super().test_ppl(metric, seqlen=seqlen, windows=windows)
        if kw.get("recipe") is not None and kw["recipe"].reconstruct:
            res["test_ppl"] = 42.125
        return res


def _run(tmp_path, fitness, resume=False):
    cfg = SearchConfig(output=str(tmp_path / "out"), proposer="scripted", budget=3, full_evals=2, batch=2,
                       test_windows=1, report_top=2, fitness=FitnessSettings("fake", sparsity=0.5).to_dict())
    proposer = Scripted(["|W| * ‖X‖ ^ 2", "|W| * hinv", "|W| ^ 2 * ‖X‖"])
    return Engine(cfg, lambda: fitness, proposer, log=lambda m: None).run(resume=resume)


def test_report_survives_a_failed_wanda_and_shows_sparsegpt_proper_and_the_graph(tmp_path):
    fit = Fitness()
    summary = _run(tmp_path, fit)
    out = tmp_path / "out"
    state = json.loads((out / "state.json").read_text())
    wanda = next(r for r in state["candidates"] if r["name"] == "wanda")
    assert wanda["val_ppl"] is None and summary["phase"] == "done"
    report = (out / "report.md").read_text()
    # SparseGPT proper, measured with the OBS update and layer-wise selection, next to the mask
    assert ("W ^ 2 / hinv", {"recipe": Recipe(reconstruct=True, group="layer")}) in fit.test_calls
    rows = [line for line in report.splitlines() if line.startswith("| sparsegpt")]
    assert len(rows) == 2 and "mask only" in rows[0] and "sparsegpt +R" in rows[1] and "42.12" in rows[1]
    assert "OBS weight update" in report
    assert all(kw == {} for text, kw in fit.test_calls if text != "W ^ 2 / hinv")
    # a proposer without its own graph still gets the GCoT graph (text and graph.json)
    assert "GCoT graph" in report and "Reached by:" in report and "Lineage" in report
    graph = json.loads((out / "graph.json").read_text())
    found = {n["text"] for n in graph["nodes"]}
    assert {r["text"] for r in state["candidates"] if r["val_ppl"] is not None} <= found
    # resuming the finished search reads the same state again without a TypeError
    state["phase"] = "report"
    (out / "state.json").write_text(json.dumps(state))
    assert _run(tmp_path, Fitness(), resume=True)["phase"] == "done"


def test_plot_progress_without_a_wanda_val_ppl(tmp_path):
    pytest.importorskip("matplotlib")
    from prunedsl.search.records import Candidate, HistoryPoint, SearchState
    from prunedsl.search.report import plot_progress
    state = SearchState(config=SearchConfig(output=str(tmp_path)), history=[HistoryPoint(
        screened=1, full_evals=1, id=0, best_val_ppl=30.0, val_ppl=30.0, seed=True, seconds=0.0)])
    wanda = Candidate(id=1, input=WANDA, text=WANDA, pretty=WANDA, name="wanda", canonical=WANDA, complexity=4,
                      origin="seed", parents=(), node=None, note="wanda", proxy=0.1, proxy_seconds=0.0,
                      val_ppl=None, seed=True)
    assert plot_progress(state, tmp_path / "p.png", wanda)


# --- safety: model text reaches lark, nothing else --------------------------------------------
BANNED = {"eval", "exec", "sympify"}


def _banned_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    from_sympy = set()  # names imported from sympy (parse_expr, sympify, ...)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sympy"):
            from_sympy |= {a.asname or a.name for a in node.names}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and (f.id in BANNED or (f.id == "parse_expr" and f.id in from_sympy)
                                        or (f.id in from_sympy and f.id in {"sympify", "S"})):
            bad.append(f"{path.name}:{node.lineno} {f.id}(")
        elif isinstance(f, ast.Attribute):
            base = ast.unparse(f.value)
            if f.attr == "sympify" or (f.attr == "parse_expr" and ("sympy" in base or "sp" == base)) \
                    or (f.attr in ("eval", "exec") and base in ("builtins", "__builtins__")):
                bad.append(f"{path.name}:{node.lineno} {base}.{f.attr}(")
    return bad


def test_no_module_of_search_or_dsl_evaluates_text():
    files = sorted((ROOT / "search").glob("*.py")) + sorted((ROOT / "dsl").rglob("*.py"))
    assert len(files) > 10
    bad = [b for p in files for b in _banned_calls(p)]
    assert bad == []


def test_the_scan_would_see_them(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import sympy\nfrom sympy.parsing.sympy_parser import parse_expr\n"
                 "eval('1')\nexec('x=1')\nsympy.sympify('x')\nparse_expr('x')\n"
                 "from prunedsl.dsl.parser import parse_expr as ours\nours('W')\n")
    assert len(_banned_calls(p)) == 4


# --- replies ----------------------------------------------------------------------------------
def _proposer(srv, **kw):
    from prunedsl.search.llm import LLMProposer
    args = dict(base_url=srv.url, model=MODEL, timeout=3.0, max_retries=1, backoff=0.01, calls_per_propose=1,
                seed=0, sleep=lambda s: None)
    return LLMProposer(**{**args, **kw})


def test_a_slow_reply_within_the_timeout_is_used():
    with FakeOpenAI() as srv:
        srv.push(Reply.text("node 2\n|W| * hinv", delay=0.8), Reply.text("node 2\n|W| * ‖X‖"))
        p = _proposer(srv, timeout=5.0)
        t = time.monotonic()
        assert [q.text for q in p.propose(1)] == ["|W| * hinv"]
        assert time.monotonic() - t >= 0.8 and len(srv.chat_requests) == 1  # waited, not retried
        assert p.endpoint.outage() is None


@pytest.mark.parametrize("content", [
    json.dumps({"node": 2, "formulas": ["|W| * hinv", "|W| * ‖X‖"]}),
    json.dumps(["|W| * hinv"]),
    '{"node": 2,\n "formulas": ["|W| * hinv"]}',
])
def test_json_as_the_message_content_is_fed_back_never_raised(content):
    with FakeOpenAI() as srv:
        srv.push(Reply.text(content), Reply.text("node 2\n|W| * ‖X‖"))
        p = _proposer(srv)
        assert p.propose(2) == []
        assert p.errors  # the model is told what was wrong...
        assert [q.text for q in p.propose(2)] == ["|W| * ‖X‖"]  # ...and the next answer is used
        assert "Problems with your recent answers" in srv.chat_requests[1]["body"]["messages"][-1]["content"]


# --- the test split --------------------------------------------------------------------------
def test_the_test_split_is_read_only_in_the_report_phase(tmp_path, monkeypatch):
    from prunedsl import cli
    from prunedsl.runtime import data
    from prunedsl.runtime.testing import save_tiny_workspace
    import prunedsl.search.report as report
    save_tiny_workspace(tmp_path)
    events: list[str] = []
    real_load, real_report = data.load_text, report.write_report

    def load_text(split=None, *a, **k):
        events.append(f"load {split}")
        return real_load(split, *a, **k)

    def write_report(engine):
        events.append("report phase")
        return real_report(engine)
    monkeypatch.setattr(data, "load_text", load_text)
    monkeypatch.setattr(report, "write_report", write_report)
    assert cli.main(["search", "--model", str(tmp_path / "model"), "--data-dir", str(tmp_path / "data"),
                     "--sparsity", "0.5", "--proposer", "evolve", "--budget", "2", "--full-evals", "1",
                     "--batch", "2", "--nsamples", "2", "--seqlen", "16", "--val-windows", "2",
                     "--test-windows", "1", "--test-seqlen", "16", "--report-top", "1", "--threads", "1",
                     "--output", str(tmp_path / "out"), "--quiet", "--json"]) == 0
    assert "load validation" in events and "load test" in events
    assert events.index("report phase") < events.index("load test")
    assert all(e != "load test" for e in events[:events.index("report phase")])
