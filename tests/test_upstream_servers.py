"""Self-tests of the local fake upstreams (tests/upstreams), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.served import server_fixture
from tests.upstreams import (
    DeepInfraUpstream,
    FakeUpstream,
    HFRouterUpstream,
    HubUpstream,
    OpenAICompatUpstream,
    Reply,
    TGIUpstream,
    fake_embedding,
)

AUTH = {"authorization": "Bearer test-token"}
ROOT = Path(__file__).resolve().parent.parent


def chat_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "org/model", "messages": [{"role": "user", "content": text}], **extra}


def frames(raw: bytes) -> list[bytes]:
    """The payloads of the ``data:`` events of a raw SSE body."""
    out = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data:"):
            out.append(event[5:].strip())
    return out


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(payload) for payload in frames(raw) if payload != b"[DONE]"]


def streamed_text(raw: bytes, key: str = "content") -> str:
    return "".join(chunk["choices"][0]["delta"].get(key) or "" for chunk in chunks(raw) if chunk.get("choices"))


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


hf = server_fixture("hf", HFRouterUpstream, scope="module")


deepinfra = server_fixture("deepinfra", DeepInfraUpstream, scope="module")


tgi2 = server_fixture("tgi2", TGIUpstream, scope="module", version="2.x")


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    for name in ("hf", "deepinfra", "tgi2"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("server", "path", "body"),
    [
        (HFRouterUpstream(), "/v1/chat/completions", {"error": "Invalid username or password."}),
        (DeepInfraUpstream(), "/v1/openai/chat/completions", {"detail": {"error": "Unauthorized"}}),
        (
            OpenAICompatUpstream(),
            "/v1/chat/completions",
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        ),
    ],
    ids=["hf", "deepinfra", "openai"],
)
def test_missing_token_gets_family_401(server: FakeUpstream, path: str, body: Any, client: httpx.Client) -> None:
    with server:
        response = client.post(server.url + path, json=chat_body())
        assert response.status_code == 401
        assert response.json() == body
        assert response.headers["x-request-id"]
        assert client.post(server.url + path, json=chat_body(), headers={"authorization": "Bearer"}).status_code == 401
        server.valid_tokens = {"good"}
        assert client.post(server.url + path, json=chat_body(), headers=AUTH).status_code == 401
        ok = client.post(server.url + path, json=chat_body(), headers={"authorization": "Bearer good"})
        assert ok.status_code == 200


def test_tgi_auth_is_optional_unless_required(client: httpx.Client) -> None:
    with TGIUpstream() as tgi:
        assert client.post(tgi.url + "/v1/chat/completions", json=chat_body()).status_code == 200
        tgi.require_auth = True
        response = client.get(tgi.url + "/info")
        assert response.status_code == 401
        assert response.json() == {"error": "Authorization header is correct, but the token seems invalid"}
        assert client.get(tgi.url + "/info", headers=AUTH).status_code == 200


# --------------------------------------------------------------------------- default chat


def test_echo_usage_headers_and_recording(hf: HFRouterUpstream, client: httpx.Client) -> None:
    body = chat_body("hello  world", model="deepseek-ai/DeepSeek-R1:cheapest")
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    response = client.post(hf.url + "/v1/chat/completions?x=1&x=2", json=body, headers={**AUTH, "X-Custom": "v"})
    assert response.status_code == 200
    data = response.json()
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "deepseek-ai/DeepSeek-R1"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hello  world"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert response.headers["x-inference-provider"] == "novita"  # first live provider
    assert response.headers["x-request-id"].startswith("Root=1-")
    recorded = hf.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.query == {"x": "2"} and recorded.query_items == [("x", "1"), ("x", "2")]
    assert recorded.headers["x-custom"] == "v" and recorded.headers["authorization"] == "Bearer test-token"
    assert recorded.json == body and json.loads(recorded.body) == body


def test_provider_header_pinned_and_fallback(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/v1/chat/completions"
    pinned = client.post(url, json=chat_body(model="deepseek-ai/DeepSeek-R1:together"), headers=AUTH)
    assert pinned.headers["x-inference-provider"] == "together"
    assert pinned.json()["model"] == "deepseek-ai/DeepSeek-R1"
    other = client.post(url, json=chat_body(model="acme/unlisted"), headers=AUTH)
    assert other.headers["x-inference-provider"] == "together"


def test_list_content_parts_and_max_tokens(hf: HFRouterUpstream, client: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "describe this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "picture please"},
    ]
    body = {"model": "org/m", "messages": [{"role": "user", "content": content}], "max_tokens": 3}
    data = client.post(hf.url + "/v1/chat/completions", json=body, headers=AUTH).json()
    assert data["choices"][0]["message"]["content"] == "Echo: describe this"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    body = chat_body("one two three", max_completion_tokens=2, stream=True)
    raw = client.post(hf.url + "/v1/chat/completions", json=body, headers=AUTH).content
    assert streamed_text(raw) == "Echo: one"
    assert chunks(raw)[-1]["choices"][0]["finish_reason"] == "length"


def test_hf_errors(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/v1/chat/completions"
    hf.unknown_models = {"acme/gone"}
    response = client.post(url, json=chat_body(model="acme/gone:fastest"), headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "The requested model 'acme/gone' is not supported by any provider you have enabled.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_supported",
    }
    response = client.post(url, json=chat_body(model="gpt2"), headers=AUTH)
    assert response.status_code == 404 and response.json() == {"error": "Model gpt2 does not exist"}
    hf.unknown_models = set()


# --------------------------------------------------------------------------- stream framings


def test_hf_stream_usage_chunk_only_with_include_usage(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/v1/chat/completions"
    with client.stream("POST", url, json=chat_body(stream=True), headers=AUTH) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    assert raw.endswith(b"data: [DONE]\n\n") and raw.startswith(b"data: {")
    parsed = chunks(raw)
    assert [c["choices"][0]["delta"].get("content") for c in parsed[:-1]] == ["Echo:", " hello", " world"]
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert parsed[0]["object"] == "chat.completion.chunk"
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in parsed)
    body = chat_body(stream=True, stream_options={"include_usage": True})
    parsed = chunks(client.post(url, json=body, headers=AUTH).content)
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert all("usage" not in c for c in parsed[:-1])


def test_deepinfra_spaced_json_and_usage_on_finish_chunk(deepinfra: DeepInfraUpstream, client: httpx.Client) -> None:
    url = deepinfra.url + "/v1/openai/chat/completions"
    deepinfra.prices = {"org/model": (1.0, 2.0)}
    response = client.post(url, json=chat_body(), headers=AUTH)
    assert b'"object": "chat.completion", ' in response.content
    assert response.json()["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
        "estimated_cost": 8e-06,
    }
    raw = client.post(url, json=chat_body(stream=True), headers=AUTH).content
    assert raw.startswith(b'data: {"id": "chatcmpl-') and raw.endswith(b"data: [DONE]\n\n")
    parsed = chunks(raw)
    assert all(c["usage"] is None for c in parsed[:-1])
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert parsed[-1]["usage"]["estimated_cost"] == pytest.approx(8e-06)
    assert streamed_text(raw) == "Echo: hello world"
    deepinfra.prices = {}


def test_tgi2_framing_no_done_and_eos_token(tgi2: TGIUpstream, client: httpx.Client) -> None:
    raw = client.post(tgi2.url + "/v1/chat/completions", json=chat_body(model="tgi", stream=True)).content
    assert raw.startswith(b"data:{") and b"data: " not in raw and b"[DONE]" not in raw
    parsed = chunks(raw)
    assert {c["object"] for c in parsed} == {"text_completion"}
    assert {c["id"] for c in parsed} == {""} and {c["model"] for c in parsed} == {"tgi-org/tgi-model"}
    assert parsed[-1]["choices"][0]["finish_reason"] == "eos_token"
    assert parsed[-1]["usage"]["total_tokens"] == 5
    assert parsed[0]["system_fingerprint"] == "2.4.1-native"


def test_tgi2_tool_call_quirks(tgi2: TGIUpstream, client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    url = tgi2.url + "/v1/chat/completions"
    data = client.post(url, json=chat_body("find cats", tools=tools)).json()
    call = data["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "0" and call["function"]["arguments"] == {"query": "find cats"}
    assert data["choices"][0]["finish_reason"] == "eos_token"
    parsed = chunks(client.post(url, json=chat_body("find cats", tools=tools, stream=True)).content)
    deltas = [c["choices"][0]["delta"]["tool_calls"] for c in parsed if "tool_calls" in c["choices"][0]["delta"]]
    assert all(isinstance(d, dict) and d["id"] == "0" for d in deltas)
    assert deltas[0]["function"]["name"] == "search" and all(d["function"]["name"] is None for d in deltas[1:])
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"query": "find cats"}


def test_tgi3_routes_prefix_limits_and_stream_error(client: httpx.Client) -> None:
    with TGIUpstream(prefix="/endpoint-abc", model_id="acme/llm") as tgi:
        base = tgi.url + "/endpoint-abc"
        assert tgi.base_url == base
        info = client.get(base + "/info").json()
        assert info["model_id"] == "acme/llm" and info["max_total_tokens"] == 4096 and info["version"] == "3.2.1"
        assert client.get(base + "/health").status_code == 200
        assert client.get(base + "/v1/models").json()["data"][0]["id"] == "acme/llm"
        assert client.get(tgi.url + "/info").status_code == 404
        data = client.post(base + "/v1/chat/completions", json=chat_body(model="tgi")).json()
        assert data["id"] == "" and data["model"] == "acme/llm" and data["system_fingerprint"] == "3.2.1-native"
        too_long = client.post(base + "/v1/chat/completions", json=chat_body(max_tokens=5000))
        assert too_long.status_code == 422
        assert too_long.json() == {
            "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
            "Given: 2 `inputs` tokens and 5000 `max_new_tokens`",
            "error_type": "validation",
        }
        body = chat_body(stream=True, stream_options={"include_usage": True})
        raw = client.post(base + "/v1/chat/completions", json=body).content
        assert raw.endswith(b"data: [DONE]\n\n") and chunks(raw)[-1]["choices"] == []
        tgi.stream_error_after = 1
        raw = client.post(base + "/v1/chat/completions", json=chat_body(stream=True)).content
        parsed = chunks(raw)
        assert streamed_text(raw) == "Echo:" and b"[DONE]" not in raw
        assert parsed[-1] == {
            "error": {
                "message": "Input validation error: simulated failure mid-stream",
                "http_status_code": 422,
            }
        }


def test_openai_usage_modes_and_prefix(client: httpx.Client) -> None:
    with OpenAICompatUpstream(prefix="/openai/v1") as oai:
        url = oai.url + "/openai/v1/chat/completions"
        body = chat_body(stream=True, stream_options={"include_usage": True})
        parsed = chunks(client.post(url, json=body, headers=AUTH).content)
        assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["total_tokens"] == 5
        oai.usage_mode, oai.together_style = "finish", True
        parsed = chunks(client.post(url, json=chat_body(stream=True), headers=AUTH).content)
        assert parsed[-1]["choices"][0]["finish_reason"] == "eos" and parsed[-1]["usage"]["total_tokens"] == 5
        oai.usage_mode, oai.together_style = "cumulative", False
        parsed = chunks(client.post(url, json=chat_body(stream=True), headers=AUTH).content)
        assert [c["usage"]["completion_tokens"] for c in parsed] == [1, 2, 3, 3]
        oai.usage_mode = "none"
        parsed = chunks(client.post(url, json=body, headers=AUTH).content)
        assert all("usage" not in c for c in parsed)
        models = client.get(oai.url + "/openai/v1/models", headers=AUTH).json()
        assert models["object"] == "list" and models["data"][0]["object"] == "model"
        oai.unknown_models = {"gpt-9"}
        missing = client.post(url, json=chat_body(model="gpt-9"), headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_parallel_tool_calls_stream_and_reasoning(client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("search", "lookup")]
    with OpenAICompatUpstream() as oai:
        oai.reasoning_field = "reasoning_content"
        url = oai.url + "/v1/chat/completions"
        data = client.post(url, json=chat_body("do both", tools=tools), headers=AUTH).json()
        message = data["choices"][0]["message"]
        assert message["content"] is None and message["reasoning_content"] == "Let me think."
        assert [c["function"]["name"] for c in message["tool_calls"]] == ["search", "lookup"]
        assert message["tool_calls"][0]["id"].startswith("call_")
        assert json.loads(message["tool_calls"][1]["function"]["arguments"]) == {"query": "do both"}
        assert data["choices"][0]["finish_reason"] == "tool_calls"
        none = client.post(url, json=chat_body("do both", tools=tools, tool_choice="none"), headers=AUTH).json()
        assert none["choices"][0]["message"]["content"] == "Echo: do both"
        raw = client.post(url, json=chat_body("do both", tools=tools, stream=True), headers=AUTH).content
        assert streamed_text(raw, "reasoning_content") == "Let me think."
        calls: dict[int, dict[str, str]] = {}
        fragments = 0
        for chunk in chunks(raw):
            for delta in chunk["choices"][0]["delta"].get("tool_calls", []):
                entry = calls.setdefault(delta["index"], {"arguments": ""})
                if "id" in delta:
                    assert delta["type"] == "function" and delta["function"]["arguments"] == ""
                    entry["name"] = delta["function"]["name"]
                else:
                    fragments += 1
                entry["arguments"] += delta["function"]["arguments"]
        assert [calls[i]["name"] for i in (0, 1)] == ["search", "lookup"] and fragments >= 6
        assert json.loads(calls[1]["arguments"]) == {"query": "do both"}
        assert chunks(raw)[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_fake_chunks(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/v1/chat/completions"
    raw = client.post(url, json=chat_body(stream=True, fake_chunks=1000), headers=AUTH).content
    parsed = chunks(raw)
    assert len(parsed) == 1001 and raw.endswith(b"data: [DONE]\n\n")
    assert {c["choices"][0]["delta"]["content"] for c in parsed[:-1]} == {"tok "}
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    data = client.post(url, json=chat_body(fake_chunks=5), headers=AUTH).json()
    assert data["choices"][0]["message"]["content"] == "tok " * 5 and data["usage"]["completion_tokens"] == 5


# --------------------------------------------------------------------------- scripted replies


def test_scripted_replies_fifo_path_and_headers(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/v1/chat/completions"
    hf.enqueue(
        Reply(status=429, json={"error": "Too many requests"}, headers={"Retry-After": "7"}),
        path="/v1/chat/completions",
    )
    hf.enqueue(Reply(status=422, text="Template error"))
    hf.enqueue(Reply(status=503, json={"error": "Model X is currently loading", "estimated_time": 20.0}, delay=0.05))
    assert client.get(hf.url + "/v1/models").status_code == 422  # the unfiltered reply, in order
    first = client.post(url, json=chat_body(), headers=AUTH)
    assert first.status_code == 429 and first.headers["retry-after"] == "7"
    assert first.json() == {"error": "Too many requests"} and first.headers["content-type"] == "application/json"
    started = time.monotonic()
    loading = client.post(url, json=chat_body())  # scripted replies win even without a token
    assert loading.status_code == 503 and time.monotonic() - started >= 0.05
    assert client.post(url, json=chat_body(), headers=AUTH).status_code == 200
    hf.enqueue(Reply(status=422, text="Failed to deserialize"))
    plain = client.post(url, json=chat_body(), headers=AUTH)
    assert plain.status_code == 422 and plain.text == "Failed to deserialize"
    assert plain.headers["content-type"].startswith("text/plain")
    hf.enqueue(Reply(sse=[": keep-alive\n\n", b'data: {"choices": []}\n\n', "data: [DONE]\n\n"]))
    scripted = client.post(url, json=chat_body(stream=True), headers=AUTH)
    assert scripted.headers["content-type"] == "text/event-stream"
    assert scripted.content == b': keep-alive\n\ndata: {"choices": []}\n\ndata: [DONE]\n\n'


def test_drop_after_sse_breaks_the_body(hf: HFRouterUpstream, client: httpx.Client) -> None:
    hf.enqueue(Reply(sse=['data: {"choices": []}\n\n'], drop_after_sse=True))
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", hf.url + "/v1/chat/completions", json=chat_body(stream=True), headers=AUTH) as response,
    ):
        for piece in response.iter_raw():
            received += piece
    assert received == b'data: {"choices": []}\n\n'
    assert hf.disconnects == 0


def test_disconnect_detection_scripted_and_default(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/v1/chat/completions"
    hf.enqueue(Reply(sse=[f"data: {i}\n\n" for i in range(100)], chunk_delay=0.02))
    with client.stream("POST", url, json=chat_body(stream=True), headers=AUTH) as response:
        next(response.iter_raw())
    assert hf.wait_for_disconnect(timeout=5.0)
    assert hf.disconnects == 1 and hf.streams_started == 1
    hf.stream_delay = 0.02
    with client.stream("POST", url, json=chat_body("a b c d e f g h", stream=True), headers=AUTH) as response:
        next(response.iter_raw())
    assert hf.wait_for_disconnect(timeout=5.0)
    assert hf.disconnects == 2
    hf.stream_delay = 0.0
    client.post(url, json=chat_body(stream=True), headers=AUTH)
    assert not hf.wait_for_disconnect(timeout=0.05)
    hf.reset()
    assert (hf.disconnects, hf.streams_started, hf.requests) == (0, 0, [])


# --------------------------------------------------------------------------- embeddings, hub, catalogs


def test_openai_embeddings_shapes(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, client: httpx.Client) -> None:
    one = client.post(hf.url + "/nebius/v1/embeddings", json={"model": "m-nebius", "input": "hi there"}, headers=AUTH)
    assert one.json() == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": fake_embedding("hi there")}],
        "model": "m-nebius",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    many = client.post(
        deepinfra.url + "/v1/openai/embeddings",
        json={"model": "BAAI/bge", "input": ["a", "b c"]},
        headers=AUTH,
    ).json()
    assert [d["embedding"] for d in many["data"]] == [fake_embedding("a"), fake_embedding("b c")]
    assert many["usage"]["prompt_tokens"] == 3 and "estimated_cost" in many["usage"]
    via_hf = client.post(hf.url + "/deepinfra/v1/openai/embeddings", json={"model": "x", "input": ["a"]}, headers=AUTH)
    assert len(via_hf.json()["data"][0]["embedding"]) == 8


def test_feature_extraction_flat_batched_nested(hf: HFRouterUpstream, client: httpx.Client) -> None:
    url = hf.url + "/hf-inference/models/intfloat/multilingual-e5-large/pipeline/feature-extraction"
    flat = client.post(url, json={"inputs": "hello", "normalize": True, "truncate": True}, headers=AUTH).json()
    assert flat == fake_embedding("hello")
    assert sum(v * v for v in flat) == pytest.approx(1.0)
    batched = client.post(url, json={"inputs": ["a", "b"]}, headers=AUTH).json()
    assert batched == [fake_embedding("a"), fake_embedding("b")]
    hf.nested_models = {"intfloat/multilingual-e5-large"}
    assert client.post(url, json={"inputs": "a"}, headers=AUTH).json() == [fake_embedding("a")]
    assert client.post(url, json={"inputs": ["a"]}, headers=AUTH).json() == [[fake_embedding("a")]]
    hf.nested_models = set()
    bad = client.post(url, json={"text": "a"}, headers=AUTH)
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    assert client.post(url, json={"inputs": "a"}).status_code == 401


def test_hub_mapping(client: httpx.Client) -> None:
    with HubUpstream() as hub:
        url = hub.url + "/api/models/Qwen/Qwen3-Embedding-8B?expand[]=inferenceProviderMapping"
        data = client.get(url, headers=AUTH).json()
        assert data["id"] == "Qwen/Qwen3-Embedding-8B"
        mapping = data["inferenceProviderMapping"]
        assert set(mapping) == {"nebius", "together", "scaleway", "deepinfra"}
        assert mapping["nebius"] == {
            "status": "live",
            "providerId": "Qwen/Qwen3-Embedding-8B-nebius",
            "task": "feature-extraction",
        }
        assert hub.requests[-1].query == {"expand[]": "inferenceProviderMapping"}
        assert hub.requests[-1].headers["authorization"] == "Bearer test-token"
        llama = client.get(
            hub.url + "/api/models/meta-llama/Meta-Llama-3-8B-Instruct?expand[]=inferenceProviderMapping"
        )
        assert llama.json()["inferenceProviderMapping"]["fireworks-ai"]["status"] == "staging"
        missing = client.get(hub.url + "/api/models/nobody/nothing?expand[]=inferenceProviderMapping")
        assert missing.status_code == 404 and missing.json() == {"error": "Repository not found"}


def test_catalogs(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, client: httpx.Client) -> None:
    listing = client.get(hf.url + "/v1/models").json()
    assert listing["object"] == "list"
    by_id = {entry["id"]: entry for entry in listing["data"]}
    assert set(by_id) == {"deepseek-ai/DeepSeek-R1", "Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"}
    r1 = by_id["deepseek-ai/DeepSeek-R1"]["providers"]
    assert [p["provider"] for p in r1] == ["novita", "together", "featherless-ai"]
    assert r1[2] == {"provider": "featherless-ai", "status": "error", "is_model_author": False}
    assert sum("pricing" not in p for p in by_id["Qwen/Qwen3-8B"]["providers"]) == 1
    assert len(by_id["meta-llama/Llama-3.1-8B-Instruct"]["providers"]) == 3
    one = client.get(hf.url + "/v1/models/Qwen/Qwen3-8B")
    assert one.json()["id"] == "Qwen/Qwen3-8B"
    missing = client.get(hf.url + "/v1/models/acme/none")
    assert missing.status_code == 404 and missing.json() == {"error": "Model acme/none does not exist"}
    meta = client.get(deepinfra.url + "/v1/openai/models?filter=with_meta", headers=AUTH).json()["data"]
    gpt = next(m for m in meta if m["id"] == "openai/gpt-oss-120b")
    assert gpt["metadata"]["pricing"] == {
        "input_tokens": 0.05,
        "output_tokens": 0.45,
        "cache_read_tokens": 0.005,
    }
    assert any(m["metadata"] is None for m in meta)
    deepinfra.unknown_models = {"acme/gone"}
    gone = client.post(deepinfra.url + "/v1/openai/chat/completions", json=chat_body(model="acme/gone"), headers=AUTH)
    assert gone.status_code == 404 and gone.json() == {"error": {"message": "The model `acme/gone` does not exist"}}
    deepinfra.unknown_models = set()


def test_start_stop_idempotent_and_url() -> None:
    server = OpenAICompatUpstream()
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    assert server.start() is server and server.url.startswith("http://127.0.0.1:")
    assert server.base_url == server.url + "/v1"
    server.stop()
    server.stop()


# --------------------------------------------------------------------------- CLI


def test_cli_ready_line_and_request(client: httpx.Client) -> None:
    command = [sys.executable, "-m", "tests.upstreams", "--kind", "tgi2", "--port", "0"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("READY http://127.0.0.1:")
            url = line.split(" ", 1)[1]
            raw = client.post(url + "/v1/chat/completions", json=chat_body(stream=True), headers=AUTH).content
            assert raw.startswith(b"data:{") and streamed_text(raw) == "Echo: hello world"
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
