"""Router streams: the chunks read while deciding that a deployment works, then the rest.

Failover is allowed until the first content reaches the caller; the router reads up to that chunk
before returning, so an error before it moves to the next deployment and an error after it
surfaces to the caller as a typed exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from ..streaming import AsyncStream, Stream, StreamCore
from ..streaming.core import C
from ..types import ChatCompletionChunk, CompletionUsage, ResponseMeta, TextCompletion

StreamT = TypeVar("StreamT", bound=StreamCore[Any])


def has_content(chunk: object) -> bool:
    """True when the chunk (chat, or text completion) carries something a caller would show: text,
    reasoning, a tool call, an end."""
    if isinstance(chunk, TextCompletion):
        return any(choice.text or choice.finish_reason for choice in chunk.choices)
    if not isinstance(chunk, ChatCompletionChunk):
        return False
    for choice in chunk.choices:
        delta = choice.delta
        if delta.content or delta.tool_calls or getattr(delta, "reasoning_content", None) or delta.refusal:
            return True
        if choice.finish_reason:
            return True
    return False


class _RoutedStreamBase(Generic[StreamT, C]):
    """A stream with the chunks the router already read put back in front. Calls ``on_end`` once,
    however the stream ends (exhausted, error, close, garbage); exposes the wrapped stream's facts."""

    def __init__(self, stream: StreamT, buffered: list[C], on_end: Callable[[], None] | None = None) -> None:
        self._on_end = on_end
        self._stream = stream
        self._buffered = buffered

    @property
    def usage(self) -> CompletionUsage | None:
        return self._stream.usage

    @property
    def provider(self) -> str:
        """The upstream serving this stream (known before the first chunk)."""
        return self._stream.provider

    @property
    def model(self) -> str:
        return self._stream.model

    @property
    def meta(self) -> ResponseMeta:
        """Filled when the stream ends; ``meta.attempts`` lists every deployment tried."""
        return self._stream.meta

    def partial_usage(self) -> CompletionUsage:
        """Usage so far: the final one when the stream ended, else counted locally."""
        if self._stream.usage is not None:
            return self._stream.usage
        return CompletionUsage.model_validate(self._stream.left_usage())

    def partial_meta(self) -> ResponseMeta:
        """The meta of a stream that did not end normally: provider, model, cost of what arrived."""
        return self._stream.partial_meta()

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def __del__(self) -> None:
        self._ended()


class RoutedStream(_RoutedStreamBase[Stream[C], C]):
    """A :class:`Stream` with the chunks the router already read put back in front."""

    def __iter__(self) -> Iterator[C]:
        return self

    def __next__(self) -> C:
        if self._buffered:
            return self._buffered.pop(0)
        try:
            return next(self._stream)
        except BaseException:
            self._ended()
            raise

    def close(self) -> None:
        self._stream.close()
        self._ended()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncRoutedStream(_RoutedStreamBase[AsyncStream[C], C]):
    """An :class:`AsyncStream` with the chunks the router already read put back in front."""

    def __aiter__(self) -> AsyncIterator[C]:
        return self

    async def __anext__(self) -> C:
        if self._buffered:
            return self._buffered.pop(0)
        try:
            return await self._stream.__anext__()
        except BaseException:
            self._ended()
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()
        self._ended()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
