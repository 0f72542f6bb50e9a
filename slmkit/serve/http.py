"""The HTTP edge of `slm serve`: what a request must pass before the app reads or parses it, and uvicorn's limits.

- `Guard` (pure ASGI, outermost): the API key is checked from the headers before any body byte is read (and on
  /metrics when a key is set); a body over the limit is refused with 413 from its Content-Length, or as soon as
  a chunked body passes the limit, and never kept (up to 64 MB of it is read and dropped first, so the client
  can read the answer; beyond that the connection is cut at once); a body that is not UTF-8, or JSON nested
  deeper than Python can parse, is a 400. Every refusal is OpenAI's error shape and closes the connection.
- `uvicorn_config`: a bounded number of concurrent connections (503 beyond), idle connections closed after the
  keep-alive timeout, a new connection that sends nothing is closed as an idle one is (uvicorn alone waits for
  ever), and a cap on the size of request headers.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

DRAIN_BYTES = 64 << 20  # an over-limit body up to this size is read and dropped before the 413, so the client
DRAIN_S = 2.0  # reads a clean answer (closing on unread data resets the connection); larger ones are cut at once
KEEP_ALIVE_S = 5.0  # an idle connection (before its first request, or between requests) is closed after this
MAX_HEADER_BYTES = 64 * 1024
MAX_SHALLOW_BRACKETS = 200  # a body with fewer brackets cannot nest deeper than json can parse: not parsed twice


def error_body(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": code}}).encode()


async def send_error(send, status: int, message: str, **kw) -> None:
    body = error_body(status, message, **kw)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def key_matches(headers: list[tuple[bytes, bytes]], api_key: str) -> bool:
    value = next((v for k, v in headers if k == b"authorization"), b"")
    given = value[7:] if value[:7].lower() == b"bearer " else b""
    return hmac.compare_digest(given, api_key.encode())


class Guard:
    """ASGI middleware: key before body, bounded bodies, UTF-8 and parseable JSON (module docstring)."""

    def __init__(self, app, api_key: str | None, max_body: int, protected: set[str], json_paths: set[str]):
        self.app, self.api_key, self.max_body = app, api_key, max_body
        self.protected, self.json_paths = protected, json_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, headers = scope["path"], scope["headers"]
        if self.api_key is not None and path in self.protected and not key_matches(headers, self.api_key):
            return await send_error(send, 401, "missing or incorrect API key; send 'Authorization: Bearer KEY'",
                                    code="invalid_api_key")
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await send_error(send, 400, "Content-Length is not a number")
            if declared > self.max_body:
                if declared <= DRAIN_BYTES:
                    await _discard(receive)
                return await self._too_large(send, declared)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body:
                if message.get("more_body", False):
                    await _discard(receive)
                return await self._too_large(send, len(body), at_least=True)
            if not message.get("more_body", False):
                break
        if path in self.json_paths and body:
            try:
                text = bytes(body).decode("utf-8")
            except UnicodeDecodeError as e:
                return await send_error(send, 400, f"the request body is not valid UTF-8 (byte {e.start})")
            try:  # nesting depth is at most the number of brackets: parse here only bodies that could be deep
                if body.count(b"[") + body.count(b"{") > MAX_SHALLOW_BRACKETS:
                    await asyncio.to_thread(json.loads, text)
            except RecursionError:
                return await send_error(send, 400, "the request body is JSON nested too deeply to read")
            except ValueError:
                pass  # the app answers malformed JSON with its own 400 (where it broke)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send, size: int, at_least: bool = False) -> None:
        await send_error(send, 413, f"the request body is {'over ' if at_least else ''}{size} bytes; this server "
                                    f"takes at most {self.max_body} (slm serve --max-body-bytes)",
                         code="request_too_large")


async def _discard(receive) -> None:
    """Read and drop the rest of a body, up to DRAIN_BYTES or DRAIN_S, keeping nothing."""
    loop = asyncio.get_running_loop()
    end, seen = loop.time() + DRAIN_S, 0
    while seen < DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(0.0, end - loop.time()))
        except asyncio.TimeoutError:
            return
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class IdleClosingH11(H11Protocol):
    """uvicorn's h11 protocol, with the keep-alive timeout also armed when a connection opens, so a client that
    connects and sends nothing is closed as an idle keep-alive connection is."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


def uvicorn_config(app, host: str, port: int, log_level: str = "warning", max_connections: int = 256):
    """uvicorn's Config for slmkit's app, with the limits in the module docstring."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=IdleClosingH11,
                          limit_concurrency=max_connections, timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=5)
