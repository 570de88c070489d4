"""`prunedsl search` as a subprocess on a tiny model: SIGKILL mid-run, --resume, and the
result equals an uninterrupted run (nothing lost but the candidate in flight); Ctrl-C
stops cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from prunedsl.search.hall import pareto_front
from prunedsl.search.records import Candidate

BUDGET, FULL = 24, 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from prunedsl.runtime.testing import save_tiny_workspace
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny"))


def _cmd(tiny, out, *extra):
    return [sys.executable, "-m", "prunedsl", "search", "--model", str(tiny / "model"),
            "--data-dir", str(tiny / "data"), "--sparsity", "0.5", "--proposer", "evolve",
            "--budget", str(BUDGET), "--full-evals", str(FULL), "--batch", "4", "--nsamples", "4",
            "--seqlen", "32", "--val-windows", "4", "--test-windows", "2", "--test-seqlen", "32",
            "--threads", "1", "--seed", "1", "--output", str(out), *extra]


def _state(out):
    try:
        return json.loads((out / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_for(proc, out, new_screened, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = _state(out)
        if st and st["counters"]["screened"] - st["counters"]["seeds"] >= new_screened:
            return st
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("search made no progress")


def _run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_sigkill_then_resume_equals_uninterrupted(tiny, tmp_path):
    ref = tmp_path / "ref"
    _run(_cmd(tiny, ref))
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, out, 9)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _state(out)
    assert before is not None and before["phase"] == "search"
    res = _run([sys.executable, "-m", "prunedsl", "search", "--output", str(out), "--resume", "--threads", "1"])
    assert "best val ppl" in res.stdout
    after, want = _state(out), _state(ref)
    key = [(r["canonical"], r["proxy"], r["val_ppl"]) for r in after["candidates"]]
    # everything saved before the kill is still there, in order, with the same scores
    for r, (canonical, proxy, val_ppl) in zip(before["candidates"], key):
        assert (r["canonical"], r["proxy"]) == (canonical, proxy)
        assert r["val_ppl"] is None or r["val_ppl"] == val_ppl
    assert len(key) >= len(before["candidates"])
    # and the resumed search is the search that was never killed
    assert key == [(r["canonical"], r["proxy"], r["val_ppl"]) for r in want["candidates"]]
    c = after["counters"]
    assert c == want["counters"]
    assert c["screened"] - c["seeds"] == BUDGET and c["screened"] == len(after["candidates"])
    assert sum(1 for r in after["candidates"] if not r["seed"] and r["full"]) == FULL
    hall = json.loads((out / "hall.json").read_text())
    front = pareto_front([Candidate.from_json(r) for r in after["candidates"]])
    assert [r["id"] for r in hall["front"]] == [r.id for r in front]
    assert after["phase"] == "done" and (out / "report.md").is_file() and (out / "progress.png").is_file()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_ctrl_c_stops_cleanly(tiny, tmp_path):
    out = tmp_path / "int"
    # A job started in the background by a non-interactive shell (nohup …&, some CI
    # runners) inherits SIGINT ignored, and Python then keeps it ignored: give the child
    # the terminal's default, as a user pressing Ctrl-C has.
    proc = subprocess.Popen(_cmd(tiny, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(proc, out, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    st = _state(out)
    assert st["counters"]["screened"] == len(st["candidates"])
