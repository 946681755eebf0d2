"""Streams over real HTTP: every family normalized, usage rules, endings, errors, early exit."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from router import acompletion, completion, errors, stream_chunk_builder
from router.streaming import AsyncStream, Stream
from router.types import ChatCompletion
from tests.streams import ALL_CASES, StreamCase, compact
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, OpenAICompatUpstream, Reply, TGIUpstream
from tests.upstreams.openai_format import completion_json

USER = [{"role": "user", "content": "count the letters please"}]
TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}},
]


def _stream(**kw: object) -> Stream:
    s = completion(stream=True, **kw)  # type: ignore[arg-type]
    assert isinstance(s, Stream)
    return s


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_replayed_upstream_streams(case: StreamCase, oai: OpenAICompatUpstream, tgi: TGIUpstream) -> None:
    server = tgi if case.family == "tgi" else oai
    pieces = [case.raw[i : i + 37] for i in range(0, len(case.raw), 37)]  # cut mid-frame on purpose
    server.enqueue(Reply(sse=pieces))
    model = "huggingface/tgi" if case.family == "tgi" else "openai/m"
    api_base = tgi.url if case.family == "tgi" else oai.url + "/v1"
    stream = _stream(
        model=model, api_base=api_base, api_key="sk-test-123456", messages=USER, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert [compact(c) for c in chunks[:-1]] == case.expected
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    if case.usage is not None:
        assert chunks[-1].usage.total_tokens == case.usage["total_tokens"]
    assert stream.usage == chunks[-1].usage
    assert stream.meta.usage_estimated is (case.usage is None)
    body = server.requests[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def _same_answer(streamed: ChatCompletion, plain: ChatCompletion) -> None:
    a, b = streamed.choices[0], plain.choices[0]
    assert a.message.content == b.message.content
    assert a.finish_reason == b.finish_reason
    assert getattr(a.message, "reasoning_content", None) == getattr(b.message, "reasoning_content", None)
    calls_a = [(c.function.name, json.loads(c.function.arguments)) for c in a.message.tool_calls or []]
    calls_b = [(c.function.name, json.loads(c.function.arguments)) for c in b.message.tool_calls or []]
    assert calls_a == calls_b
    assert streamed.usage is not None and plain.usage is not None
    assert (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )


@pytest.mark.parametrize("with_tools", [False, True])
def test_builder_equals_non_streamed_for_every_family(
    hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream, tgi2: TGIUpstream, with_tools: bool
) -> None:
    hf.reasoning_field = "reasoning_content"
    messages = [{"role": "user", "content": "use both tools please" if with_tools else "hello there"}]
    calls = [
        {"model": "huggingface/together/deepseek-ai/DeepSeek-R1"},
        {"model": "deepinfra/meta-llama/Llama-3.3-70B-Instruct"},
        {"model": "huggingface/tgi", "api_base": tgi.url},
        {"model": "huggingface/tgi", "api_base": tgi2.url},
    ]
    for kw in calls:
        extra = {"tools": TOOLS} if with_tools else {}
        plain = completion(messages=messages, **kw, **extra)  # type: ignore[arg-type]
        chunks = list(_stream(messages=messages, stream_options={"include_usage": True}, **kw, **extra))
        assert isinstance(plain, ChatCompletion)
        _same_answer(stream_chunk_builder(chunks), plain)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finishes) == 1, kw
        assert sum(1 for c in chunks if c.usage is not None) == 1


def test_no_usage_chunk_unless_asked_but_stream_usage_is_filled(deepinfra: DeepInfraUpstream) -> None:
    stream = _stream(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct", messages=USER)
    chunks = list(stream)
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert stream.usage is not None and stream.usage.completion_tokens == 5
    assert stream.meta.provider == "deepinfra" and stream.meta.time_to_first_token_ms is not None
    assert deepinfra.requests[0].json["stream_options"] == {"include_usage": True}


def test_http_error_is_raised_by_the_call_not_mid_iteration(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(status=429, json={"error": "busy"}, headers={"Retry-After": "1"}))
    with pytest.raises(errors.RateLimitError) as info:
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, stream=True)
    assert info.value.retry_after == 1.0


def test_error_frame_mid_stream_after_the_chunks(tgi: TGIUpstream) -> None:
    tgi.stream_error_after = 2
    try:
        stream = _stream(model="huggingface/tgi", api_base=tgi.url, messages=USER)
        got = []
        with pytest.raises(errors.BadRequestError) as info:
            for chunk in stream:
                got.append(chunk.choices[0].delta.content)
    finally:
        tgi.stream_error_after = None
    assert len(got) == 2 and info.value.status_code == 422


def test_dropped_connection_is_an_error(oai: OpenAICompatUpstream) -> None:
    oai.enqueue(
        Reply(
            sse=[
                b'data: {"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":'
                b'{"role":"assistant","content":"par"}}]}\n\n'
            ],
            drop_after_sse=True,
        )
    )
    stream = _stream(model="openai/m", api_base=oai.url + "/v1", api_key="sk-1234567", messages=USER)
    first = next(stream)
    assert first.choices[0].delta.content == "par"
    with pytest.raises(errors.APIConnectionError, match="stream ended before completion") as info:
        next(stream)
    assert info.value.provider == "openai" and info.value.model == "m"
    assert [a.error for a in info.value.attempts] == ["APIConnectionError"]


def test_clean_close_without_done_or_finish_is_an_error(oai: OpenAICompatUpstream) -> None:
    oai.enqueue(
        Reply(sse=[b'data: {"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'])
    )
    with pytest.raises(errors.APIConnectionError, match="ended before completion"):
        list(_stream(model="openai/m", api_base=oai.url + "/v1", api_key="sk-1234567", messages=USER))


def _slow(server: HFRouterUpstream) -> dict[str, object]:
    server.stream_delay = 0.05  # between frames: 200 words take ~10 s, far longer than any test waits
    words = " ".join(f"w{i}" for i in range(200))
    return {"model": "huggingface/Qwen/Qwen3-8B", "messages": [{"role": "user", "content": words}]}


def test_break_closes_the_upstream_connection(hf: HFRouterUpstream) -> None:
    stream = _stream(**_slow(hf))
    for _ in stream:
        break
    stream.close()
    assert hf.wait_for_disconnect(5)


def test_context_manager_exit_closes_the_upstream(hf: HFRouterUpstream) -> None:
    with _stream(**_slow(hf)) as stream:
        next(stream)
    assert hf.wait_for_disconnect(5)


def test_garbage_collection_closes_the_upstream(hf: HFRouterUpstream) -> None:
    stream = _stream(**_slow(hf))
    next(stream)
    del stream
    gc.collect()
    assert hf.wait_for_disconnect(5)


def test_async_stream_and_early_exit(hf: HFRouterUpstream) -> None:
    async def main() -> None:
        stream = await acompletion(
            model="huggingface/Qwen/Qwen3-8B", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        assert isinstance(stream, AsyncStream)
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and stream.meta.provider
        assert stream_chunk_builder(chunks).choices[0].message.content == "Echo: count the letters please"

        hf.stream_delay = 0.05
        stream = await acompletion(stream=True, **_slow(hf))  # type: ignore[arg-type]
        assert isinstance(stream, AsyncStream)
        async with stream:
            async for _ in stream:
                break
        assert await asyncio.to_thread(hf.wait_for_disconnect, 5)

    asyncio.run(main())


def test_task_cancellation_closes_the_upstream(hf: HFRouterUpstream) -> None:
    async def consume() -> None:
        stream = await acompletion(stream=True, **_slow(hf))  # type: ignore[arg-type]
        assert isinstance(stream, AsyncStream)
        async for _ in stream:
            pass

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(hf.wait_for_disconnect, 5)

    asyncio.run(main())


def test_mock_stream(hf: HFRouterUpstream) -> None:
    stream = _stream(
        model="huggingface/Qwen/Qwen3-8B",
        messages=USER,
        mock_response="one two three",
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert stream_chunk_builder(chunks).choices[0].message.content == "one two three"
    assert chunks[-1].usage is not None and hf.requests == []


def test_leaving_before_the_first_chunk_closes_the_upstream(hf: HFRouterUpstream) -> None:
    with _stream(**_slow(hf)):
        pass
    assert hf.wait_for_disconnect(5)
    _stream(**_slow(hf)).close()
    assert hf.wait_for_disconnect(5)


def test_unread_streams_never_exhaust_the_pool(hf: HFRouterUpstream) -> None:
    for _ in range(300):  # more than the pool's 256 connections
        _stream(model="huggingface/Qwen/Qwen3-8B", messages=USER).close()
    r = completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, timeout=5)
    assert isinstance(r, ChatCompletion)


def test_async_leaving_before_the_first_chunk(hf: HFRouterUpstream) -> None:
    async def main() -> None:
        stream = await acompletion(stream=True, **_slow(hf))  # type: ignore[arg-type]
        assert isinstance(stream, AsyncStream)
        async with stream:
            pass
        assert await asyncio.to_thread(hf.wait_for_disconnect, 5)

    asyncio.run(main())


def test_json_document_instead_of_a_stream(oai: OpenAICompatUpstream) -> None:
    kw = {"model": "openai/m", "api_base": oai.url + "/v1", "api_key": "sk-1234567", "messages": USER}
    oai.enqueue(Reply(json={"error": "Model is overloaded, please retry"}))
    with pytest.raises(errors.PolyrouteError, match="Model is overloaded"):
        list(_stream(**kw))
    completion_body = completion_json("whole answer", (3, 2))
    oai.enqueue(Reply(json=completion_body))
    stream = _stream(stream_options={"include_usage": True}, **kw)
    chunks = list(stream)
    assert stream_chunk_builder(chunks).choices[0].message.content == "whole answer"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


def test_usage_estimates_agree_everywhere(oai: OpenAICompatUpstream) -> None:
    messages = [{"role": "user", "content": "estimate me"}]
    kw = {"model": "openai/m", "api_base": oai.url + "/v1", "api_key": "sk-1234567", "messages": messages}
    message = {
        "role": "assistant",
        "content": "Sure, here it is.",
        "reasoning_content": "thinking hard",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}],
    }
    oai.enqueue(
        Reply(
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            }
        )
    )
    plain = completion(**kw)
    frames = [
        {"role": "assistant", "reasoning_content": "thinking hard"},
        {"content": "Sure, here it is."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ]
        },
    ]
    sse = [
        f"data: {json.dumps({'id': 'x', 'created': 1, 'model': 'm', 'choices': [{'index': 0, 'delta': d}]})}\n\n"
        for d in frames
    ]
    end = [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    finish = {"id": "x", "created": 1, "model": "m", "choices": end}
    sse += [f"data: {json.dumps(finish)}\n\n", "data: [DONE]\n\n"]
    oai.enqueue(Reply(sse=sse))
    stream = _stream(**kw)
    chunks = list(stream)
    rebuilt = stream_chunk_builder(chunks, messages=messages)
    assert isinstance(plain, ChatCompletion) and plain.meta.usage_estimated and stream.meta.usage_estimated
    assert plain.usage == stream.usage == rebuilt.usage


def test_callers_httpx_async_client_stream_respects_the_total_timeout(hf: HFRouterUpstream) -> None:
    import httpx

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            stream = await acompletion(stream=True, client=client, timeout=0.5, **_slow(hf))  # type: ignore[arg-type]
            assert isinstance(stream, AsyncStream)
            with pytest.raises(errors.APITimeoutError):
                async for _ in stream:
                    pass

    asyncio.run(main())
