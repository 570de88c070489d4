"""The HTTP server: starlette routes on uvicorn, one model, one generation at a time.

    serve("smollm2-135m", "127.0.0.1", 8000)               # blocks; Ctrl-C / SIGTERM stop it

    with start_server(generator, port=0) as srv:            # tests: a background thread
        openai.OpenAI(base_url=srv.url, api_key="x").chat.completions.create(...)

Routes: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``,
``GET /health``. Context: a request whose prompt plus ``max_tokens`` exceeds the
model's context gets ``max_tokens`` clamped to the room the prompt leaves (the reply
then ends with ``finish_reason: "length"`` at the latest there; ``prunedsl.max_tokens``
gives the budget used); only a prompt that fills the context alone is a 400
``context_length_exceeded``. Errors are OpenAI-style JSON (see ``protocol.py``).

Requests are served one at a time, in order (``queue.py``): a request that finds
``max_queue`` others waiting gets a 503 (``queue_full``) at once, one that waits
``queue_timeout`` seconds a 503 (``queue_timeout``), both with ``Retry-After``. Its turn
come, a request is tokenized and generated in a worker thread (the event loop stays
responsive) for at most ``max_generation_seconds``: then the reply is cut as at
``max_tokens`` (``finish_reason: "length"``, ``prunedsl.ended_by: "time"``), the
OpenAI-like answer for a budget spent, rather than an error that would throw away what
was generated. A client that disconnects is noticed within ``queue.POLL_S``: a waiting
request leaves the queue unserved, a running generation stops before its next token.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .generate import MAX_ATTEMPTS, GenerationCancelled, Generator, Limits
from .prompts import system_prompt
from .protocol import ApiError, chat_response, model_ids, models_response, parse_chat_request
from .queue import POLL_S, ClientGone, GenerationQueue, QueueFull, QueueRefusal

log = logging.getLogger("prunedsl.serve")

DEFAULT_MAX_TOKENS = 96      # when a request gives none
MAX_TOKENS_LIMIT = 512       # the most a request may ask for (--max-tokens-limit)
MAX_BODY_BYTES = 1 << 20
GRACEFUL_SHUTDOWN_S = 60     # on SIGINT/SIGTERM, how long a generation in progress may finish
MAX_QUEUE = 8                # requests waiting behind the running one (--max-queue)
QUEUE_TIMEOUT_S = 60.0       # the longest a request waits for its turn (--queue-timeout)
MAX_GENERATION_S = 180.0     # the longest one request's generation runs (--max-generation-seconds)
CLIENT_GONE = 499            # the status logged for a request whose client disconnected (nginx's)


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers())


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set ``cancel`` once the client has disconnected (polled: the generation thread
    reads the event before each token)."""
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(POLL_S)


async def _read_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(gen: Generator, *, model_id: str | None = None, max_tokens_limit: int = MAX_TOKENS_LIMIT,
              default_max_tokens: int = DEFAULT_MAX_TOKENS, max_attempts: int = MAX_ATTEMPTS,
              max_queue: int = MAX_QUEUE, queue_timeout: float = QUEUE_TIMEOUT_S,
              max_generation_seconds: float = MAX_GENERATION_S) -> Starlette:
    model_id = model_id or gen.spec
    created = int(time.time())
    queue = GenerationQueue(max_queue, queue_timeout)

    async def models(request: Request):
        return JSONResponse(models_response(model_id, created))

    async def model(request: Request):
        mid = request.path_params["model"]
        if mid not in model_ids(model_id):
            return _error(ApiError(404, f"The model '{mid}' does not exist", param="model",
                                   code="model_not_found"))
        return JSONResponse({"id": mid, "object": "model", "created": created, "owned_by": "prunedsl"})

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": model_id})

    async def chat(request: Request):
        try:
            raw = await _read_body(request)
        except ApiError as err:
            return _error(err)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            return _error(ApiError(400, f"the request body is not valid JSON: {err}", code="invalid_json"))
        except RecursionError:  # 200k nested brackets: the decoder's recursion, not a server fault
            return _error(ApiError(400, "the request body is nested too deeply to be a chat request",
                                   code="invalid_json"))
        try:
            req = parse_chat_request(body, model_id=model_id, max_tokens_limit=max_tokens_limit,
                                     default_max_tokens=default_max_tokens, max_attempts=max_attempts)
        except ApiError as err:
            log.info("rejected request: %s %s", err.status, err.message)
            return _error(err)
        try:
            async with queue.slot(request.is_disconnected):
                return await run_request(request, req)
        except QueueRefusal as err:
            log.warning("refused request: %s (%d waiting)", err, queue.waiting)
            return _error(ApiError(503, str(err), type="server_error", retry_after=err.retry_after,
                                   code="queue_full" if isinstance(err, QueueFull) else "queue_timeout"))
        except ClientGone:
            log.info("the client disconnected while its request waited; dropped unserved")
            return Response(status_code=CLIENT_GONE)

    async def run_request(request: Request, req) -> Response:
        """Tokenize and generate ``req`` (holding the queue's slot)."""
        deadline = time.monotonic() + max_generation_seconds
        try:
            messages = list(req.messages)
            if req.params.grammar and not any(m["role"] == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": system_prompt(req.params.grammar)})
            try:
                ids = await run_in_threadpool(gen.prompt_ids, messages)
            except Exception as err:  # e.g. a chat template that rejects the role order
                raise ApiError(400, f"the messages do not fit the model's chat template: {err}",
                               param="messages", code="invalid_messages") from None
            room = gen.context - len(ids)
            if room < 1:
                raise ApiError(400, f"the prompt is {len(ids)} tokens; it leaves no room for a reply in "
                                    f"the model's context of {gen.context} tokens", param="messages",
                               code="context_length_exceeded")
            if req.params.max_tokens > room:  # clamp, as a client asking for 512 by habit wants a reply
                log.info("max_tokens %d clamped to %d: the prompt is %d of the context's %d tokens",
                         req.params.max_tokens, room, len(ids), gen.context)
                req = replace(req, params=replace(req.params, max_tokens=room))
        except ApiError as err:
            log.info("rejected request: %s %s", err.status, err.message)
            return _error(err)
        cancel = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, cancel))
        try:
            c = await run_in_threadpool(gen.generate, ids, req.params, Limits(cancel, deadline))
        except GenerationCancelled as err:
            log.info("the client disconnected; generation stopped (%s)", err)
            return Response(status_code=CLIENT_GONE)
        except Exception as err:
            log.exception("generation failed")
            return _error(ApiError(500, f"generation failed: {type(err).__name__}: {err}", type="server_error"))
        finally:
            cancel.set()  # ends the watcher
            watcher.cancel()
        sampled = c.sampled_tokens
        checked = "" if c.check is None else \
            f" attempts={c.attempts} valid={c.check.ok}" + (f" lines={c.check.valid_lines}/{c.check.lines}"
                                                            if req.params.grammar == "reply" else "")
        log.info("chat %s grammar=%s prompt=%d (cached %d) completion=%d finish=%s ended_by=%s%s sampled=%d "
                 "%.1f tok/s", req.model, req.params.grammar, c.prompt_tokens, c.cached_tokens,
                 c.completion_tokens, c.finish_reason, c.ended_by, checked, sampled,
                 sampled / max(c.decode_s, 1e-9))
        return JSONResponse(chat_response(req, c))

    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            err = ApiError(404, f"Invalid URL ({request.method} {request.url.path})", code="not_found")
        elif exc.status_code == 405:
            err = ApiError(405, f"Method {request.method} is not allowed on {request.url.path}",
                           code="method_not_allowed")
        else:
            err = ApiError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=err.status, headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception):
        log.exception("unhandled error")
        return _error(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    routes = [Route("/v1/models", models, methods=["GET"]),
              Route("/v1/models/{model:path}", model, methods=["GET"]),
              Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/health", health, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.queue = queue  # for tests and logs: how many wait
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT / SIGTERM end in a graceful shutdown and
    ``serve`` returning (exit status 0), where uvicorn raises the signal again once it has
    shut down (for SIGTERM, the default action: status 143, no Python cleanup)."""

    stopped_by: int | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        super().handle_exit(sig, frame)  # a second Ctrl-C forces the exit, as in uvicorn
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


@dataclass
class ServerHandle:
    """A server running in a background thread; ``stop()`` (or leaving ``with``) ends it."""

    server: object
    thread: threading.Thread
    sock: socket.socket
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"the server thread did not stop within {timeout} s")

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(gen: Generator, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                 timeout: float = 30.0, **app_kw) -> ServerHandle:
    """Start the server in a daemon thread on ``host:port`` (0: a free port) and return
    once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(build_app(gen, **app_kw), log_level=log_level, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="prunedsl-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return ServerHandle(server, thread, sock, host, sock.getsockname()[1])


def serve(model_spec: str = "smollm2-135m", host: str = "127.0.0.1", port: int = 8000, *,
          max_tokens_limit: int = MAX_TOKENS_LIMIT, max_attempts: int = MAX_ATTEMPTS,
          log_level: str = "info", placement=None, **limits) -> None:
    """Load ``model_spec`` once and serve it until SIGINT or SIGTERM (blocks; returns
    after a graceful shutdown, the port closed). ``placement``: the device and dtype to
    load it in (``runtime/device.py``; default float32 on CPU). ``limits``: ``build_app``'s
    ``max_queue``, ``queue_timeout``, ``max_generation_seconds``."""
    from ..runtime.models import load_model
    t0 = time.perf_counter()
    log.info("loading %s", model_spec)
    loaded = load_model(model_spec, placement=placement)
    gen = Generator(loaded)
    gen.warm_up()
    log.info("loaded %s (%s, %s) in %.1f s; serving %s on http://%s:%d/v1", model_spec, loaded.source,
             loaded.placement.describe(), time.perf_counter() - t0, ", ".join(model_ids(model_spec)), host, port)
    app = build_app(gen, model_id=model_spec, max_tokens_limit=max_tokens_limit,
                    default_max_tokens=min(DEFAULT_MAX_TOKENS, max_tokens_limit), max_attempts=max_attempts,
                    **limits)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
    server.run()
    if server.stopped_by is not None:
        log.info("stopped by %s; the port is closed", signal.Signals(server.stopped_by).name)
