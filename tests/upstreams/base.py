"""Infrastructure shared by every fake upstream: serving, recording, scripted replies, auth, SSE.

A :class:`FakeUpstream` is a real aiohttp server on ``127.0.0.1`` (ephemeral port) run from a
daemon thread with its own event loop, so synchronous and asynchronous tests can both talk to it
over real HTTP. Subclasses only declare routes and the family's error shapes and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import orjson
from aiohttp import web
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler, bool]  # method, path (without prefix), handler, needs auth
_U = TypeVar("_U", bound="FakeUpstream")

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


@dataclass
class Reply:
    """A scripted response, served instead of the default behaviour (see ``FakeUpstream.enqueue``)."""

    status: int = 200
    json: Any = None
    text: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    sse: list[bytes | str] | None = None
    chunk_delay: float = 0.0
    drop_after_sse: bool = False


@dataclass
class RecordedRequest:
    """One request as the server received it (header names lower-cased, last query value wins)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    query_items: list[tuple[str, str]] = field(default_factory=list)

    @property
    def token(self) -> str | None:
        """The bearer token sent, if any."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


RECORD = web.RequestKey("fake_upstream_record", RecordedRequest)


def bearer_token(request: web.Request) -> str | None:
    """The non-empty bearer token of ``request``, else None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def request_id() -> str:
    """A random 32-hex-digit id."""
    return os.urandom(16).hex()


class FakeUpstream:
    """Base fake upstream server. Use as a context manager or call ``start()`` / ``stop()``.

    ``wait_for_disconnect`` waits until ``disconnects`` exceeds the value it had when the most
    recent stream started (so it is True once the client of the latest stream went away early).
    """

    family: ClassVar[str] = "base"

    def __init__(self, *, prefix: str = "") -> None:
        self.prefix = prefix.rstrip("/")
        self.require_auth = True
        self.valid_tokens: set[str] | None = None
        self.unknown_models: set[str] = set()
        self.reasoning_field: str | None = None
        self.stream_delay = 0.0  # seconds between frames of default (non-scripted) streams
        self.record = True  # False in the CLI so long benchmarks do not grow memory
        # Fail this share of POST requests with ``failure_status`` (a flaky upstream), seeded for repeatability.
        self.fail_rate = 0.0
        self.failure_status = 503
        self.failure_retry_after: str | None = "0"
        self.failures = 0
        self._fail_rng = random.Random(1234)
        self.latency = 0.0  # seconds added before answering each POST (spreads a batch's rows in time)
        # Count prompt tokens like a real server: the chat template's tokens included (cl100k as the tokenizer).
        self.template_tokens = False
        self.requests: list[RecordedRequest] = []
        self.streams_started = 0
        self.disconnects = 0
        self._disconnects_at_start = 0
        self._replies: deque[tuple[str | None, Reply]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- family hooks
    def routes(self) -> list[Route]:
        """The family's routes; paths are relative to ``prefix``."""
        return []

    def response_headers(self) -> dict[str, str]:
        """Realistic headers for every non-scripted response."""
        return {"x-request-id": request_id()}

    def dumps(self, obj: Any) -> bytes:
        """Serialize JSON the way the family does (compact by default)."""
        return orjson.dumps(obj)

    def unauthorized(self) -> web.Response:
        """The family's 401 response."""
        return self.respond({"error": "Unauthorized"}, status=401)

    def server_error(self, status: int) -> web.Response:
        """An overloaded / failing upstream (OpenAI's error shape unless the family differs)."""
        headers = {"retry-after": self.failure_retry_after} if self.failure_retry_after is not None else None
        body = {"error": {"message": "The server is overloaded, please retry", "type": "server_error", "code": None}}
        return self.respond(body, status=status, headers=headers)

    # ----------------------------------------------------------------- public API
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (without ``prefix``)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """``url`` followed by ``prefix``."""
        return self.url + self.prefix

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    def enqueue(self, reply: Reply, path: str | None = None) -> None:
        """Serve ``reply`` to the next request for ``path`` (any path when None), FIFO.

        Scripted replies take precedence over everything, including auth checks.
        """
        with self._cond:
            self._replies.append((path, reply))

    def reset(self) -> None:
        """Forget recorded requests, queued replies and counters."""
        with self._cond:
            self.requests.clear()
            self._replies.clear()
            self.streams_started = 0
            self.disconnects = 0
            self._disconnects_at_start = 0

    def wait_for_disconnect(self, timeout: float = 5.0) -> bool:
        """Block until a client of the latest stream left early; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.disconnects > self._disconnects_at_start, timeout)

    def start(self: _U) -> _U:
        """Serve from a daemon thread; returns once listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._thread_main, args=(ready, failure), name=f"fake-{self.family}", daemon=True
        )
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None
        self._loop = None

    def __enter__(self: _U) -> _U:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self, port: int = 0, *, announce: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread (uvloop when available) until SIGTERM / SIGINT."""
        try:
            import uvloop
        except ImportError:
            asyncio.run(self._serve_main(port, announce))
        else:
            uvloop.run(self._serve_main(port, announce))

    # ----------------------------------------------------------------- response helpers
    def respond(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        """A JSON response carrying the family's headers."""
        merged = self.response_headers()
        if headers:
            merged.update(headers)
        merged.setdefault("content-type", JSON_TYPE)
        return web.Response(status=status, body=self.dumps(obj), headers=merged)

    def respond_text(self, text: str, status: int, headers: Mapping[str, str] | None = None) -> web.Response:
        """A text/plain response carrying the family's headers."""
        merged = self.response_headers()
        if headers:
            merged.update(headers)
        merged["content-type"] = "text/plain; charset=utf-8"
        return web.Response(status=status, body=text.encode(), headers=merged)

    def authorized(self, request: web.Request) -> bool:
        """True when the request has an acceptable bearer token."""
        token = bearer_token(request)
        if token is None:
            return False
        return self.valid_tokens is None or token in self.valid_tokens

    async def stream(
        self,
        request: web.Request,
        writes: Iterable[bytes],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop: bool = False,
    ) -> web.StreamResponse:
        """Write each item of ``writes`` (write + drain each), counting early client disconnects."""
        return await self.write_stream(
            request, writes, status=status, headers=headers, delay=delay, cut=_abort if drop else None
        )

    async def write_stream(
        self,
        request: web.Request,
        pieces: Iterable[bytes],
        *,
        status: int,
        headers: Mapping[str, str] | None,
        delay: float,
        cut: Callable[[web.Request], None] | None = None,
        sent: Callable[[bytes], None] | None = None,
        left: Callable[[], None] | None = None,
    ) -> web.StreamResponse:
        """Write and drain each piece, ``delay`` apart (``sent`` is told of each); then ``cut`` the connection, or
        end the body. An early client disconnect is counted (and ``left`` called)."""
        response = web.StreamResponse(status=status, headers=headers)
        with self._cond:
            self.streams_started += 1
            self._disconnects_at_start = self.disconnects
        try:
            await response.prepare(request)
            for index, piece in enumerate(pieces):
                if delay and index:
                    await asyncio.sleep(delay)
                await response.write(piece)
                await request.writer.drain()
                if sent is not None:
                    sent(piece)
            if cut is not None:
                cut(request)
                return response
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError) as exc:
            if left is not None:
                left()
            with self._cond:
                self.disconnects += 1
                self._cond.notify_all()
            if isinstance(exc, asyncio.CancelledError):
                raise
        return response

    # ----------------------------------------------------------------- internals
    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.require_auth and not self.authorized(request):
                return self.unauthorized()
            return await handler(request)

        return guarded

    def _take_reply(self, path: str) -> Reply | None:
        with self._cond:
            for index, (wanted, reply) in enumerate(self._replies):
                if wanted is None or wanted == path:
                    del self._replies[index]
                    return reply
        return None

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        parsed: Any = None
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        if not self.record:
            return RecordedRequest(request.method, request.path, {}, {}, body, parsed)
        items = list(request.query.items())
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(items),
            headers={key.lower(): value for key, value in request.headers.items()},
            body=body,
            json=parsed,
            query_items=items,
        )
        with self._cond:
            self.requests.append(record)
        return record

    async def _scripted(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = CIMultiDict(reply.headers)
        if reply.content_type is not None:
            headers["content-type"] = reply.content_type
        if reply.sse is not None:
            headers.setdefault("content-type", SSE_TYPE)
            pieces = [piece.encode() if isinstance(piece, str) else piece for piece in reply.sse]
            return await self.stream(
                request,
                pieces,
                status=reply.status,
                headers=headers,
                delay=reply.chunk_delay,
                drop=reply.drop_after_sse,
            )
        if reply.body is not None:
            body, default_type = reply.body, JSON_TYPE
        elif reply.text is not None:
            body, default_type = reply.text.encode(), "text/plain; charset=utf-8"
        elif reply.json is not None:
            body, default_type = self.dumps(reply.json), JSON_TYPE
        else:
            body, default_type = b"", None
        if default_type is not None:
            headers.setdefault("content-type", default_type)
        return web.Response(status=reply.status, body=body, headers=headers)

    def _build_app(self) -> web.Application:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            request[RECORD] = await self._record(request)
            reply = self._take_reply(request.path)
            if reply is not None:
                return await self._scripted(request, reply)
            if self.latency and request.method == "POST":
                await asyncio.sleep(self.latency)
            if self.fail_rate and request.method == "POST" and self._fail_rng.random() < self.fail_rate:
                with self._cond:
                    self.failures += 1
                return self.server_error(self.failure_status)
            try:
                return await handler(request)
            except web.HTTPException as exc:  # unknown route / method: still the family's headers
                exc.headers.update(self.response_headers())
                raise

        app = web.Application(middlewares=[middleware], client_max_size=64 * 1024 * 1024)
        for method, path, handler, needs_auth in self.routes():
            app.router.add_route(method, self.prefix + path, self._guard(handler) if needs_auth else handler)
        return app

    async def _startup(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=0.25)
            await runner.setup()
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
        except BaseException:
            sock.close()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]

    async def _shutdown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            try:
                loop.run_until_complete(self._startup(0))
            except BaseException as exc:
                failure.append(exc)
                return
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            ready.set()
            loop.close()

    async def _serve_main(self, port: int, announce: Callable[[str], None] | None) -> None:
        await self._startup(port)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        if announce is not None:
            announce(self.url)
        try:
            await stopped.wait()
        finally:
            await self._shutdown()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await the tasks still pending after shutdown, so none is destroyed pending."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        gathered: Coroutine[Any, Any, list[Any]] = _gather(pending)
        loop.run_until_complete(gathered)


async def _gather(tasks: list[asyncio.Task[Any]]) -> list[Any]:
    return await asyncio.gather(*tasks, return_exceptions=True)
