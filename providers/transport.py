"""HTTP transports: one narrow interface over httpx (sync and async) and aiohttp (async).

Adapters build an :class:`HttpRequest`; a transport sends it and returns an :class:`HttpResponse`
or a streaming response. Transport failures become :class:`APIConnectionError` /
:class:`APITimeoutError`; HTTP status handling is the caller's.

The default async transport is aiohttp: httpx's async pool loses most of its throughput under
concurrency (see DESIGN.md, and ``benchmarks/core.py``). Callers may pass their own
``httpx.Client``, ``httpx.AsyncClient`` or ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import APIConnectionError, APITimeoutError, InvalidRequestArgumentError

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
    """One HTTP request an adapter wants sent. ``body`` is already-encoded JSON (or None)."""

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


# ---------------------------------------------------------------- httpx (sync)


class _HttpxSyncStream:
    __slots__ = ("_deadline", "_resp", "_url", "headers", "status")

    def __init__(self, resp: httpx.Response, deadline: float | None, url: str) -> None:
        self._resp = resp
        self._deadline = deadline
        self._url = url
        self.status = resp.status_code
        self.headers = resp.headers

    def iter_bytes(self) -> Iterator[bytes]:
        import httpx

        try:
            for chunk in self._resp.iter_bytes():
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise APITimeoutError(f"request to {_where(self._url)} exceeded its total timeout")
                yield chunk
        except httpx.TimeoutException as e:
            raise APITimeoutError(f"timed out reading from {_where(self._url)}: {type(e).__name__}") from None
        except httpx.TransportError as e:
            raise APIConnectionError(
                f"connection to {_where(self._url)} failed while reading: {type(e).__name__}: {e}"
            ) from None

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
        import httpx

        deadline = None if timeouts.total is None else time.monotonic() + timeouts.total
        req = self.client.build_request(
            request.method,
            request.url,
            content=request.body,
            headers=request.headers,
            timeout=self._httpx_timeout(timeouts, timeouts.total),
        )
        try:
            return self.client.send(req, stream=True), deadline
        except httpx.TimeoutException as e:
            raise APITimeoutError(f"timed out connecting to {_where(request.url)}: {type(e).__name__}") from None
        except httpx.TransportError as e:
            raise APIConnectionError(f"could not connect to {_where(request.url)}: {type(e).__name__}: {e}") from None

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


class _HttpxAsyncStream:
    __slots__ = ("_deadline", "_resp", "_url", "headers", "status")

    def __init__(self, resp: httpx.Response, url: str, deadline: float | None) -> None:
        self._resp = resp
        self._url = url
        self._deadline = deadline
        self.status = resp.status_code
        self.headers = resp.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._resp.aiter_bytes():
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise APITimeoutError(f"request to {_where(self._url)} exceeded its total timeout")
                yield chunk
        except httpx.TimeoutException as e:
            raise APITimeoutError(f"timed out reading from {_where(self._url)}: {type(e).__name__}") from None
        except httpx.TransportError as e:
            raise APIConnectionError(
                f"connection to {_where(self._url)} failed while reading: {type(e).__name__}: {e}"
            ) from None

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
        try:
            return await self.client.send(req, stream=True)
        except httpx.TimeoutException as e:
            raise APITimeoutError(f"timed out connecting to {_where(request.url)}: {type(e).__name__}") from None
        except httpx.TransportError as e:
            raise APIConnectionError(f"could not connect to {_where(request.url)}: {type(e).__name__}: {e}") from None

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
            raise APITimeoutError(
                f"request to {_where(request.url)} exceeded its total timeout of {timeouts.total}s"
            ) from None

    async def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> AsyncStreamResponse:
        deadline = None if timeouts.total is None else time.monotonic() + timeouts.total
        return _HttpxAsyncStream(await self._open(request, timeouts), request.url, deadline)


# ---------------------------------------------------------------- aiohttp (async, default)


class _AiohttpStream:
    __slots__ = ("_resp", "_url", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.headers = resp.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise APITimeoutError(f"timed out reading from {_where(self._url)}") from None
        except aiohttp.ClientError as e:
            raise APIConnectionError(
                f"connection to {_where(self._url)} failed while reading: {type(e).__name__}: {e}"
            ) from None

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
        import aiohttp

        try:
            return await self.session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=self._timeout(timeouts),
            )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise APITimeoutError(f"timed out connecting to {_where(request.url)}") from None
        except aiohttp.ClientError as e:
            raise APIConnectionError(f"could not connect to {_where(request.url)}: {type(e).__name__}: {e}") from None

    async def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse:
        import aiohttp

        resp = await self._request(request, timeouts)
        try:
            content = await resp.read()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            resp.close()
            raise APITimeoutError(
                f"request to {_where(request.url)} exceeded its timeout ({timeouts.total}s total)"
            ) from None
        except aiohttp.ClientError as e:
            resp.close()
            raise APIConnectionError(
                f"connection to {_where(request.url)} failed while reading: {type(e).__name__}: {e}"
            ) from None
        resp.release()
        return HttpResponse(resp.status, resp.headers, content)

    async def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> AsyncStreamResponse:
        return _AiohttpStream(await self._request(request, timeouts), request.url)
