"""The stream normalizer on captured-style streams, re-chunked at every kind of byte boundary."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.errors import (
    APIConnectionError,
    BadRequestError,
    InternalServerError,
    PolyrouteError,
    UnprocessableResponseError,
)
from providers.registry import Registry
from providers.spec import Target
from providers.sse import SSEDecoder
from router.streaming import ChunkNormalizer, stream_chunk_builder
from router.types import ChatCompletionChunk
from tests.streams import ALL_CASES, DEEPINFRA, PARALLEL_TOOLS, TGI2_TOOLS, VLLM_NO_USAGE, StreamCase, compact

MESSAGES = [{"role": "user", "content": "say something"}]
_REG = Registry()


def target_for(family: str) -> Target:
    if family == "tgi":
        return _REG.resolve("huggingface/tgi", "http://127.0.0.1:1")
    return _REG.resolve("openai/m", "http://127.0.0.1:1/v1")


def run(
    raw_pieces: list[bytes], family: str, include_usage: bool = True
) -> tuple[list[ChatCompletionChunk], ChunkNormalizer]:
    norm = ChunkNormalizer(target_for(family), include_usage=include_usage, messages=MESSAGES)
    dec = SSEDecoder()
    out: list[ChatCompletionChunk] = []
    for piece in raw_pieces:
        for payload in dec.feed(piece):
            out.extend(norm.feed(payload))
    for payload in dec.flush():
        out.extend(norm.feed(payload))
    out.extend(norm.finish(saw_eof=True))
    return out, norm


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(raw[last:p])
        last = p
    pieces.append(raw[last:])
    return pieces


def check_case(case: StreamCase, chunks: list[ChatCompletionChunk], norm: ChunkNormalizer) -> None:
    body, usage_chunk = chunks[:-1], chunks[-1]
    assert [compact(c) for c in body] == case.expected
    # exactly one finish reason, and exactly one usage: the last chunk, with no choices
    assert sum(1 for c in body if c.choices[0].finish_reason) == 1
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert all(c.usage is None for c in body)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id
    if case.usage is None:
        assert norm.usage_estimated and usage_chunk.usage.completion_tokens > 0
    else:
        got = usage_chunk.usage
        assert {
            "prompt_tokens": got.prompt_tokens,
            "completion_tokens": got.completion_tokens,
            "total_tokens": got.total_tokens,
        } == case.usage
        assert not norm.usage_estimated


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_each_upstream_family_normalizes(case: StreamCase) -> None:
    chunks, norm = run([case.raw], case.family)
    check_case(case, chunks, norm)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_byte_by_byte_is_the_same(case: StreamCase) -> None:
    chunks, norm = run([case.raw[i : i + 1] for i in range(len(case.raw))], case.family)
    check_case(case, chunks, norm)


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(ALL_CASES), cuts=st.lists(st.integers(min_value=0), max_size=25))
def test_any_rechunking_gives_the_same_result(case: StreamCase, cuts: list[int]) -> None:
    chunks, norm = run(split_at(case.raw, cuts), case.family)
    check_case(case, chunks, norm)


@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=1, max_size=40), cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_multibyte_utf8_split_anywhere(text: str, cuts: list[int]) -> None:
    import json

    raw = b"".join(
        [
            b"data: "
            + json.dumps(
                {
                    "id": "x",
                    "created": 1,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                },
                ensure_ascii=False,
            ).encode()
            + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )
    chunks, _ = run(split_at(raw, cuts), "openai", include_usage=False)
    assert chunks[0].choices[0].delta.content == text


def test_usage_chunk_only_when_the_caller_asked() -> None:
    chunks, norm = run([DEEPINFRA.raw], "openai", include_usage=False)
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert norm.final_usage is not None and norm.final_usage.total_tokens == 9


def test_tool_call_ids_are_unique_and_tgi_objects_become_lists() -> None:
    chunks, _ = run([TGI2_TOOLS.raw], "tgi")
    first_call = chunks[0].choices[0].delta.tool_calls
    assert first_call is not None and first_call[0].id and first_call[0].id != "0"
    assert first_call[0].type == "function"
    full = stream_chunk_builder(chunks)
    calls = full.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.arguments == '{"q": "x"}'
    assert full.choices[0].finish_reason == "tool_calls"


def test_repeated_zero_ids_for_new_calls_get_distinct_ids() -> None:
    import json

    def frame(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    raw = b"".join(
        [
            frame(
                {
                    "id": "",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "role": "assistant",
                                "tool_calls": [
                                    {"index": 0, "id": "0", "function": {"name": "a", "arguments": {"x": 1}}},
                                    {"index": 1, "id": "0", "function": {"name": "b", "arguments": {"y": 2}}},
                                ],
                            },
                            "finish_reason": None,
                        }
                    ],
                }
            ),
            frame(
                {"id": "", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            ),
        ]
    )
    chunks, _ = run([raw], "openai")
    full = stream_chunk_builder(chunks)
    calls = full.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["a", "b"]
    assert len({c.id for c in calls}) == 2
    assert [c.function.arguments for c in calls] == ['{"x":1}', '{"y":2}']
    assert full.choices[0].finish_reason == "tool_calls"


def test_stream_chunk_builder_rebuilds_everything() -> None:
    chunks, _ = run([PARALLEL_TOOLS.raw], "openai")
    full = stream_chunk_builder(chunks)
    calls = full.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"tz": "CET"}'),
    ]
    reasoning, _ = run([VLLM_NO_USAGE.raw], "openai")
    rebuilt = stream_chunk_builder(reasoning)
    assert rebuilt.choices[0].message.content == "Done."
    assert rebuilt.choices[0].message.reasoning_content == "Let me think."  # type: ignore[attr-defined]
    assert rebuilt.usage is not None and rebuilt.usage.prompt_tokens > 0


def test_error_frame_raises_after_the_chunks_that_arrived() -> None:
    raw = (
        b'data: {"id":"","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"pa"}}]}\n\n'
        b'data: {"error": {"message": "Input validation error: bad", "http_status_code": 422}}\n\n'
    )
    norm = ChunkNormalizer(target_for("tgi"), include_usage=False, messages=MESSAGES)
    dec = SSEDecoder()
    payloads = dec.feed(raw)
    assert compact(norm.feed(payloads[0])[0]) == ("assistant", "pa", None, None, None)
    with pytest.raises(BadRequestError) as info:
        norm.feed(payloads[1])
    assert info.value.status_code == 422 and "Input validation" in info.value.message


def test_deepinfra_error_frame_and_sse_error_event() -> None:
    norm = ChunkNormalizer(target_for("openai"), include_usage=False, messages=MESSAGES)
    with pytest.raises(BadRequestError, match="too long"):
        norm.feed(b'{"error_type": "validation_error", "error_message": "{\\"detail\\": \\"prompt too long\\"}"}')
    dec = SSEDecoder()
    (payload,) = dec.feed(b'event: error\ndata: {"message": "overloaded"}\n\n')
    with pytest.raises(InternalServerError, match="overloaded") as info:  # no status in the frame: a server error
        ChunkNormalizer(target_for("openai"), include_usage=False, messages=MESSAGES).feed(payload)
    assert info.value.status_code == 500


def test_connection_cut_before_finish_is_an_error_not_a_short_success() -> None:
    raw = b'data: {"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'
    with pytest.raises(APIConnectionError, match="ended before completion"):
        run([raw], "openai")
    with pytest.raises(APIConnectionError):
        run([b""], "openai")


def test_done_without_finish_reason_gets_one() -> None:
    raw = (
        b'data: {"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
    )
    chunks, _ = run([raw], "openai", include_usage=False)
    assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]


@pytest.mark.parametrize("bad", [b"data: {not json}\n\n", b'data: {"id": "a", "choi\n\n', b"data: [1, 2]\n\n"])
def test_malformed_frames_raise_a_typed_error(bad: bytes) -> None:
    with pytest.raises(UnprocessableResponseError):
        run([bad], "openai")


def test_multiline_data_with_crlf_split_at_every_byte() -> None:
    raw = b'data: {"a":\r\ndata: 1}\r\n\r\ndata: [DONE]\r\n\r\n'
    for cut in range(len(raw) + 1):
        dec = SSEDecoder()
        events = dec.feed(raw[:cut]) + dec.feed(raw[cut:]) + dec.flush()
        assert events == [b'{"a":\n1}', b"[DONE]"], cut


def test_chunks_in_the_same_read_as_an_error_frame_are_delivered_first() -> None:
    from router.streaming import Stream

    class OneRead:
        status = 200
        headers = {"content-type": "text/event-stream"}

        def iter_bytes(self) -> Any:
            yield (
                b'data: {"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"part"}}]}\n\n'
                b'data: {"error": {"message": "boom", "http_status_code": 500}}\n\n'
            )

        def read(self) -> bytes:
            return b""

        def close(self) -> None:
            pass

    from router.pricing import Catalog

    stream = Stream(
        OneRead(),
        ChunkNormalizer(target_for("openai"), include_usage=False, messages=MESSAGES),  # type: ignore[arg-type]
        started=0.0,
        model_string="openai/m",
        attempts=[],
        catalog=Catalog(cache_dir=False),
    )
    assert next(stream).choices[0].delta.content == "part"
    with pytest.raises(PolyrouteError, match="boom"):
        next(stream)
