"""``mock_response=``: a result without any network call, shaped exactly like a real one.

``mock_response="text"`` gives a completion with that content (usage counted locally);
a dict is used as the whole response body; an exception instance is raised. Streams are produced
as SSE bytes and go through the same normalizer as real streams.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from providers.normalize import new_id
from providers.spec import Target
from providers.transport import HttpResponse

from .tokens import count_messages, count_text

_HEADERS = {"content-type": "application/json", "x-request-id": "mock"}


def _content(mock_response: Any) -> str:
    if isinstance(mock_response, BaseException):
        raise mock_response
    return mock_response if isinstance(mock_response, str) else str(mock_response)


def response(target: Target, messages: list[dict[str, Any]], mock_response: Any) -> HttpResponse:
    if isinstance(mock_response, dict):
        return HttpResponse(200, _HEADERS, orjson.dumps(mock_response))
    content = _content(mock_response)
    prompt, completion = count_messages(messages), count_text(content)
    body = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": target.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return HttpResponse(200, _HEADERS, orjson.dumps(body))


def _sse(target: Target, messages: list[dict[str, Any]], mock_response: Any) -> list[bytes]:
    content = _content(mock_response)
    cid, created = new_id("chatcmpl-"), int(time.time())
    pieces = re.findall(r"\s*\S+|\s+", content) or [""]
    frames = []
    for i, piece in enumerate(pieces):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        last = i == len(pieces) - 1
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": target.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
        }
        frames.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    prompt, completion = count_messages(messages), count_text(content)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    usage_chunk = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": target.model,
        "choices": [],
        "usage": usage,
    }
    frames.append(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


class _MockStream:
    status = 200
    headers = {"content-type": "text/event-stream", "x-request-id": "mock"}

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = frames

    def iter_bytes(self) -> Iterator[bytes]:
        yield from self._frames

    def read(self) -> bytes:
        return b"".join(self._frames)

    def close(self) -> None:
        pass

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for frame in self._frames:
            yield frame

    async def aread(self) -> bytes:
        return self.read()

    async def aclose(self) -> None:
        pass

    def abort(self) -> None:
        pass


def stream(target: Target, messages: list[dict[str, Any]], mock_response: Any) -> _MockStream:
    """A mock stream, readable both as a sync and as an async upstream response."""
    return _MockStream(_sse(target, messages, mock_response))
