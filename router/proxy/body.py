"""Reading request bodies under limits: size, time to arrive, and memory held by bodies still arriving.

A body larger than ``max_request_bytes`` is a 413; one not complete within ``request_body_timeout``
seconds is a 408 and its connection is closed (a slow client cannot hold memory or a handler for
long); when the bodies still arriving would hold more than ``max_pending_body_bytes`` in total, a new
one is refused at once with a 503 (its declared length counts as soon as its headers arrive).

Example::

    app[BODY_LIMITS] = BodyLimits(max_bytes=4_000_000, timeout=30.0, max_pending=64_000_000)
    raw = await read_body(request)   # raises ClientError (413, 408, 503, 400)
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .validate import ClientError


class BodyLimits:
    """The body limits of one proxy app, and the bytes its unfinished bodies hold right now."""

    def __init__(self, max_bytes: int, timeout: float, max_pending: int) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_pending = max_pending
        self.pending = 0  # bytes held (or announced) by bodies still arriving

    def too_large(self) -> ClientError:
        return ClientError(
            f"request body larger than the proxy's limit of {self.max_bytes} bytes",
            code="too_large",
            status=413,
            close=True,
        )

    async def read(self, request: web.Request) -> bytes:
        """The whole body of ``request``, within the limits."""
        declared = request.content_length
        if declared is not None and declared > self.max_bytes:
            raise self.too_large()
        content = request.content
        if content.is_eof():  # it all arrived with the headers (most requests): no timer, nothing pending
            data = await content.read()
            if len(data) > self.max_bytes:
                raise self.too_large()
            return data
        held = declared or 0
        if held and self.pending + held > self.max_pending:
            raise self._busy()
        self.pending += held
        try:
            return await asyncio.wait_for(self._chunks(request, held), self.timeout)
        except asyncio.TimeoutError:
            raise ClientError(
                f"the request body did not arrive within {self.timeout:g} seconds; send it at once",
                code="timeout",
                status=408,
                drop=True,
            ) from None
        finally:
            self.pending -= held

    async def _chunks(self, request: web.Request, announced: int) -> bytes:
        buffer = bytearray()
        extra = 0  # bytes beyond the announced length (chunked bodies announce none), counted as they come
        try:
            while True:
                try:
                    chunk = await request.content.readany()
                except web.RequestPayloadError as e:  # the client's bytes are not a valid body (chunking, encoding)
                    raise ClientError(f"the request body could not be read: {e}", code="bad_body", close=True) from None
                if not chunk:
                    return bytes(buffer)
                buffer += chunk
                if len(buffer) > self.max_bytes:
                    raise self.too_large()
                grown = max(0, len(buffer) - announced) - extra
                if grown > 0:
                    if self.pending + grown > self.max_pending:
                        raise self._busy()
                    self.pending += grown
                    extra += grown
        finally:
            self.pending -= extra

    def _busy(self) -> ClientError:
        return ClientError(
            "the proxy is receiving too many request bodies at once; retry in a moment",
            code="server_busy",
            status=503,
            close=True,
            retry_after=1,
        )


BODY_LIMITS = web.AppKey("body_limits", BodyLimits)


async def read_body(request: web.Request) -> bytes:
    """The body of ``request`` under its app's :class:`BodyLimits`."""
    return await request.app[BODY_LIMITS].read(request)
