"""The Vercel AI SDK (``ai`` + ``@ai-sdk/openai-compatible``) from Node against ``polyroute serve``: generateText,
streamText, a tool call (plain and streamed), structured output, embed and embedMany.

``node/conformance.mjs`` runs every scenario once (one Node process for the module) and prints JSON; each test
asserts on one scenario. Node and the npm packages (``npm ci`` in ``tests/conformance/node``, done by ``.ci/run``)
are required under POLYROUTE_REQUIRE_SERVICES=1; elsewhere the tests skip, saying what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.conformance.clients import ECHO, NODE_DIR, VECTORS, Proxy, close_to
from tests.services import unavailable


@pytest.fixture(scope="module")
def ai_sdk(proxy: Proxy) -> dict[str, Any]:
    """What each scenario of ``conformance.mjs`` returned (``{"ok", "value"}`` or ``{"ok": False, "error"}``)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node", "not on PATH")
    if not (NODE_DIR / "node_modules" / "@ai-sdk" / "openai-compatible").is_dir():
        unavailable("the AI SDK's npm packages", f"run `npm ci` in {NODE_DIR}")
    env = {**os.environ, "POLYROUTE_PROXY_URL": proxy.v1, "POLYROUTE_API_KEY": proxy.key}
    done = subprocess.run(
        [node, "conformance.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def value(results: dict[str, Any], scenario: str) -> Any:
    result = results[scenario]
    assert result["ok"], result["error"]
    return result["value"]


def test_generate_text(ai_sdk: dict[str, Any]) -> None:
    out = value(ai_sdk, "generateText")
    assert out["text"] == ECHO and out["finishReason"] == "stop" and out["totalTokens"] > 0


def test_stream_text(ai_sdk: dict[str, Any]) -> None:
    out = value(ai_sdk, "streamText")
    assert out["text"] == ECHO and out["parts"] > 1 and out["finishReason"] == "stop"


def test_tool_call(ai_sdk: dict[str, Any]) -> None:
    out = value(ai_sdk, "toolCall")
    assert out["finishReason"] == "tool-calls"
    assert out["toolCalls"] == [{"toolName": "lookup", "input": {"query": "hello conformance"}}]


def test_tool_call_streamed(ai_sdk: dict[str, Any]) -> None:
    assert value(ai_sdk, "toolCallStreamed")["toolCalls"] == [
        {"toolName": "lookup", "input": {"query": "hello conformance"}}
    ]


def test_structured_output(ai_sdk: dict[str, Any]) -> None:
    """Default settings: ``response_format: {"type": "json_object"}``, the schema checked by the SDK."""
    assert value(ai_sdk, "structuredOutput")["output"] == {"echo": "hello conformance"}


def test_structured_output_json_schema(ai_sdk: dict[str, Any]) -> None:
    """``supportsStructuredOutputs: true``: ``response_format`` carries the JSON schema."""
    assert value(ai_sdk, "structuredOutputJsonSchema")["output"] == {"text": "hello conformance", "words": 2}


def test_embed(ai_sdk: dict[str, Any]) -> None:
    assert close_to(value(ai_sdk, "embed")["embedding"], VECTORS[0])


def test_embed_many(ai_sdk: dict[str, Any]) -> None:
    vectors = value(ai_sdk, "embedMany")["embeddings"]
    assert all(close_to(got, want) for got, want in zip(vectors, VECTORS, strict=True))
