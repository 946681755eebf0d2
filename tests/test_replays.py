"""Replays of real upstream traffic, served byte-for-byte over real HTTP, and what callers must get.

Each ``tests/replays/*.replay`` file is one recorded response: a JSON header (what the caller asked,
the response's status, headers and route, what the caller must get, where the shape comes from), a
separator line, then the body exactly as the upstream sent it. A local FakeUpstream serves the body
one SSE event per write (as upstreams flush), and the call goes through ``completion()`` /
``acompletion()`` like a user's. Add a file to add a case; the header's ``expect`` says the outcome:
``error`` (class, status, message fragment, and the chunks that must arrive first) or the answer
(content, finish reason, and the upstream's usage — ``null`` when it sent none and usage is counted).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router import acompletion, completion, errors
from router.pricing import Catalog
from router.streaming import AsyncStream, Stream
from router.types import ChatCompletion, ChatCompletionChunk
from tests.upstreams import Reply
from tests.upstreams.base import FakeUpstream

REPLAYS = Path(__file__).parent / "replays"
SEPARATOR = b"\n--- upstream bytes (served byte-for-byte) ---\n"
KEY = "sk-replay-test-key-0123456789"
PRICE_IN, PRICE_OUT = 1, 2  # USD per million tokens, set for every replayed model


@dataclass(frozen=True)
class ReplayCase:
    name: str
    header: dict[str, Any]
    body: bytes

    @property
    def call(self) -> dict[str, Any]:
        return self.header["call"]  # type: ignore[no-any-return]

    @property
    def response(self) -> dict[str, Any]:
        return self.header["response"]  # type: ignore[no-any-return]

    @property
    def expect(self) -> dict[str, Any]:
        return self.header["expect"]  # type: ignore[no-any-return]

    @property
    def stream(self) -> bool:
        return bool(self.call["stream"])


def load(path: Path) -> ReplayCase:
    raw = path.read_bytes()
    head, sep, body = raw.partition(SEPARATOR)
    assert sep, f"{path.name}: no separator line {SEPARATOR!r} between the JSON header and the upstream bytes"
    header = json.loads(head)
    for key in ("about", "source", "call", "response", "expect"):
        assert key in header, f"{path.name}: the header needs {key!r}"
    return ReplayCase(path.stem, header, body)


CASES = [load(p) for p in sorted(REPLAYS.glob("*.replay"))]
STREAMED = [c for c in CASES if c.stream]


def events(body: bytes) -> list[bytes]:
    """The body cut after each event's blank line: one write per event, byte-for-byte overall."""
    pieces, start = [], 0
    while (end := body.find(b"\n\n", start)) != -1:
        pieces.append(body[start : end + 2])
        start = end + 2
    if start < len(body):
        pieces.append(body[start:])
    return pieces


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """A bare upstream: it serves only the scripted replies, on whatever route the call uses."""
    with FakeUpstream() as server:
        yield server


def serve(server: FakeUpstream, case: ReplayCase, *, whole: bool = False) -> dict[str, Any]:
    """Queue the replay and return the call's arguments (model, api_base, messages, params, catalog)."""
    server.reset()
    response = case.response
    headers = dict(response["headers"])
    if case.stream:
        pieces = [case.body] if whole else events(case.body)
        reply = Reply(status=response["status"], headers=headers, sse=pieces)
    else:
        reply = Reply(status=response["status"], headers=headers, body=case.body)
    server.enqueue(reply)
    model = case.call["model"]
    catalog = Catalog(cache_dir=False)
    catalog.set_price(model, input_per_million=PRICE_IN, output_per_million=PRICE_OUT)
    args: dict[str, Any] = {
        "model": model,
        "api_base": server.url + case.call["api_base"],
        "api_key": KEY,
        "messages": case.call["messages"],
        "catalog": catalog,
        **case.call.get("params", {}),
    }
    if case.stream:
        args["stream_options"] = {"include_usage": True}
    return args


def check_request(server: FakeUpstream, case: ReplayCase) -> None:
    (request,) = server.requests
    assert request.path == case.response["route"]
    assert request.json.get("stream", False) is case.stream


def expected_cost(usage: dict[str, int]) -> Decimal:
    return (Decimal(usage["prompt_tokens"]) * PRICE_IN + Decimal(usage["completion_tokens"]) * PRICE_OUT) / 10**6


def check_error(err: errors.PolyrouteError, case: ReplayCase) -> None:
    want = case.expect["error"]
    assert type(err).__name__ == want["class"], repr(err)
    assert err.status_code == want["status"]
    assert want["message"] in err.message
    assert KEY not in str(err) and KEY not in repr(err)


def check_chunks(chunks: list[ChatCompletionChunk], case: ReplayCase) -> None:
    """The answer streamed: one choice (index 0), the full text, one finish reason, one usage chunk."""
    expect = case.expect
    assert {choice.index for c in chunks for choice in c.choices} == {0}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expect["content"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expect["finish_reason"]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].choices == []


def check_usage(usage: Any, meta: Any, case: ReplayCase) -> None:
    """Usage is the upstream's when it sent one (and the call is priced from it), else counted locally."""
    want = case.expect["usage"]
    assert usage is not None
    if want is None:
        assert meta.usage_estimated is True and meta.cost_estimated is True
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    else:
        got = {k: getattr(usage, k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        assert got == want
        assert meta.usage_estimated is False and meta.cost_estimated is False
    got_usage = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
    assert Decimal(meta.cost_pico) / 10**12 == expected_cost(got_usage)
    assert meta.price_source == "config"


# ----------------------------------------------------------------------------------------------- sync
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_replay(case: ReplayCase, upstream: FakeUpstream) -> None:
    args = serve(upstream, case)
    if "error" in case.expect:
        got: list[ChatCompletionChunk] = []
        with pytest.raises(errors.PolyrouteError) as info:
            result = completion(stream=case.stream, **args)
            if isinstance(result, Stream):
                for chunk in result:
                    got.append(chunk)
        check_error(info.value, case)
        check_chunks_before_error(got, case)
    elif case.stream:
        stream = completion(stream=True, **args)
        assert isinstance(stream, Stream)
        chunks = list(stream)
        check_chunks(chunks, case)
        check_usage(stream.usage, stream.meta, case)
        assert chunks[-1].usage == stream.usage
    else:
        result = completion(**args)
        assert isinstance(result, ChatCompletion)
        check_answer(result, case)
    check_request(upstream, case)


def check_chunks_before_error(got: list[ChatCompletionChunk], case: ReplayCase) -> None:
    """Chunks that arrived before an error frame reach the caller first, then the error."""
    expect = case.expect
    assert len(got) == expect.get("chunks_before_error", 0)
    if "reasoning_before_error" in expect:
        reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in got)
        assert reasoning == expect["reasoning_before_error"]


def check_answer(result: ChatCompletion, case: ReplayCase) -> None:
    assert len(result.choices) == 1
    assert result.choices[0].message.content == case.expect["content"]
    assert result.choices[0].finish_reason == case.expect["finish_reason"]
    check_usage(result.usage, result.meta, case)


# ---------------------------------------------------------------------------------------------- async
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_replay_async(case: ReplayCase, upstream: FakeUpstream) -> None:
    args = serve(upstream, case)

    async def main() -> None:
        if "error" in case.expect:
            got: list[ChatCompletionChunk] = []
            with pytest.raises(errors.PolyrouteError) as info:
                result = await acompletion(stream=case.stream, **args)
                if isinstance(result, AsyncStream):
                    async for chunk in result:
                        got.append(chunk)
            check_error(info.value, case)
            check_chunks_before_error(got, case)
        elif case.stream:
            stream = await acompletion(stream=True, **args)
            assert isinstance(stream, AsyncStream)
            chunks = [c async for c in stream]
            check_chunks(chunks, case)
            check_usage(stream.usage, stream.meta, case)
        else:
            result = await acompletion(**args)
            assert isinstance(result, ChatCompletion)
            check_answer(result, case)

    asyncio.run(main())
    check_request(upstream, case)


# ------------------------------------------------------------------- the same bytes in one read each
@pytest.mark.parametrize("case", STREAMED, ids=lambda c: c.name)
def test_replay_read_whole(case: ReplayCase, upstream: FakeUpstream) -> None:
    """The whole body in one write (a proxy that buffers): the same outcome, error frames included."""
    args = serve(upstream, case, whole=True)
    stream = completion(stream=True, **args)
    assert isinstance(stream, Stream)
    got: list[ChatCompletionChunk] = []
    if "error" in case.expect:
        with pytest.raises(errors.PolyrouteError) as info:
            for chunk in stream:
                got.append(chunk)
        check_error(info.value, case)
        check_chunks_before_error(got, case)
    else:
        check_chunks(list(stream), case)
        check_usage(stream.usage, stream.meta, case)


# ------------------------------------------------------------------------ error frames, edge cases
def _stream_of(upstream: FakeUpstream, frames: list[bytes]) -> Any:
    """A streamed call of openai/m whose upstream sends these frames."""
    upstream.reset()
    upstream.enqueue(Reply(sse=frames))
    return completion(
        model="openai/m",
        api_base=upstream.url + "/v1",
        api_key=KEY,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )


def _error_frames(upstream: FakeUpstream, frames: list[bytes]) -> errors.PolyrouteError:
    stream = _stream_of(upstream, frames)
    with pytest.raises(errors.PolyrouteError) as info:
        list(stream)
    return info.value


CHUNK = b'data: {"id":"c1","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'


@pytest.mark.parametrize(
    ("frame", "cls", "status", "message"),
    [
        (
            b'event: error\ndata: {"message": "slow down", "status_code": 429}\n\n',
            errors.RateLimitError,
            429,
            "slow down",
        ),
        (b"event: error\ndata: upstream worker crashed\n\n", errors.InternalServerError, 500, "worker crashed"),
        (b"event: error\ndata:\n\n", errors.InternalServerError, 500, "empty error event"),
        (
            b'data: {"error": "model overloaded", "status_code": 503}\n\n',
            errors.ServiceUnavailableError,
            503,
            "overloaded",
        ),
    ],
    ids=["status-beside-message", "plain-text", "empty", "string-error-with-status"],
)
def test_error_frame_shapes_raise_their_own_error(
    upstream: FakeUpstream, frame: bytes, cls: type[errors.PolyrouteError], status: int, message: str
) -> None:
    err = _error_frames(upstream, [CHUNK, frame])
    assert type(err) is cls and err.status_code == status and message in err.message


def test_an_event_type_without_data_does_not_mark_the_next_event(upstream: FakeUpstream) -> None:
    """An ``event:`` line whose event has no data is dropped with its type (SSE spec): the answer goes on."""
    done = b'data: {"id":"c1","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    stream = _stream_of(upstream, [b"event: error\n\n", CHUNK, done, b"data: [DONE]\n\n"])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "par"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_an_old_tgi_behind_an_openai_route_is_one_answer(upstream: FakeUpstream) -> None:
    """TGI 1.4.3's per-token choice indices reached through ``openai/...`` + api_base (not the TGI helper):
    one answer was asked for, so it is one answer, whole, with its finish."""
    (case,) = [c for c in CASES if c.name.startswith("tgi-1.4.3")]
    call = {**case.call, "model": "openai/tgi-1.4", "api_base": "/v1"}
    routed = dataclasses.replace(case, header={**case.header, "call": call})
    stream = completion(stream=True, **serve(upstream, routed))
    assert isinstance(stream, Stream)
    chunks = list(stream)
    check_chunks(chunks, routed)
    check_usage(stream.usage, stream.meta, routed)
