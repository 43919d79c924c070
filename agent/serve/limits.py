"""Limits before work: a pure ASGI middleware in front of the app.

For every request to a protected path it checks, in this order and before any byte of the body
is read or parsed:

1. the bearer token (constant-time compare): a request without the right token gets 401 and
   costs nothing, whatever its size;
2. the declared body size (``Content-Length``) against ``max_body`` (413);
3. while the body streams in (chunked uploads declare no length), the running total (413 as soon
   as it passes the limit; the rest is never buffered).

Pages (``/``, ``/dashboard``, static files) and liveness (``/healthz``) are not protected, so a
browser can load the page that then asks for the key. Each rejection is a JSON body
``{"error": {"message", "type", "details"}}`` naming the limit, like every other error.

:class:`BoundedPool` is the same idea for blocking work: a request waits at most ``wait`` seconds
for one of its pool's threads, then fails fast (the feedback store's 503 + ``Retry-After``)
instead of queueing without bound behind threads that are stuck on a locked database.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1_000_000  # bytes of one request body (1 MB)
QUEUE_WAIT = 5.0  # seconds a request that may wait on an LLM waits for a thread, then 503
_UNAUTHORIZED = "missing or wrong API key (Authorization: Bearer)"
T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """Raised inside the app's receive() when a streamed body passes the limit (an HTTP 413, so
    the framework reports it as one instead of as a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit}-byte limit (--max-body)")


class Limits:
    """ASGI middleware: auth, then body size (module doc).

    Args:
        app: The ASGI app behind it.
        api_key: Bearer token, or ``None`` for no auth.
        max_body: Largest accepted request body in bytes.
        protected: Path prefixes that need the token and have a body limit.
        open_paths: Exact paths under a protected prefix that stay open.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body: int = MAX_BODY,
        protected: Iterable[str] = ("/v1/", "/metrics", "/docs", "/redoc", "/openapi.json"),
        open_paths: Iterable[str] = (),
    ) -> None:
        if max_body < 1:
            raise ValueError(f"max_body must be at least 1 byte, got {max_body}")
        self.app = app
        self.api_key = api_key
        self.max_body = max_body
        self.protected = tuple(protected)
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        guarded = path.startswith(self.protected) and path not in self.open_paths
        if guarded and self.api_key is not None and not self._authorized(scope):
            await _reject(send, 401, "authentication_error", _UNAUTHORIZED, auth=True)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _reject(send, 413, "request_too_large", self._too_large())
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reject(send, 413, "request_too_large", self._too_large())

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    token.strip().encode(), self.api_key.encode()
                )
        return False

    def _too_large(self) -> str:
        return BodyTooLarge(self.max_body).detail


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(send: Send, status: int, kind: str, message: str, auth: bool = False) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "details": []}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if auth:
        headers.append((b"www-authenticate", b"Bearer"))
    headers.append((b"connection", b"close"))  # the unread body is not drained
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ServerBusy(RuntimeError):
    """Every thread of a pool stayed taken for its wait: the request was not started (503 with
    ``Retry-After``, error type ``overloaded``)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BoundedPool:
    """Threads of their own for one kind of blocking call, with a bounded wait for a free one.

    Calls in this pool never queue behind other pools' work (an upsert waiting on the model's
    write lock, a recommendation's LLM call), and a call that finds every thread taken for
    ``wait`` seconds raises ``busy()`` without running: the threads are then stuck on something
    (a database locked elsewhere), and a quick refusal beats a request that stalls behind them.
    Made inside the event loop (an anyio limiter belongs to one loop), e.g. in the app's lifespan.

    Args:
        threads: Calls running at once.
        wait: Longest wait for a thread, in seconds.
        busy: The exception to raise after that wait.
    """

    def __init__(self, threads: int, wait: float, busy: Callable[[], Exception]) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.wait = wait
        self.busy = busy
        self._gate = anyio.CapacityLimiter(threads)  # taken with a timeout, for the bound
        self._threads = anyio.CapacityLimiter(threads)  # never waits: the gate admits as many

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the pool's threads (raises ``busy()`` after ``wait``)."""
        with anyio.move_on_after(self.wait) as waited:
            await self._gate.acquire()  # a cancelled acquire holds no token
        if waited.cancelled_caught:
            raise self.busy()
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)
        finally:
            self._gate.release()
