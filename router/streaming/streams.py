"""The stream objects callers iterate: :class:`Stream` (sync) and :class:`AsyncStream`.

Only the reading differs between them; decoding, meta, cost and settlement are
:class:`~router.streaming.core.StreamCore`'s. Both close the upstream connection when the caller
leaves early, and settle the budget however the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from providers.errors import PolyrouteError

from ..tokens import encoding_loaded, load_encoding
from .core import C, Normalizer, StreamCore

if TYPE_CHECKING:
    from providers.transport import AsyncStreamResponse, SyncStreamResponse


class Stream(StreamCore[C]):
    """A sync stream of ``ChatCompletionChunk``. Iterate it; ``with`` it or ``close()`` it to leave early.

    Example::

        with completion(model=..., messages=..., stream=True) as stream:
            for chunk in stream:
                print(chunk.choices[0].delta.content or "", end="")
        stream.usage, stream.meta.provider
    """

    def __init__(self, response: SyncStreamResponse, normalizer: Normalizer[C], **kw: Any) -> None:
        super().__init__(normalizer, headers=response.headers, **kw)
        self._response = response
        self._gen = self._iterate()

    def _iterate(self) -> Generator[C, None, None]:
        try:
            raw_iter = self._response.iter_bytes()
            if self._json_body:
                yield from self._from_json_body(b"".join(raw_iter))
            else:
                for raw in raw_iter:
                    yield from self._on_bytes(raw)
                    if not self._read_more():
                        break
                yield from self._on_end()
            self._complete(None)
            if self._norm.done:
                # Read the body's end so the connection goes back to the pool (as the OpenAI SDK does).
                with contextlib.suppress(PolyrouteError):
                    for _ in raw_iter:
                        pass
        except PolyrouteError as err:
            raise self._failed(err) from None
        finally:
            self._response.close()
            self._close_reservation()

    def __iter__(self) -> Iterator[C]:
        return self

    def __next__(self) -> C:
        return next(self._gen)

    def close(self) -> None:
        """Stop reading and close the upstream connection (the upstream sees the client leave)."""
        self._gen.close()
        self._response.close()  # also when iteration never started
        self._close_reservation()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_gen"):
            self.close()


class AsyncStream(StreamCore[C]):
    """An async stream of ``ChatCompletionChunk``; ``async with`` it or ``await aclose()`` to leave early.

    Example::

        stream = await acompletion(model=..., messages=..., stream=True)
        async for chunk in stream:
            ...
    """

    def __init__(self, response: AsyncStreamResponse, normalizer: Normalizer[C], **kw: Any) -> None:
        super().__init__(normalizer, headers=response.headers, **kw)
        self._response = response
        self._agen = self._iterate()
        self._closed = False

    async def _iterate(self) -> AsyncGenerator[C, None]:
        try:
            raw_iter = self._response.aiter_bytes()
            if self._json_body:
                for chunk in self._from_json_body(b"".join([raw async for raw in raw_iter])):
                    yield chunk
            else:
                async for raw in raw_iter:
                    for chunk in self._on_bytes(raw):
                        yield chunk
                    if not self._read_more():
                        break
                if self._norm.usage is None and not encoding_loaded():
                    await asyncio.to_thread(load_encoding)  # counting usage locally: never block the loop
                for chunk in self._on_end():
                    yield chunk
            lookup = None if self._mock else await self._catalog.alookup(self._norm.target, self._served)
            self._complete(None, lookup)
            if self._norm.done:
                # Read the body's end so the connection is reused, but never wait long for it.
                with contextlib.suppress(PolyrouteError, asyncio.TimeoutError):
                    await asyncio.wait_for(_drain(raw_iter), 1.0)
        except PolyrouteError as err:
            raise self._failed(err) from None
        finally:
            self._closed = True
            await self._response.aclose()
            await self._aclose_reservation()

    def __aiter__(self) -> AsyncIterator[C]:
        return self

    async def __anext__(self) -> C:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop reading and close the upstream connection."""
        await self._agen.aclose()
        if not self._closed:  # iteration never started
            self._closed = True
            await self._response.aclose()
            await self._aclose_reservation()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._response.abort()
            self._close_reservation()


async def _drain(raw_iter: AsyncIterator[bytes]) -> None:
    async for _ in raw_iter:
        pass
