"""The LLM search through an endpoint outage, and its --resume: against the real loopback
HTTP server (``fake_openai_server``), no mocks of the client.

- a burst of 503s opens the circuit breaker: the engine waits for the endpoint (those
  rounds are not "empty") and the search spends its whole budget;
- an endpoint dead for longer than ``max_outage`` stops the search with an error, saved;
- ``--resume`` talks to the saved endpoint (``--llm-*`` settings saved, never the key);
- SIGKILL + ``--resume`` of ``prunedsl search --proposer llm`` gives the counts of an
  uninterrupted run (no formula handed out twice).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from fake_openai_server import MODEL, FakeOpenAI, Reply
from prunedsl.errors import SearchError
from prunedsl.search.engine import Engine, SearchConfig
from prunedsl.search.llm import LLMProposer
from test_search_engine import FakeFitness


class Formulas:
    """A callable fallback: each answer names node ``|W| * ?Col`` (read from the prompt,
    so it does not depend on node numbering) and ``per`` formulas never answered before."""

    def __init__(self, per: int = 2):
        self.per, self.k, self.lock = per, 0, threading.Lock()

    def __call__(self, body) -> Reply:
        prompt = body["messages"][-1]["content"]
        node = re.search(r"node (\d+): \|W\| \* \?Col\b", prompt).group(1)
        with self.lock:
            ks = range(self.k, self.k + self.per)
            self.k += self.per
        return Reply.text(f"node {node}\n" + "\n".join(f"|W| * hinv ^ {1 + 0.125 * (k + 1):g}" for k in ks))


def _engine(tmp_path, url, log, **kw):
    cfg = SearchConfig(output=str(tmp_path / "out"), proposer="llm", budget=4, full_evals=1, batch=2,
                       report=False, max_outage=kw.pop("max_outage", 30.0))
    proposer = LLMProposer(base_url=url, model=MODEL, timeout=5.0, max_retries=1, backoff=0.01,
                           max_backoff=0.02, breaker_threshold=2, breaker_cooldown=kw.pop("cooldown", 0.2),
                           calls_per_propose=1, seed=0)
    return Engine(cfg, FakeFitness, proposer, log=log.append)


def test_a_burst_of_503s_is_waited_out_and_the_budget_is_spent(tmp_path):
    log: list[str] = []
    with FakeOpenAI(fallback=Formulas()) as srv:
        srv.push(*[Reply.error(503)] * 6)  # 3 calls × (1 try + 1 retry): the breaker opens twice
        t0 = time.monotonic()
        summary = _engine(tmp_path, srv.url, log).run()
        took = time.monotonic() - t0
        n_chat = len(srv.chat_requests)
    c = summary["counters"]
    assert c["screened"] - c["seeds"] == 4 and summary["phase"] == "done"
    assert n_chat == 6 + 2
    assert not any("proposed nothing" in m for m in log), log  # outage rounds are not empty rounds
    waits = [m for m in log if "is unavailable" in m]
    assert len(waits) == 2 and "not counted" in waits[0]
    assert 0.5 <= took < 20  # the cooldowns (0.2 s, then 0.4 s) were waited, nothing more


def test_an_endpoint_down_longer_than_max_outage_stops_the_search_saved(tmp_path):
    log: list[str] = []
    with FakeOpenAI(fallback=Reply.error(503)) as srv:
        engine = _engine(tmp_path, srv.url, log, max_outage=0.6, cooldown=0.1)
        with pytest.raises(SearchError, match="failing for") as err:
            engine.run()
    assert "--resume" in err.value.hint
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["phase"] == "search" and state["counters"]["seeds"] > 0  # everything saved
    assert not any("proposed nothing" in m for m in log)


def test_a_rejected_key_is_no_outage_its_empty_rounds_end_the_search(tmp_path):
    """A 401 is no outage (waiting cannot fix a key): the empty rounds count, and the
    last log line says that a plain --resume asks again."""
    log: list[str] = []
    with FakeOpenAI(fallback=Reply.error(401)) as srv:
        summary = _engine(tmp_path, srv.url, log, max_outage=60).run()
    assert summary["counters"]["screened"] == summary["counters"]["seeds"]
    (last,) = [m for m in log if "rounds in a row" in m]
    assert "4 of the budget of 4 not spent" in last and "--resume` asks it again" in last
    assert "larger --budget" not in last


# --- --resume remembers the endpoint ------------------------------------------------------
def _parse(argv):
    from prunedsl.cli import build_parser
    return build_parser().parse_args(["search", *argv])


def test_llm_settings_are_saved_for_resume_and_the_key_never(tmp_path, monkeypatch):
    from prunedsl.dsl.library import BUILTIN
    from prunedsl.search.cli import _settings, make_proposer
    from prunedsl.search.fitness import BASE_STATISTICS
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.example/v1")
    out = str(tmp_path / "o")
    new = _parse(["--model", "m", "--sparsity", "0.5", "--proposer", "llm", "--output", out,
                  "--llm-base-url", "http://127.0.0.1:8123/v1", "--llm-model", "mine",
                  "--llm-timeout", "7", "--llm-temperature", "0.2", "--llm-max-retries", "1"])
    saved = json.loads(json.dumps(_settings(new, None)))  # as state.json holds it
    assert "sk-secret-key" not in json.dumps(saved)
    assert (saved["llm_base_url"], saved["llm_model"], saved["llm_timeout"], saved["llm_temperature"],
            saved["llm_max_retries"]) == ("http://127.0.0.1:8123/v1", "mine", 7.0, 0.2, 1)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.example/v1")  # a later shell
    resumed = _settings(_parse(["--output", out, "--resume"]), saved)
    p = make_proposer(resumed, None, BASE_STATISTICS, BUILTIN)
    e = p.endpoint
    assert (e.base_url, e.model, e.timeout, e.temperature, e.max_retries) == \
        ("http://127.0.0.1:8123/v1", "mine", 7.0, 0.2, 1)
    assert e.api_key == "sk-secret-key"  # read from the environment each time
    # given again on --resume, they override the saved ones
    again = _settings(_parse(["--output", out, "--resume", "--llm-base-url", "http://127.0.0.1:9/v1",
                              "--llm-timeout", "3"]), saved)
    assert (again["llm_base_url"], again["llm_timeout"], again["llm_model"]) == ("http://127.0.0.1:9/v1", 3.0, "mine")
    # without --llm-base-url the endpoint of the environment at the start is saved
    env = _settings(_parse(["--model", "m", "--sparsity", "0.5", "--proposer", "llm", "--output", out]), None)
    assert env["llm_base_url"] == "http://elsewhere.example/v1"
    # a state saved before these settings existed resumes with the defaults
    old = {k: v for k, v in saved.items() if not k.startswith("llm_")}
    assert _settings(_parse(["--output", out, "--resume"]), old)["llm_timeout"] == 300.0


# --- SIGKILL and --resume of a real LLM search -------------------------------------------
BUDGET, FULL = 10, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny"))


def _cmd(tiny, out, url):
    return [sys.executable, "-m", "prunedsl", "search", "--model", str(tiny / "model"),
            "--data-dir", str(tiny / "data"), "--sparsity", "0.5", "--proposer", "llm",
            "--llm-base-url", url, "--llm-model", MODEL, "--llm-timeout", "20", "--llm-max-retries", "1",
            "--budget", str(BUDGET), "--full-evals", str(FULL), "--batch", "4", "--nsamples", "4",
            "--seqlen", "32", "--val-windows", "4", "--test-windows", "2", "--test-seqlen", "32",
            "--threads", "1", "--seed", "1", "--output", str(out)]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    return env


def _state(out):
    try:
        return json.loads((out / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


COUNTS = ("proposed", "from_proposer", "failed", "duplicates", "screened", "seeds", "full_evals")


def test_llm_search_sigkill_then_resume_matches_uninterrupted(tiny, tmp_path):
    ref = tmp_path / "ref"
    with FakeOpenAI(fallback=Formulas(per=3)) as srv:
        res = subprocess.run(_cmd(tiny, ref, srv.url), capture_output=True, text=True, timeout=600, env=_env())
        assert res.returncode == 0, res.stderr[-3000:]
    want = _state(ref)["counters"]
    assert want["duplicates"] == 0 and want["screened"] - want["seeds"] == BUDGET

    out = tmp_path / "killed"
    with FakeOpenAI(fallback=Formulas(per=3)) as srv:
        proc = subprocess.Popen(_cmd(tiny, out, srv.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env())
        t0, before = time.time(), None
        while time.time() - t0 < 300:  # kill while proposals are handed out but not screened
            st = _state(out)
            if st and st["phase"] == "search" and len(st["pending"]) >= 2 and \
                    st["counters"]["screened"] - st["counters"]["seeds"] >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"search ended before it could be killed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.005)
        proc.wait()
        before = _state(out)
        assert before is not None and before["phase"] == "search" and before["pending"]
        # a plain --resume: the endpoint comes from the saved state ($OPENAI_BASE_URL unset)
        res = subprocess.run([sys.executable, "-m", "prunedsl", "search", "--output", str(out), "--resume",
                              "--threads", "1"], capture_output=True, text=True, timeout=600, env=_env())
        assert res.returncode == 0, res.stderr[-3000:]
        assert srv.chat_requests  # it was asked again, at the saved address
    after = _state(out)
    assert {k: after["counters"][k] for k in COUNTS} == {k: want[k] for k in COUNTS}
    texts = [r["text"] for r in after["candidates"]]
    keys = [(r["text"], json.dumps(r.get("recipe"))) for r in after["candidates"]]  # seeds' recipe variants
    assert len(keys) == len(set(keys))
    pending = [p["text"] for p in before["pending"]]
    assert all(t in texts for t in pending)  # the in-flight ones were screened after resuming
    assert after["phase"] == "done" and (out / "report.md").is_file()
