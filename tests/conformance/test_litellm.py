"""LiteLLM as a client of ``polyroute serve``: ``litellm.completion`` / ``acompletion`` (plain, streamed, tools)
and ``litellm.embedding`` with ``model="openai/<alias>"``, ``api_base=`` the proxy and its key, nothing else set.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest

from tests.conformance.clients import ECHO, TEXTS, TOOLS, USER, VECTORS, Proxy, close_to
from tests.conformance.upstream import ConformanceUpstream

# LiteLLM fetches its model price map from the internet when imported unless told to use its bundled copy.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
litellm = pytest.importorskip("litellm", reason="pip install -e '.[test]' installs litellm")

# litellm.completion() imports LiteLLM's GitHub Copilot module on every call path; pydantic TypeAdapters of
# its TypedDicts with ReadOnly items (_DeviceCode, _AccessTokenPoll, _CopilotUserPayload, ...) make pydantic warn
# that it will not protect them. Not ours to fix, and nothing to do with the proxy: only that warning is ignored.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .+ on TypedDict class '\w+' (is|are) using the `ReadOnly` qualifier:UserWarning"
)


@pytest.fixture(autouse=True)
def event_loop_for_litellm() -> Iterator[None]:
    """A current event loop for the test, closed afterwards. LiteLLM's sync calls run their service hooks on
    ``asyncio.get_event_loop()``, which makes a loop nobody closes when there is none (after an
    ``asyncio.run``): an unclosed-loop ResourceWarning at exit."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def test_completion(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    response = litellm.completion(model="openai/chat", messages=USER, api_base=proxy.v1, api_key=proxy.key)
    assert response.choices[0].message.content == ECHO
    assert response.usage.total_tokens > 0
    assert upstream.requests[-1].json["model"] == "gpt-4o-mini"  # the alias's deployment served it


def test_completion_stream(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    stream = litellm.completion(model="openai/chat", messages=USER, api_base=proxy.v1, api_key=proxy.key, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO
    assert litellm.stream_chunk_builder(chunks, messages=USER).choices[0].message.content == ECHO


def test_completion_tools(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    response = litellm.completion(model="openai/chat", messages=USER, api_base=proxy.v1, api_key=proxy.key, tools=TOOLS)
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"query": "hello conformance"}


def test_acompletion_stream(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    async def scenario() -> str:
        stream = await litellm.acompletion(
            model="openai/chat", messages=USER, api_base=proxy.v1, api_key=proxy.key, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.get_event_loop().run_until_complete(scenario()) == ECHO


def test_embedding(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    response = litellm.embedding(model="openai/embed", input=TEXTS, api_base=proxy.v1, api_key=proxy.key)
    vectors = [item["embedding"] for item in response.data]
    assert all(close_to(got, want) for got, want in zip(vectors, VECTORS, strict=True))
