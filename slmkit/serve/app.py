"""The OpenAI-compatible HTTP API of `slm serve` (FastAPI), on top of the continuous Batcher.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (with `stream: true` as server-sent
events in OpenAI's chunk format), GET /health, GET /metrics (Prometheus text). Errors are OpenAI's JSON shape,
{"error": {"message", "type", "param", "code"}}: 400 for bad bodies and too-long prompts, 401 for a wrong API
key, 404 for an unknown model or path, 413 for a body over the limit, 429 when the wait queue is full.

Hostile input (serve/http.py): the key is checked before the body is read, bodies are bounded, a prompt whose
bytes cannot fit the context is refused before it is tokenised, and tokenising and templating run off the event
loop, so one huge request cannot stall the others or /health.

Text lives here, ids in the Batcher: each request decodes its own tokens incrementally and matches its stop
strings; a matched stop string or a client that goes away cancels the request, which frees its cache row.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from slmkit.engine.sampling import SamplingParams
from slmkit.engine.text import TextStream, encode_prompt, stop_ids_for
from slmkit.errors import SlmError
from slmkit.serve.batcher import Batcher, Event, QueueFull
from slmkit.serve.batcher import Request as GenRequest
from slmkit.serve.http import Guard
from slmkit.serve.schemas import ChatRequest, CompletionRequest
from slmkit.tokenizer import Tokenizer

DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there
TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ApiError(Exception):
    """An error answered as OpenAI's JSON error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


@dataclass
class ServeConfig:
    """What `slm serve` was asked for; see `slm serve --help`."""

    name: str  # the model id clients send
    slots: int = 4  # cache rows decoded together
    context: int = 2048  # tokens per cache row (prompt + completion)
    max_tokens: int = 512  # cap on a request's max_tokens
    max_queue: int = 64  # requests waiting for a row before 429
    api_key: str | None = None
    compile: bool = False
    draft: str | None = None  # "lookup": prompt-lookup drafts per row (Batcher)
    draft_k: int = 4
    lookup_ngram: int = 3
    max_body_bytes: int | None = None  # request body limit; None: sized to the context (Server.max_body)
    created: int = field(default_factory=lambda: int(time.time()))


class Metrics:
    """Prometheus metrics in a registry of their own (several apps can live in one process)."""

    def __init__(self, batcher: Batcher):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("slmkit_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=r)
        self.prompt_tokens = Counter("slmkit_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.generated_tokens = Counter("slmkit_generated_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("slmkit_time_to_first_token_seconds", "Submission to first token", registry=r,
                              buckets=TIME_BUCKETS)
        self.latency = Histogram("slmkit_request_latency_seconds", "Submission to last token", registry=r,
                                 buckets=TIME_BUCKETS)
        self.rejected = Counter("slmkit_rejected_requests", "Requests answered 429 (queue full)", registry=r)
        self.finished = Counter("slmkit_finished_requests", "Generations ended, by reason (stop, length, "
                                "cancelled: the client went away, error)", ["reason"], registry=r)
        Gauge("slmkit_queue_depth", "Requests waiting for a cache row", registry=r).set_function(
            lambda: batcher.queue_depth)
        Gauge("slmkit_busy_slots", "Cache rows generating", registry=r).set_function(lambda: batcher.busy_rows)
        Gauge("slmkit_slots", "Cache rows", registry=r).set(batcher.slots)
        Gauge("slmkit_draft_proposed_tokens", "Draft tokens proposed (--draft lookup), since start",
              registry=r).set_function(lambda: batcher.drafted)
        Gauge("slmkit_draft_accepted_tokens", "Draft tokens accepted, since start", registry=r).set_function(
            lambda: batcher.accepted)


class _CountRequests:
    """ASGI middleware counting responses by path and status (pure ASGI, so streaming is untouched)."""

    def __init__(self, app, metrics: Metrics, paths: set[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in self.paths else "other"

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


@dataclass
class _Prepared:
    """A validated request turned into ids and limits."""

    ids: list[int]
    max_tokens: int
    sampling: SamplingParams
    stops: list[str]


class Generation:
    """One request in flight: submits to the Batcher and turns its token events into text pieces."""

    def __init__(self, server: "Server", prepared: _Prepared, http: Request, streaming: bool):
        self.server, self.prepared, self.http = server, prepared, http
        self.watch_disconnect = not streaming
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:  # called on the batcher's thread
            if event.finish is not None:
                reason = "stop" if self.stop_hit and event.finish == "cancelled" else event.finish
                server.metrics.finished.labels(reason).inc()
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, event)
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        self.request = GenRequest(prepared.ids, prepared.max_tokens, prepared.sampling,
                                  frozenset(server.stop_ids), emit)
        self.finish: str | None = None
        self.ended = False  # the batcher has finished the request (its row is free)
        self.stop_hit = False  # a stop string ended it (the batcher sees a cancel)
        self.completion_tokens = 0
        self.started = time.perf_counter()
        try:
            server.batcher.submit(self.request)
        except QueueFull as e:
            server.metrics.rejected.inc()
            raise ApiError(429, f"the server is busy ({e}); retry shortly", type="rate_limit_error",
                           code="queue_full") from None
        except SlmError as e:
            raise ApiError(400, str(e), code="context_length_exceeded") from None
        server.metrics.prompt_tokens.inc(len(prepared.ids))

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces until the request finishes; sets `finish`. Cancels the request if the consumer stops
        early or the client disconnects."""
        stream = TextStream(self.server.tokenizer, self.prepared.stops)  # stop ids end the row in the batcher
        checked = time.perf_counter()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self.queue.get(), timeout=DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    event = None
                # A streamed response learns of a disconnect when a send fails (the stream is cancelled);
                # a plain one asks the connection now and then.
                if self.watch_disconnect and time.perf_counter() - checked >= DISCONNECT_POLL_S:
                    checked = time.perf_counter()
                    if await self.http.is_disconnected():
                        self.finish = "cancelled"
                        return
                if event is None:
                    continue
                if event.finish is not None:
                    self.ended = True
                    if event.finish == "error":
                        raise ApiError(500, f"generation failed: {event.error}", type="server_error")
                    self.finish = event.finish
                    break
                self.completion_tokens += 1
                self.server.metrics.generated_tokens.inc()
                if self.completion_tokens == 1:
                    self.server.metrics.ttft.observe(self.request.first_token_s or 0.0)
                if event.token in self.server.stop_ids:
                    continue  # the batcher finishes the row next; stop ids are not text
                piece = stream.push(event.token)
                if piece:
                    yield piece
                if stream.done:  # a stop string
                    self.finish, self.stop_hit = "stop", True
                    return
            if self.finish in ("length", "stop"):  # text held back: a partial character, a possible stop string
                rest = stream.close()
                if stream.stopped_by_string:
                    self.finish, self.stop_hit = "stop", True
                if rest:
                    yield rest
        finally:
            if not self.ended:  # a stop string, a disconnect or a consumer that stopped reading
                self.request.cancel()
            self.server.metrics.latency.observe(time.perf_counter() - self.started)

    @property
    def usage(self) -> dict[str, int]:
        n = len(self.prepared.ids)
        return {"prompt_tokens": n, "completion_tokens": self.completion_tokens,
                "total_tokens": n + self.completion_tokens}


class Server:
    """The model, tokenizer, batcher and limits behind one app."""

    def __init__(self, model, tokenizer: Tokenizer, config: ServeConfig):
        self.config = config
        self.tokenizer = tokenizer
        self.model_context = model.config.context_length
        self.context = min(config.context, self.model_context)
        self.stop_ids = stop_ids_for(tokenizer)
        # the most bytes one token can stand for: a prompt of more bytes than context x this cannot fit (x2 for
        # normalisers that shrink text), so it is refused before the tokenizer sees it
        self.token_bytes = max(len(piece.encode("utf-8")) for piece in tokenizer.backend.get_vocab())
        self.max_prompt_bytes = 2 * self.context * self.token_bytes
        self.max_body = config.max_body_bytes or max(1 << 20, 2 * self.max_prompt_bytes)
        self.batcher = Batcher(model, slots=config.slots, max_len=self.context, max_queue=config.max_queue,
                               compile=config.compile, draft=config.draft, draft_k=config.draft_k,
                               lookup_ngram=config.lookup_ngram)
        self.metrics = Metrics(self.batcher)

    def check_model(self, name: str) -> None:
        if name != self.config.name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.config.name}'",
                           param="model", code="model_not_found")

    def check_bytes(self, texts: list[str], param: str) -> None:
        """Refuse, before tokenising, a prompt too long for the context whatever its tokens."""
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        if size > self.max_prompt_bytes:
            raise ApiError(400, f"the prompt has {size} bytes, more than {self.context} tokens of context can hold "
                                f"(at most {self.token_bytes} bytes a token); shorten it", param=param,
                           code="context_length_exceeded")

    def prepare(self, body: CompletionRequest | ChatRequest, ids: list[int], default_max: int) -> _Prepared:
        """Check the prompt against the context and cap max_tokens: the server cap, then the room left."""
        n = len(ids)
        if n >= self.context:
            raise ApiError(400, f"the prompt has {n} tokens but the context holds {self.context}; shorten it",
                           param="messages" if isinstance(body, ChatRequest) else "prompt",
                           code="context_length_exceeded")
        asked = getattr(body, "max_completion_tokens", None) or body.max_tokens
        if asked is not None and asked > self.model_context:
            raise ApiError(400, f"max_tokens is {asked} but the model's context is {self.model_context} tokens",
                           param="max_tokens")
        max_tokens = min(asked or default_max, self.config.max_tokens, self.context - n)
        sampling = SamplingParams(temperature=body.temperature, top_p=body.top_p, seed=body.seed)
        return _Prepared(ids, max_tokens, sampling, body.stops)


async def _score_prompt(server: "Server", body: CompletionRequest, ids: list[int]) -> dict:
    """echo + logprobs + max_tokens 0: the prompt back with each token's log-probability (OpenAI's legacy
    completions format: tokens, token_logprobs and top_logprobs, None at the first token, and text_offset)."""
    if len(ids) > server.context:
        raise ApiError(400, f"the prompt has {len(ids)} tokens but the context holds {server.context}; shorten it",
                       param="prompt", code="context_length_exceeded")
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def emit(event: Event) -> None:  # on the batcher's thread
        if event.finish is not None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(event))

    request = GenRequest(ids, 0, SamplingParams(temperature=0.0), frozenset(), emit, score_top=body.logprobs or 0)
    try:
        server.batcher.submit(request)
    except QueueFull as e:
        server.metrics.rejected.inc()
        raise ApiError(429, f"the server is busy ({e}); retry shortly", type="rate_limit_error",
                       code="queue_full") from None
    server.metrics.prompt_tokens.inc(len(ids))
    try:
        event = await done
    except asyncio.CancelledError:
        request.cancel()
        raise
    if event.finish != "stop" or event.scores is None:
        raise ApiError(500, f"scoring failed: {event.error or event.finish}", type="server_error")
    tok = server.tokenizer
    pieces = [tok.decode([i]) for i in ids]
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    top = [None] + [{tok.decode([i]): lp for i, lp in pairs} for pairs in event.scores.top]
    logprobs = {"tokens": pieces, "token_logprobs": [None] + event.scores.logprobs, "top_logprobs": top,
                "text_offset": offsets}
    return {"id": _id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": server.config.name,
            "choices": [{"index": 0, "text": tok.decode(ids), "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}}


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(model, tokenizer: Tokenizer, config: ServeConfig, start_batcher: bool = True) -> FastAPI:
    """The FastAPI app serving `model` under `config.name`. With start_batcher, the batcher's loop runs on a
    thread that starts and stops with the app; else the caller runs `app.state.server.batcher.run()` itself
    (on the main thread: faster, see Batcher.run) and stops it."""
    server = Server(model, tokenizer, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_batcher:
            server.batcher.start()
        try:
            yield
        finally:
            if start_batcher:
                server.batcher.stop()

    app = FastAPI(title="slmkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    api_paths = {"/v1/models", "/v1/completions", "/v1/chat/completions"}
    app.add_middleware(Guard, api_key=config.api_key, max_body=server.max_body, protected=api_paths | {"/metrics"},
                       json_paths=api_paths)
    app.add_middleware(_CountRequests, metrics=server.metrics, paths=api_paths | {"/health", "/metrics"})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return ApiError(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', '')})"
                            ).response()
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return ApiError(400, f"{where}: {msg}", param=loc[0] if loc else None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                        code="not_found" if e.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        return ApiError(500, f"{type(e).__name__}: {e}", type="server_error").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.name, "slots": server.batcher.slots,
                "busy_slots": server.batcher.busy_rows, "queue_depth": server.batcher.queue_depth}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        return {"object": "list", "data": [{"id": config.name, "object": "model", "created": config.created,
                                            "owned_by": "slmkit", "context_length": server.context}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        server.check_model(body.model)
        if isinstance(body.prompt, list) and isinstance(body.prompt[0], int):
            ids = list(body.prompt)
            if max(ids) >= model.config.vocab_size or min(ids) < 0:
                raise ApiError(400, f"prompt token ids must be in [0, {model.config.vocab_size})", param="prompt")
        else:
            text = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
            server.check_bytes([text], "prompt")
            try:
                ids = await asyncio.to_thread(encode_prompt, tokenizer, text)
            except SlmError as e:
                raise ApiError(400, str(e), param="prompt") from None
        if body.echo:
            return await _score_prompt(server, body, ids)
        gen = Generation(server, server.prepare(body, ids, default_max=16), request, body.stream)
        cid, created = _id("cmpl"), int(time.time())

        def chunk(text: str, finish: str | None) -> dict:
            return {"id": cid, "object": "text_completion", "created": created, "model": config.name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            return _stream(gen, lambda piece: chunk(piece, None), lambda finish: chunk("", finish), body, cid,
                           created, "text_completion")
        text = "".join([p async for p in gen.pieces()])
        return {**chunk(text, gen.finish), "usage": gen.usage}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        server.check_model(body.model)
        if not tokenizer.chat_template:
            raise ApiError(400, f"'{config.name}' has no chat template; use /v1/completions", param="messages")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in body.messages]
        server.check_bytes([m["content"] for m in messages], "messages")
        try:
            ids = await asyncio.to_thread(tokenizer.apply_chat_template, messages, add_generation_prompt=True,
                                          tokenize=True)
        except Exception as e:  # noqa: BLE001 - templates raise their own errors (e.g. role order)
            raise ApiError(400, f"the chat template refused these messages: {e}", param="messages") from None
        gen = Generation(server, server.prepare(body, ids, default_max=config.max_tokens), request, body.stream)
        cid, created = _id("chatcmpl"), int(time.time())

        def chunk(delta: dict, finish: str | None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": config.name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            return _stream(gen, lambda piece: chunk({"content": piece}, None), lambda finish: chunk({}, finish),
                           body, cid, created, "chat.completion.chunk", first=chunk({"role": "assistant", "content": ""},
                                                                                    None))
        text = "".join([p async for p in gen.pieces()])
        return {"id": cid, "object": "chat.completion", "created": created, "model": config.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": gen.finish}],
                "usage": gen.usage}

    return app


def _stream(gen: Generation, piece_chunk, final_chunk, body, cid: str, created: int, obj: str,
            first: dict | None = None) -> StreamingResponse:
    """Server-sent events: an optional first chunk, one chunk per text piece, a chunk with finish_reason, the
    usage chunk when stream_options.include_usage, then [DONE]. A failure mid-stream is sent as an error event."""

    async def events() -> AsyncIterator[str]:
        if first is not None:
            yield _sse(first)
        try:
            async for piece in gen.pieces():
                yield _sse(piece_chunk(piece))
        except ApiError as e:
            yield _sse({"error": {"message": e.message, "type": e.type, "param": None, "code": e.code}})
            return
        if gen.finish == "cancelled":
            return
        yield _sse(final_chunk(gen.finish))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield _sse({"id": cid, "object": obj, "created": created, "model": body.model, "choices": [],
                        "usage": gen.usage})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
