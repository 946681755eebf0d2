"""huggingface_hub's ``InferenceClient`` pointed at ``polyroute serve``: ``chat_completion`` (plain and streamed,
with tools) and ``feature_extraction``.

``InferenceClient(base_url=URL).feature_extraction(text)`` POSTs ``{"inputs": text}`` to ``URL`` itself, with no
model in the body (what HF Inference Endpoints and the classic ``/models/<id>`` inference API take), so the
model has to be in the URL: the test uses ``{proxy}/v1/models/<alias>`` for it.
"""

from __future__ import annotations

import json

import pytest

from tests.conformance.clients import ECHO, TEXTS, TOOLS, USER, VECTORS, Proxy, close_to
from tests.conformance.upstream import ConformanceUpstream

huggingface_hub = pytest.importorskip("huggingface_hub")


def test_chat_completion(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    client = huggingface_hub.InferenceClient(base_url=proxy.url, api_key=proxy.key)
    out = client.chat_completion(model="chat", messages=USER)
    assert out.choices[0].message.content == ECHO
    assert out.usage.total_tokens > 0


def test_chat_completion_stream(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    client = huggingface_hub.InferenceClient(base_url=proxy.v1, api_key=proxy.key)
    chunks = list(client.chat_completion(model="chat", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO


def test_chat_completion_tools(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    client = huggingface_hub.InferenceClient(base_url=proxy.url, api_key=proxy.key)
    out = client.chat_completion(model="chat", messages=USER, tools=TOOLS)
    call = out.choices[0].message.tool_calls[0]
    arguments = call.function.arguments
    assert call.function.name == "lookup"
    assert (json.loads(arguments) if isinstance(arguments, str) else arguments) == {"query": "hello conformance"}


def test_async_chat_completion(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    import asyncio

    async def scenario() -> str:
        async with huggingface_hub.AsyncInferenceClient(base_url=proxy.url, api_key=proxy.key) as client:
            out = await client.chat_completion(model="chat", messages=USER)
            return out.choices[0].message.content

    assert asyncio.run(scenario()) == ECHO


def test_feature_extraction(proxy: Proxy, upstream: ConformanceUpstream) -> None:
    client = huggingface_hub.InferenceClient(base_url=f"{proxy.v1}/models/embed", api_key=proxy.key)
    vector = client.feature_extraction(TEXTS[0])
    assert close_to([float(x) for x in vector.reshape(-1)], VECTORS[0])
