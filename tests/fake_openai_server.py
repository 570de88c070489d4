"""A scripted OpenAI-compatible chat server on a free loopback port, for tests.

    with FakeOpenAI() as srv:                  # serving in a background thread
        srv.push(Reply.text("node 1\\n|W| * ‖X‖"), Reply.status(429, retry_after="1"))
        client = OpenAI(base_url=srv.url, api_key="x")
        ...
        srv.requests[0]["body"]["messages"]    # what the client sent

Each POST to /v1/chat/completions takes the next scripted reply (``fallback`` when the
script is empty; a callable fallback is called with the request body, for replies that
depend on the prompt); GET /v1/models lists one model. A real HTTP server (stdlib
``ThreadingHTTPServer``), so the ``openai`` client's whole stack is exercised.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0          # seconds before answering (slow replies)
    hang_up: bool = False       # close the connection without an answer
    trickle: float = 0.0        # seconds between bytes: the answer sent a byte at a time

    @classmethod
    def text(cls, content: str | None, delay: float = 0.0) -> "Reply":
        """A well-formed chat completion whose message is ``content``."""
        body = {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return cls(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, delay)

    @classmethod
    def json(cls, obj, status: int = 200) -> "Reply":
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    @classmethod
    def raw(cls, body: bytes, content_type: str = "application/json", status: int = 200) -> "Reply":
        return cls(status, body, {"Content-Type": content_type})

    @classmethod
    def error(cls, status: int, retry_after: str | None = None) -> "Reply":
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = json.dumps({"error": {"message": f"scripted {status}", "type": "server_error"}})
        return cls(status, body.encode(), headers)

    @classmethod
    def hangup(cls) -> "Reply":
        return cls(hang_up=True)

    @classmethod
    def trickling(cls, every: float = 0.2) -> "Reply":
        """Headers at once, then a body of spaces, one byte every ``every`` s, for ever (until
        the client hangs up): each read gets data, so no per-read timeout ever fires."""
        return cls(200, b"", {"Content-Type": "application/json"}, trickle=every)


class FakeOpenAI:
    def __init__(self, fallback=None, port: int = 0, models: tuple[str, ...] = (MODEL,)):
        self.port = port  # 0: a free port
        self.models = models
        self.script: deque[Reply] = deque()
        self.fallback = fallback or Reply.error(500)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control --------------------------------------------------------------------
    def push(self, *replies: Reply) -> "FakeOpenAI":
        with self.lock:
            self.script.extend(replies)
        return self

    def _next(self, body=None) -> Reply:
        with self.lock:
            if self.script:
                return self.script.popleft()
            return self.fallback(body) if callable(self.fallback) else self.fallback

    @property
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAI":
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.hang_up:
                    self.close_connection = True
                    self.connection.close()
                    return
                # one request per connection, so a stopped server refuses the next one
                self.close_connection = True
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    if not reply.trickle:
                        self.send_header("Content-Length", str(len(reply.body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply.body)
                    while reply.trickle:  # until the write fails: the client is gone
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                        self.wfile.write(b" ")
                except OSError:  # the client gave up (timeout) before we answered
                    pass

            def _headers(self) -> dict:
                return {k.lower(): v for k, v in self.headers.items()}

            def do_GET(self):
                srv.requests.append({"path": self.path, "headers": self._headers(), "body": None})
                if self.path.rstrip("/").endswith("/models"):
                    self._send(Reply.json({"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in srv.models]}))
                else:
                    self._send(Reply.error(404))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                srv.requests.append({"path": self.path, "headers": self._headers(), "body": body,
                                     "time": time.monotonic()})
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(Reply.error(404))
                    return
                self._send(srv._next(body))

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # no tracebacks for hang-ups
                pass

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port: later requests get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
