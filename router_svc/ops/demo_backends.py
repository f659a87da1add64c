"""Small deterministic OpenAI-compatible backends that stand in for vLLM / Ollama.

Each backend answers ``"[<name>] You said: <last user text>"`` and records every request
it receives in ``app[RECEIVED]`` so tests can check what the router forwarded (model name,
redacted text, headers). ``BackendOptions`` injects faults: delays, error statuses,
connections closed mid-stream and API-key checks. Options are mutable: a test may change
``app[OPTIONS].fail_status`` while the server runs.

Independent of the rest of ``router_svc`` (aiohttp and the standard library only)::

    python -m router_svc.ops.demo_backends --port 9101 --name phi-4
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

MAX_ECHO_CHARS = 200


@dataclass
class BackendOptions:
    """Fault injection. Mutable on purpose: tests may flip a field on a running server."""

    delay_s: float = 0.0  # before answering (before the headers)
    chunk_delay_s: float = 0.0  # between streamed chunks
    fail_status: int | None = None  # answer every generation request with this status
    abort_after_chunks: int | None = None  # close the connection after N data events
    require_api_key: str | None = None  # 401 unless ``Authorization: Bearer <key>``
    strict_model: bool = False  # 404 when the body's ``model`` is not this backend's name
    repeat_answer: int = 1  # the answer this many times over (a long stream)


@dataclass
class ReceivedRequest:
    """One request as the backend saw it, plus how its answer ended."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    finished: bool = False  # the whole answer was written
    disconnected: bool = False  # the peer went away before the answer was complete
    chunks_sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


NAME = web.AppKey("backend_name", str)
OPTIONS = web.AppKey("backend_options", BackendOptions)
RECEIVED = web.AppKey("backend_received", list[ReceivedRequest])
_IDS = web.AppKey("backend_ids", itertools.count)


# ---------------------------------------------------------------------------- text helpers


def _part_text(content: Any) -> str:
    """Text of an OpenAI ``content``: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _prompt_texts(path: str, body: dict[str, Any]) -> list[str]:
    if path.endswith("/chat/completions"):
        messages = body.get("messages") or []
        return [_part_text(m.get("content")) for m in messages if isinstance(m, dict)]
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str)]
    return [prompt] if isinstance(prompt, str) else []


def _last_user_text(path: str, body: dict[str, Any]) -> str:
    if path.endswith("/chat/completions"):
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _part_text(message.get("content"))
        return ""
    texts = _prompt_texts(path, body)
    return texts[-1] if texts else ""


def _word_count(texts: Sequence[str]) -> int:
    return sum(len(t.split()) for t in texts)


def answer_text(name: str, user_text: str) -> str:
    """The deterministic answer of backend ``name`` to ``user_text``."""
    return f"[{name}] You said: {user_text[:MAX_ECHO_CHARS]}"


def split_chunks(text: str) -> list[str]:
    """Content pieces of a streamed answer: one word each, spaces kept, joined == text."""
    pieces: list[str] = []
    for word in text.split(" "):
        pieces.append(word + " ")
    pieces[-1] = pieces[-1][:-1]
    return [p for p in pieces if p] or [""]


def _error(status: int, message: str, err_type: str, code: str | None) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return web.json_response(body, status=status)


# ---------------------------------------------------------------------------- handlers


async def _record(request: web.Request) -> ReceivedRequest:
    body: dict[str, Any] | None = None
    if request.can_read_body:
        try:
            parsed = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
    received = ReceivedRequest(request.method, request.path, dict(request.headers), body)
    request.app[RECEIVED].append(received)
    return received


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _authorized(request: web.Request) -> bool:
    key = request.app[OPTIONS].require_api_key
    return key is None or request.headers.get("Authorization") == f"Bearer {key}"


def _unauthorized() -> web.Response:
    return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def _check(request: web.Request, received: ReceivedRequest) -> web.Response | None:
    """Common refusals: bad body, API key, wrong model, injected failure."""
    opts = request.app[OPTIONS]
    name = request.app[NAME]
    if not _authorized(request):
        return _unauthorized()
    if received.body is None:
        return _error(400, "Request body must be a JSON object.", "invalid_request_error", None)
    if opts.strict_model and received.body.get("model") != name:
        return _error(
            404,
            f"The model `{received.body.get('model')}` does not exist.",
            "invalid_request_error",
            "model_not_found",
        )
    if opts.fail_status is not None:
        err_type = "server_error" if opts.fail_status >= 500 else "invalid_request_error"
        return _error(opts.fail_status, f"[{name}] injected failure", err_type, None)
    return None


async def _generate(request: web.Request) -> web.StreamResponse:
    received = await _record(request)
    try:
        return await _answer(request, received)
    except asyncio.CancelledError:  # handler_cancellation: the peer hung up
        received.disconnected = True
        raise
    finally:
        received.done.set()


async def _answer(request: web.Request, received: ReceivedRequest) -> web.StreamResponse:
    opts = request.app[OPTIONS]
    name = request.app[NAME]
    if opts.delay_s:
        await asyncio.sleep(opts.delay_s)
    if _gone(request):
        received.disconnected = True
        raise web.HTTPServiceUnavailable()  # nobody is listening; the write is dropped
    refusal = _check(request, received)
    if refusal is not None:
        received.finished = True
        return refusal
    assert received.body is not None
    body = received.body
    chat = request.path.endswith("/chat/completions")
    prompt_tokens = _word_count(_prompt_texts(request.path, body))
    content = " ".join([answer_text(name, _last_user_text(request.path, body))]
                       * max(1, opts.repeat_answer))
    completion_tokens = len(content.split())
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{name}-{next(request.app[_IDS])}"
    created = int(time.time())
    if body.get("stream"):
        return await _stream(request, received, ident, created, chat, content, usage)
    if opts.abort_after_chunks is not None:
        received.disconnected = True
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable()  # never written: the connection is closed
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": None,
            "finish_reason": "stop",
        }
    else:
        choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": "stop"}
    received.finished = True
    return web.json_response(
        {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": name,
            "choices": [choice],
            "usage": usage,
        }
    )


async def _stream(
    request: web.Request,
    received: ReceivedRequest,
    ident: str,
    created: int,
    chat: bool,
    content: str,
    usage: dict[str, int],
) -> web.StreamResponse:
    opts = request.app[OPTIONS]
    name = request.app[NAME]
    stream_options = received.body.get("stream_options") if received.body else None
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))

    def chunk(delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta or {},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            text = (delta or {}).get("content", "")
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        out: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": name,
            "choices": [choice],
        }
        if include_usage:
            out["usage"] = None  # as OpenAI does on every chunk but the last
        return out

    events: list[dict[str, Any]] = []
    if chat:
        events.append(chunk({"role": "assistant", "content": ""}, None))
    events += [chunk({"content": piece}, None) for piece in split_chunks(content)]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(
            {
                "id": ident,
                "object": events[0]["object"],
                "created": created,
                "model": name,
                "choices": [],
                "usage": usage,
            }
        )

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        for i, event in enumerate(events):
            if opts.abort_after_chunks is not None and i >= opts.abort_after_chunks:
                received.disconnected = True
                if request.transport is not None:
                    request.transport.close()
                return response
            if i and opts.chunk_delay_s:
                await asyncio.sleep(opts.chunk_delay_s)
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            received.chunks_sent += 1
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:  # the router hung up (aiohttp raises ClientConnectionResetError)
        received.disconnected = True
        return response
    received.finished = True
    return response


async def _models(request: web.Request) -> web.Response:
    await _record(request)
    if not _authorized(request):
        return _unauthorized()
    name = request.app[NAME]
    model = {"id": name, "object": "model", "created": 0, "owned_by": "router-svc-demo"}
    return web.json_response({"object": "list", "data": [model]})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_backend_app(name: str, options: BackendOptions | None = None) -> web.Application:
    """One demo backend serving the model ``name``."""
    app = web.Application()
    app[NAME] = name
    app[OPTIONS] = options if options is not None else BackendOptions()
    app[RECEIVED] = []
    app[_IDS] = itertools.count(1)
    app.router.add_post("/v1/chat/completions", _generate)
    app.router.add_post("/v1/completions", _generate)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    return app


# ---------------------------------------------------------------------------- running several


BackendSpec = tuple[str, str, int] | tuple[str, str, int, BackendOptions]


@dataclass
class RunningBackend:
    name: str
    host: str
    port: int
    app: web.Application
    runner: web.AppRunner

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, as an OpenAI client's ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"


class BackendsRunner:
    """Several demo backends, each on its own port. ``await cleanup()`` stops them all."""

    def __init__(self) -> None:
        self.backends: dict[str, RunningBackend] = {}

    def __getitem__(self, name: str) -> RunningBackend:
        return self.backends[name]

    async def cleanup(self) -> None:
        for backend in reversed(list(self.backends.values())):
            await backend.runner.cleanup()
        self.backends.clear()

    async def __aenter__(self) -> BackendsRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cleanup()


async def run_backends(
    specs: Sequence[BackendSpec], options: BackendOptions | None = None
) -> BackendsRunner:
    """Start one backend per ``(name, host, port[, options])``; port 0 picks a free port.

    ``options`` is the default for specs without their own; each backend gets its own copy.
    """
    runners = BackendsRunner()
    try:
        for spec in specs:
            name, host, port = spec[0], spec[1], spec[2]
            own = spec[3] if len(spec) > 3 else None  # type: ignore[misc]
            if own is None:
                own = replace(options) if options is not None else None
            app = create_backend_app(name, own)
            runner = web.AppRunner(
                app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
            )
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = port
            for address in runner.addresses:
                if isinstance(address, tuple):
                    bound = address[1]
                    break
            runners.backends[name] = RunningBackend(name, host, bound, app, runner)
    except BaseException:
        await runners.cleanup()
        raise
    return runners


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A deterministic OpenAI-compatible backend.")
    parser.add_argument("--name", default="demo-model", help="the model this backend serves")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks"
    )
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument("--api-key", default=None, help="require this Bearer key")
    args = parser.parse_args(argv)
    options = BackendOptions(
        delay_s=args.delay,
        chunk_delay_s=args.chunk_delay,
        fail_status=args.fail_status,
        require_api_key=args.api_key,
    )
    app = create_backend_app(args.name, options)
    print(f"demo backend {args.name!r} on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(
        app, host=args.host, port=args.port, print=None, access_log=None, handler_cancellation=True
    )


if __name__ == "__main__":
    main()
