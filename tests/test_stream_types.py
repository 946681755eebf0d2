"""The shapes the streaming package and result types promise: import paths and OpenAI's field order."""

from __future__ import annotations

import copy
import pickle

import router.streaming as streaming
from router.types import (
    Attempt,
    ChatCompletion,
    ChatCompletionChunk,
    ResponseMeta,
    attach_meta,
    meta_of,
)

FIELD_ORDER = ["id", "choices", "created", "model", "object", "service_tier", "system_fingerprint", "usage"]


def test_router_streaming_keeps_its_public_names() -> None:
    for name in ("AsyncStream", "ChunkNormalizer", "Stream", "StreamCore", "stream_chunk_builder"):
        assert getattr(streaming, name).__name__ == name


def test_completion_and_chunk_dump_in_openais_field_order() -> None:
    chunk = ChatCompletionChunk.model_validate(
        {"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    )
    full = ChatCompletion.model_validate(
        {"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"content": "hi"}}]}
    )
    assert list(chunk.model_dump()) == FIELD_ORDER
    assert list(full.model_dump()) == FIELD_ORDER
    assert chunk.object == "chat.completion.chunk"
    assert full.object == "chat.completion"


def test_a_completions_meta_survives_copy_and_pickle() -> None:
    full = ChatCompletion.model_validate(
        {"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"content": "hi"}}]}
    )
    assert meta_of(full) is None
    meta = ResponseMeta(provider="p", model="m", api_base="http://x", latency_ms=1.0, model_string="p/m")
    meta.attempts.append(Attempt("m", "p", "http://x", 200, None, 1.0))
    attach_meta(full, meta)
    for clone in (copy.copy(full), copy.deepcopy(full), pickle.loads(pickle.dumps(full))):
        assert clone == full
        assert clone.meta == meta


def test_a_tool_call_delta_parses_its_function() -> None:
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": "{}"}}]},
                }
            ],
        }
    )
    calls = chunk.choices[0].delta.tool_calls
    assert calls is not None and calls[0].function is not None
    assert (calls[0].function.name, calls[0].function.arguments) == ("f", "{}")
