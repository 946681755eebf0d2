"""One correct OpenAI chunk stream from every upstream's SSE variant.

:class:`ChunkNormalizer` (``normalizer``) turns upstream events into ``ChatCompletionChunk``s: role on
the first delta, reasoning as ``reasoning_content``, tool-call deltas with stable index and unique ids,
exactly one finish reason (OpenAI's names), and exactly one usage. :class:`Stream` / :class:`AsyncStream`
(``streams``) drive it over a transport and close the upstream connection when the caller leaves early;
what they share but the I/O — meta, cost, budget settlement — is ``core``'s :class:`StreamCore`.
:func:`stream_chunk_builder` (``rebuild``) joins chunks back into one ``ChatCompletion``.
"""

from __future__ import annotations

from .core import StreamCore
from .normalizer import ChunkNormalizer
from .rebuild import stream_chunk_builder
from .streams import AsyncStream, Stream

__all__ = ["AsyncStream", "ChunkNormalizer", "Stream", "StreamCore", "stream_chunk_builder"]
