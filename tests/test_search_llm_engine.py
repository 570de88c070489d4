"""A tiny real search through the CLI, ``prunedsl search --proposer llm``, on a tiny random
Llama, driven by the scripted OpenAI-compatible server: proposals are screened and
evaluated, scores and errors come back into the GCoT graph and the prompts, the report
shows the graph, and ``--resume`` brings the graph back."""
from __future__ import annotations

import json
import random

import pytest

from fake_openai_server import MODEL, FakeOpenAI, Reply
from prunedsl import cli


@pytest.fixture(scope="module")
def tiny_model_and_data(tmp_path_factory):
    from prunedsl.runtime.data import SPLIT_FILES
    from prunedsl.runtime.testing import tiny_llama, tiny_tokenizer
    root = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    rng = random.Random(0)
    (root / "data").mkdir()
    for split in ("validation", "test"):
        words = [" ".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)) for _ in range(200)]
        (root / "data" / SPLIT_FILES[split]).write_text("\n".join(words) + "\n", encoding="utf-8")
    return str(root / "model"), str(root / "data")


def _search(model, data, out, url, *extra):
    return cli.main(["search", "--model", model, "--sparsity", "0.5", "--proposer", "llm",
                     "--llm-base-url", url, "--llm-model", MODEL, "--llm-timeout", "10",
                     "--llm-max-retries", "1", "--budget", "3", "--full-evals", "1", "--batch", "2",
                     "--nsamples", "2", "--seqlen", "16", "--val-windows", "2", "--proxy-blocks", "0",
                     "--proxy-rank", "0", "--data-dir", data, "--test-windows", "2",
                     "--test-seqlen", "16", "--report-top", "1", "--output", str(out), "--quiet",
                     "--json", *extra])


def test_tiny_search_with_the_llm_proposer(tiny_model_and_data, tmp_path, capsys):
    model, data = tiny_model_and_data
    out = tmp_path / "out"
    with FakeOpenAI(fallback=Reply.text("node 2\n|W| * ‖X‖")) as srv:
        srv.push(Reply.text("node 2\n|W| * ‖X‖ ^ 2\nsqrt(W) * ‖X‖\n|W| * hinv"),
                 Reply.error(503),
                 Reply.text("node 3\n|W| ^ 2 * ‖X‖ ^ 0.5\n__import__('os').system('true')"))
        assert _search(model, data, out, srv.url) == 0
        prompts = [r["body"]["messages"][-1]["content"] for r in srv.chat_requests]
    summary = json.loads(capsys.readouterr().out)
    assert summary["counters"]["from_proposer"] == 3

    state = json.loads((out / "state.json").read_text())
    llm = {c["text"]: c for c in state["candidates"] if c["origin"] == "llm"}
    assert set(llm) == {"|W| * ‖X‖ ^ 2", "|W| * hinv", "|W| ^ 2 * ‖X‖ ^ 0.5"}
    assert llm["|W| * ‖X‖ ^ 2"]["node"] == 2 and llm["|W| ^ 2 * ‖X‖ ^ 0.5"]["node"] == 3

    graph = state["proposer"]["graph"]
    nodes = {n["text"]: n for n in graph["nodes"]}
    for text, c in llm.items():  # the engine's scores are in the graph
        assert nodes[text]["proxy"] == pytest.approx(c["proxy"])
    assert nodes["|W| * ‖X‖"]["name"] == "wanda" and nodes["|W| * ‖X‖"]["val_ppl"] is not None
    assert graph["best"] is not None and graph["best_path"][0] == 0
    assert "wanda = |W| * ‖X‖\n    scores: val ppl" in prompts[0] and "sqrt of a possibly negative value" in prompts[1]

    report = (out / "report.md").read_text()
    assert "GCoT graph" in report and "Best formula:" in report and "Reached by:" in report
    assert "## LLM replies (prompt view `compact`)" in report and "replies with at least one valid new" in report
    assert json.loads((out / "graph.json").read_text())["best"] == graph["best"]

    # --resume with the endpoint gone: the saved graph comes back, nothing is lost
    assert _search(model, data, out, "http://127.0.0.1:9/v1", "--resume") == 0
    again = json.loads((out / "state.json").read_text())["proposer"]["graph"]
    assert again["nodes"] == graph["nodes"]
