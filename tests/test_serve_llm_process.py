"""The real ``prunedsl serve-llm`` process: started on a free loopback port with a tiny
saved model (random weights, the SmolLM2 tokenizer; ``serve_fakes.tiny_chat_model_dir``),
it answers, and SIGTERM or SIGINT shut it down cleanly: exit status 0, no traceback,
the port freed.

    pytest tests/test_serve_llm_process.py -q        # ~30 s
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("llguidance")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")

from serve_fakes import tiny_chat_model_dir_or_skip  # noqa: E402

from prunedsl.serve.replies import check_reply  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_chat_model_dir_or_skip(tmp_path_factory.mktemp("tinychat"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def start_serve_llm(model: str, port: int, log_path, timeout: float = 180) -> subprocess.Popen:
    """``python -m prunedsl serve-llm`` in a subprocess; returns once /v1/models answers.
    The child gets the default SIGINT (a backgrounded CI job may inherit it ignored)."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "prunedsl", "serve-llm", "--model", model,
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log.close()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _get(f"http://127.0.0.1:{port}/v1/models", timeout=5)[0] == 200:
                return proc
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"serve-llm did not start:\n{open(log_path).read()[-3000:]}")
        time.sleep(0.3)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of closed connections is fine
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_llm_process_answers_and_shuts_down_cleanly(tiny_dir, tmp_path, sig):
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = start_serve_llm(tiny_dir, port, log_path)
    try:
        code, models = _get(f"http://127.0.0.1:{port}/v1/models")
        assert [m["id"] for m in models["data"]] == [tiny_dir, tiny_dir + "+formula", tiny_dir + "+reply"]
        code, r = _get(f"http://127.0.0.1:{port}/v1/chat/completions",
                       {"model": tiny_dir + "+formula", "max_tokens": 16, "seed": 0,
                        "messages": [{"role": "user", "content": "A pruning metric?"}]})
        assert code == 200 and check_reply(r["choices"][0]["message"]["content"], "formula")[0], r
        assert not port_is_free(port)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert rc == 0, log[-3000:]
    assert f"stopped by {sig.name}" in log and "Traceback" not in log, log[-3000:]
    assert port_is_free(port)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
