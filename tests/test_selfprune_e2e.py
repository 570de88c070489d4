"""Self-pruning offline, end to end: ``prunedsl search --proposer llm --llm-base-url
http://127.0.0.1:PORT/v1 --llm-model M`` against the real ``serve-llm`` app (uvicorn on a
free loopback port, the real ``Generator`` with grammar-constrained decoding), on tiny
models: the server serves a tiny random Llama with the SmolLM2 tokenizer
(``serve_fakes.tiny_chat_model_dir``), the search prunes the tiny Llama the search tests
use. No network, no scripted replies: the proposals are whatever the served model wrote.

    pytest tests/test_selfprune_e2e.py -q       # ~40 s
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("llguidance")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
# the optional third-party packages above may skip; our own modules must import or fail
from prunedsl import cli  # noqa: E402
from serve_fakes import tiny_chat_model_dir_or_skip  # noqa: E402

SERVED = "tiny-chat"  # the model name the server lists (and the search asks for)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real serve-llm app on a free port, serving a tiny model; yields (url, calls)."""
    model_dir = tiny_chat_model_dir_or_skip(tmp_path_factory.mktemp("served"))
    from prunedsl.runtime.models import load_model
    from prunedsl.serve.app import start_server
    from prunedsl.serve.generate import Generator
    gen = Generator(load_model(model_dir))
    gen.warm_up()
    calls = []
    real = gen.generate

    def generate(ids, params, *limits):
        c = real(ids, params, *limits)
        calls.append((params, c))
        return c

    gen.generate = generate
    with start_server(gen, model_id=SERVED) as srv:
        yield srv.url, calls


@pytest.fixture(scope="module")
def tiny_model_and_data(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    root = save_tiny_workspace(tmp_path_factory.mktemp("tiny"))
    return str(root / "model"), str(root / "data")


def test_search_with_proposals_from_the_real_server(served, tiny_model_and_data, tmp_path, capsys):
    url, calls = served
    model, data = tiny_model_and_data
    out = tmp_path / "out"
    rc = cli.main(["search", "--model", model, "--sparsity", "0.5", "--proposer", "llm",
                   "--llm-base-url", url, "--llm-model", SERVED, "--llm-timeout", "60",
                   "--llm-max-retries", "1", "--llm-seed", "0", "--budget", "3", "--full-evals", "1", "--batch", "2",
                   "--nsamples", "2", "--seqlen", "16", "--val-windows", "2", "--proxy-blocks", "0",
                   "--proxy-rank", "0", "--data-dir", data, "--test-windows", "2", "--test-seqlen", "16",
                   "--report-top", "1", "--threads", "1", "--output", str(out), "--quiet", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)

    # the server answered in the constrained reply format, every reply checked; a reply that
    # still fails the checker (a random model can write sqrt of a possibly negative value, which
    # the grammar cannot rule out) comes back only after every attempt was spent, marked invalid
    # offered sketches and the seeds of --llm-seed 0 sent (a seeded server: the test is reproducible)
    assert calls and all(p.grammar == "reply" and p.sketches for p, _ in calls)
    assert [p.seed for p, _ in calls] == list(range(len(calls)))
    assert all(c.check is not None for _, c in calls)
    assert all(c.check.ok or (c.attempts == p.max_attempts and len(c.rejected) == p.max_attempts - 1)
               for p, c in calls), [(c.attempts, c.text) for _, c in calls]
    assert any(c.check.ok for _, c in calls), [c.text for _, c in calls]
    assert all(p.max_tokens <= 512 for p, _ in calls)

    # its formulas reached the search: screened, and one fully evaluated
    state = json.loads((out / "state.json").read_text())
    llm = [c for c in state["candidates"] if c["origin"] == "llm"]
    assert summary["counters"]["from_proposer"] >= 1 and len(llm) >= 1
    assert all(c["proxy"] is not None for c in llm)  # the LLM proposer's only endpoint is the server
    # a random tiny model often repeats itself: the search may end early on empty rounds
    # (duplicates are not proposals), having screened 1 to 3 of its own formulas
    assert state["phase"] == "done" and 1 <= state["counters"]["screened"] - state["counters"]["seeds"] <= 3
    report = (out / "report.md").read_text()
    assert "Best formula:" in report and "GCoT graph" in report
