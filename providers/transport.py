"""HTTP transports: one narrow interface over httpx (sync and async) and aiohttp (async).

Task helpers (:mod:`providers.tasks`) build an :class:`HttpRequest`; a transport sends it and returns
an :class:`HttpResponse` or a streaming response. Transport failures become :class:`APIConnectionError` /
:class:`APITimeoutError`; HTTP status handling is the caller's.

The default async transport is aiohttp: httpx's async pool loses most of its throughput under
concurrency (see ARCHITECTURE.md, and ``benchmarks/core.py``). Callers may pass their own
``httpx.Client``, ``httpx.AsyncClient`` or ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from .errors import APIConnectionError, APITimeoutError, InvalidRequestArgumentError, PolyrouteError

if TYPE_CHECKING:
    import aiohttp
    import httpx


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connect timeout, per-read timeout and a total deadline for the whole call, in seconds.

    Example: ``Timeouts(total=30, connect=5)``; ``Timeouts.from_user(30)`` is the same as ``total=30``.
    """

    total: float | None = 600.0
    connect: float = 10.0
    read: float | None = None  # None: bounded by the total deadline only

    @classmethod
    def from_user(cls, value: Any) -> Timeouts:
        """Accept what users pass as ``timeout=``: seconds, ``Timeouts``, or an ``httpx.Timeout``."""
        if type(value) is float and value > 0:  # the common case (the Router's remaining time): checked at once
            return cls(value, min(10.0, value))
        if value is None:
            return DEFAULT_TIMEOUTS
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, bool):
            raise InvalidRequestArgumentError(
                "timeout must be a number of seconds, a Timeouts or an httpx.Timeout, not a bool"
            )
        if isinstance(value, (int, float)):
            if value <= 0:
                raise InvalidRequestArgumentError(f"timeout must be > 0 seconds, got {value}")
            return cls(total=float(value), connect=min(10.0, float(value)))
        connect = getattr(value, "connect", None)
        read = getattr(value, "read", None)
        if hasattr(value, "pool") and hasattr(value, "write"):  # httpx.Timeout
            return cls(total=None, connect=connect or 10.0, read=read)
        raise InvalidRequestArgumentError(
            f"timeout must be a number of seconds, a Timeouts or an httpx.Timeout, got {type(value).__name__}"
        )


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request a task helper wants sent. ``body`` is already-encoded JSON (or None)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None

    def __repr__(self) -> str:
        # Never show credentials, even in tracebacks that print locals.
        shown = {k: ("[redacted]" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        size = 0 if self.body is None else len(self.body)
        return f"HttpRequest({self.method} {_where(self.url)}, headers={shown}, body=<{size} bytes>)"


_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})


@dataclass(slots=True)
class HttpResponse:
    """A fully read response. ``headers`` is case-insensitive (httpx / aiohttp header objects)."""

    status: int
    headers: Mapping[str, str]
    content: bytes


class SyncStreamResponse(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    def iter_bytes(self) -> Iterator[bytes]: ...
    def read(self) -> bytes: ...
    def close(self) -> None: ...


class AsyncStreamResponse(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aread(self) -> bytes: ...
    async def aclose(self) -> None: ...
    def abort(self) -> None:
        """Drop the connection without awaiting (for garbage collection of an unread stream)."""


class SyncTransport(Protocol):
    def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse: ...
    def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> SyncStreamResponse: ...


class AsyncTransport(Protocol):
    async def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse: ...
    async def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> AsyncStreamResponse: ...


def _where(url: str) -> str:
    # Only scheme://host:port/path, never a query string (it may carry a token).
    return url.split("?", 1)[0]


# ---------------------------------------------------------------- transport exceptions -> polyroute errors


@dataclass(frozen=True, slots=True)
class _Failures:
    """Which exceptions of one HTTP library are a timeout, and which a failed or dropped connection."""

    timeouts: tuple[type[BaseException], ...]
    connection: tuple[type[BaseException], ...]


@functools.cache
def _httpx_failures() -> _Failures:
    import httpx

    return _Failures((httpx.TimeoutException,), (httpx.TransportError,))


@functools.cache
def _aiohttp_failures() -> _Failures:
    import aiohttp

    # A socket timeout is a ServerTimeoutError (a ClientError too: timeouts are tested first); aiohttp's
    # total timer raises a plain asyncio.TimeoutError.
    return _Failures((asyncio.TimeoutError, aiohttp.ServerTimeoutError), (aiohttp.ClientError,))


def _transport_error(
    exc: BaseException, failures: _Failures, url: str, *, reading: bool, total: float | None = None
) -> PolyrouteError | None:
    """The polyroute error for an HTTP library's exception, or None when ``exc`` is not a transport failure.

    Timeouts become :class:`APITimeoutError`, other transport failures :class:`APIConnectionError`; the message
    says whether it happened connecting or reading and names the URL without its query string. ``total``: the
    call's total timeout when the library's own timer enforces it (aiohttp), so its plain ``TimeoutError`` is
    reported as that deadline.
    """
    where = _where(url)
    if isinstance(exc, failures.timeouts):
        if total is not None and type(exc) in (asyncio.TimeoutError, TimeoutError):
            return _deadline_exceeded(url, total)
        timed_out = APITimeoutError(
            f"timed out {'reading from' if reading else 'connecting to'} {where}: {type(exc).__name__}"
        )
        timed_out.response_started = reading
        return timed_out
    if isinstance(exc, failures.connection):
        what = f"connection to {where} failed while reading" if reading else f"could not connect to {where}"
        err = APIConnectionError(f"{what}: {type(exc).__name__}: {str(exc).replace(url, where)}")
        err.response_started = reading
        return err
    return None


def _deadline_exceeded(url: str, total: float | None = None) -> APITimeoutError:
    """The error of a call that ran past its total timeout (``total`` seconds, when known)."""
    of = "" if total is None else f" of {total}s"
    return APITimeoutError(f"request to {_where(url)} exceeded its total timeout{of}")


class _Translated:
    """``with _Translated(failures, url, reading=...):`` raises a transport exception from inside the block as
    the polyroute error :func:`_transport_error` maps it to (without the library's traceback); anything else
    passes unchanged."""

    __slots__ = ("_failures", "_reading", "_total", "_url")

    def __init__(self, failures: _Failures, url: str, *, reading: bool, total: float | None = None) -> None:
        self._failures = failures
        self._url = url
        self._reading = reading
        self._total = total

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            err = _transport_error(exc, self._failures, self._url, reading=self._reading, total=self._total)
            if err is not None:
                raise err from None


# ---------------------------------------------------------------- httpx (sync)


class _Opened:
    """An upstream response whose body is still to be read: its status and headers, and until when (or for
    how long) reading it may take."""

    __slots__ = ("_limit", "_resp", "_url", "headers", "status")

    def __init__(self, resp: Any, url: str, limit: float | None, status: int) -> None:
        self._resp = resp
        self._url = url
        self._limit = limit  # httpx: a monotonic deadline; aiohttp: the total seconds (its own timeout)
        self.status = status
        self.headers = resp.headers


class _HttpxSyncStream(_Opened):
    __slots__ = ()

    def __init__(self, resp: httpx.Response, deadline: float | None, url: str) -> None:
        super().__init__(resp, url, deadline, resp.status_code)

    def iter_bytes(self) -> Iterator[bytes]:
        with _Translated(_httpx_failures(), self._url, reading=True):
            for chunk in self._resp.iter_bytes():
                if self._limit is not None and time.monotonic() > self._limit:
                    raise _deadline_exceeded(self._url)
                yield chunk

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def close(self) -> None:
        self._resp.close()


class HttpxSyncTransport:
    """Sync transport over an ``httpx.Client`` (ours, pooled, or the caller's)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self._timeout_cache: dict[tuple[float | None, float, float | None], Any] = {}

    def _httpx_timeout(self, t: Timeouts, remaining: float | None) -> Any:
        import httpx

        read = t.read if t.read is not None else remaining
        if read is not None and remaining is not None:
            read = min(read, remaining)
        key = (read, t.connect, remaining)
        cached = self._timeout_cache.get(key)
        if cached is None:
            cached = httpx.Timeout(connect=t.connect, read=read, write=read, pool=t.connect)
            if len(self._timeout_cache) >= 64:  # deadline-bounded timeouts are all different: start over
                self._timeout_cache.clear()
            self._timeout_cache[key] = cached
        return cached

    def _open(self, request: HttpRequest, timeouts: Timeouts) -> tuple[httpx.Response, float | None]:
        deadline = None if timeouts.total is None else time.monotonic() + timeouts.total
        req = self.client.build_request(
            request.method,
            request.url,
            content=request.body,
            headers=request.headers,
            timeout=self._httpx_timeout(timeouts, timeouts.total),
        )
        with _Translated(_httpx_failures(), request.url, reading=False):
            return self.client.send(req, stream=True), deadline

    def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse:
        resp, deadline = self._open(request, timeouts)
        stream = _HttpxSyncStream(resp, deadline, request.url)
        try:
            content = stream.read()
        finally:
            resp.close()
        return HttpResponse(resp.status_code, resp.headers, content)

    def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> SyncStreamResponse:
        resp, deadline = self._open(request, timeouts)
        return _HttpxSyncStream(resp, deadline, request.url)


# ---------------------------------------------------------------- httpx (async, caller's client)


class _HttpxAsyncStream(_Opened):
    __slots__ = ()

    def __init__(self, resp: httpx.Response, url: str, deadline: float | None) -> None:
        super().__init__(resp, url, deadline, resp.status_code)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        with _Translated(_httpx_failures(), self._url, reading=True):
            async for chunk in self._resp.aiter_bytes():
                if self._limit is not None and time.monotonic() > self._limit:
                    raise _deadline_exceeded(self._url)
                yield chunk

    async def aread(self) -> bytes:
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self) -> None:
        await self._resp.aclose()

    def abort(self) -> None:
        # No loop any more: the caller's client reclaims the connection when it closes.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._resp.aclose())


class HttpxAsyncTransport:
    """Async transport over a caller-supplied ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _open(self, request: HttpRequest, timeouts: Timeouts) -> httpx.Response:
        import httpx

        read = timeouts.read if timeouts.read is not None else timeouts.total
        req = self.client.build_request(
            request.method,
            request.url,
            content=request.body,
            headers=request.headers,
            timeout=httpx.Timeout(connect=timeouts.connect, read=read, write=read, pool=timeouts.connect),
        )
        with _Translated(_httpx_failures(), request.url, reading=False):
            return await self.client.send(req, stream=True)

    async def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse:
        async def run() -> HttpResponse:
            resp = await self._open(request, timeouts)
            try:
                content = await _HttpxAsyncStream(resp, request.url, None).aread()
            finally:
                await resp.aclose()
            return HttpResponse(resp.status_code, resp.headers, content)

        if timeouts.total is None:
            return await run()
        try:
            return await asyncio.wait_for(run(), timeouts.total)
        except asyncio.TimeoutError:
            raise _deadline_exceeded(request.url, timeouts.total) from None

    async def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> AsyncStreamResponse:
        deadline = None if timeouts.total is None else time.monotonic() + timeouts.total
        return _HttpxAsyncStream(await self._open(request, timeouts), request.url, deadline)


# ---------------------------------------------------------------- aiohttp (async, default)


class _AiohttpStream(_Opened):
    __slots__ = ()

    def __init__(self, resp: aiohttp.ClientResponse, url: str, total: float | None) -> None:
        super().__init__(resp, url, total, resp.status)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        with _Translated(_aiohttp_failures(), self._url, reading=True, total=self._limit):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    async def aread(self) -> bytes:
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must drop the connection so the
        # upstream sees the client leave and stops generating (and billing) tokens.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()

    def abort(self) -> None:
        self._resp.close()


class AiohttpTransport:
    """Async transport over an ``aiohttp.ClientSession`` bound to the running event loop."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        import aiohttp

        self.session = session
        self._timeout_cache: dict[Timeouts, Any] = {}
        self._client_timeout = aiohttp.ClientTimeout

    def _timeout(self, t: Timeouts) -> Any:
        cached = self._timeout_cache.get(t)
        if cached is None:
            cached = self._client_timeout(total=t.total, sock_connect=t.connect, sock_read=t.read)
            if len(self._timeout_cache) >= 64:
                self._timeout_cache.clear()
            self._timeout_cache[t] = cached
        return cached

    async def _request(self, request: HttpRequest, timeouts: Timeouts) -> aiohttp.ClientResponse:
        with _Translated(_aiohttp_failures(), request.url, reading=False, total=timeouts.total):
            return await self.session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=self._timeout(timeouts),
            )

    async def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse:
        resp = await self._request(request, timeouts)
        try:
            with _Translated(_aiohttp_failures(), request.url, reading=True, total=timeouts.total):
                content = await resp.read()
        except BaseException:  # a failure or a cancellation: drop the connection, never reuse a half-read one
            resp.close()
            raise
        resp.release()
        return HttpResponse(resp.status, resp.headers, content)

    async def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> AsyncStreamResponse:
        return _AiohttpStream(await self._request(request, timeouts), request.url, timeouts.total)
