"""completion() / acompletion() against local upstreams over real HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from router import acompletion, completion, errors
from router.types import ChatCompletion
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, OpenAICompatUpstream, Reply, TGIUpstream
from tests.upstreams.openai_format import completion_json

USER = [{"role": "user", "content": "How many r's in strawberry?"}]


def _chat(**kw: object) -> ChatCompletion:
    result = completion(**kw)  # type: ignore[arg-type]
    assert isinstance(result, ChatCompletion)
    return result


# ---------------------------------------------------------------- HF router


def test_hf_pinned_provider_litellm_form(hf: HFRouterUpstream) -> None:
    r = _chat(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER)
    (req,) = hf.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.json["model"] == "deepseek-ai/DeepSeek-R1:together"
    assert req.json["messages"] == USER and "stream" not in req.json
    assert req.headers["authorization"] == "Bearer hf_test_token_123456"
    assert r.choices[0].message.content == "Echo: How many r's in strawberry?"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 6)  # type: ignore[union-attr]
    assert r.meta.provider == "together" and r.meta.model == "deepseek-ai/DeepSeek-R1"
    assert r.meta.api_base == hf.url and r.meta.latency_ms > 0
    assert [(a.status_code, a.error) for a in r.meta.attempts] == [(200, None)]


def test_hf_suffix_forms_and_served_by_header(hf: HFRouterUpstream) -> None:
    _chat(model="huggingface/deepseek-ai/DeepSeek-R1:novita", messages=USER)
    r = _chat(model="huggingface/deepseek-ai/DeepSeek-R1:fastest", messages=USER)
    assert [q.json["model"] for q in hf.requests] == [
        "deepseek-ai/DeepSeek-R1:novita",
        "deepseek-ai/DeepSeek-R1:fastest",
    ]
    # The router says who served a policy call (first live provider in its catalog); meta reports it.
    assert r.meta.provider == "novita"


def test_model_dump_is_openai_json(hf: HFRouterUpstream) -> None:
    r = _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    dumped = r.model_dump()
    parsed = openai.types.chat.ChatCompletion.model_validate(dumped)
    sdk = parsed.model_dump()
    # Same fields and values as the OpenAI SDK's model; fields only the SDK declares are unset (None).
    assert {k: sdk[k] for k in dumped} == dumped
    assert all(sdk[k] is None for k in set(sdk) - set(dumped))
    assert dumped["object"] == "chat.completion" and dumped["id"].startswith("chatcmpl-")
    assert set(dumped) >= {"id", "choices", "created", "model", "object", "usage"}
    assert "_meta" not in dumped and "meta" not in dumped


def test_token_precedence_and_explicit_key(hf: HFRouterUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGFACE_API_KEY", "hf_third")
    monkeypatch.setenv("HUGGINGFACE_HUB_TOKEN", "hf_first")
    _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    monkeypatch.delenv("HUGGINGFACE_HUB_TOKEN")
    _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    monkeypatch.delenv("HF_TOKEN")
    _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER, api_key="hf_explicit")
    assert [q.token for q in hf.requests] == ["hf_first", "hf_test_token_123456", "hf_third", "hf_explicit"]


def test_missing_key_fails_before_any_request(hf: HFRouterUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(errors.MissingCredentialsError) as info:
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    for var in ("HUGGINGFACE_HUB_TOKEN", "HF_TOKEN", "HUGGINGFACE_API_KEY", "api_key"):
        assert var in str(info.value)
    assert hf.requests == []


def test_bill_to_and_extra_headers(hf: HFRouterUpstream) -> None:
    _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER, bill_to="my-org", extra_headers={"X-Trace": "t1"})
    assert hf.requests[0].headers["x-hf-bill-to"] == "my-org"
    assert hf.requests[0].headers["x-trace"] == "t1"
    with pytest.raises(errors.InvalidRequestArgumentError, match="Hugging Face calls only"):
        completion(model="deepinfra/a/b", messages=USER, bill_to="my-org", api_key="k")


class Answer(BaseModel):
    count: int


def test_every_openai_parameter_reaches_the_upstream(hf: HFRouterUpstream, tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n0000")
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": str(image)}}],
        }
    ]
    _chat(
        model="huggingface/Qwen/Qwen3-8B",
        messages=messages,
        max_tokens=50,
        temperature=0.3,
        top_p=0.9,
        stop=["END"],
        seed=11,
        n=1,
        tools=tools,
        tool_choice="none",
        response_format=Answer,
        reasoning_effort="low",
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        user="u1",
        parallel_tool_calls=False,
        extra_body={"top_k": 20},
    )
    body = hf.requests[0].json
    assert {
        k: body[k]
        for k in (
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "n",
            "tool_choice",
            "reasoning_effort",
            "logprobs",
            "top_logprobs",
            "presence_penalty",
            "frequency_penalty",
            "user",
            "parallel_tool_calls",
            "top_k",
        )
    } == {
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 11,
        "n": 1,
        "tool_choice": "none",
        "reasoning_effort": "low",
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "user": "u1",
        "parallel_tool_calls": False,
        "top_k": 20,
    }
    assert body["tools"] == tools
    assert body["response_format"]["json_schema"]["name"] == "Answer"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_tool_calls_and_legacy_functions(hf: HFRouterUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    r = _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER, tools=tools)
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "lookup" and call.id and r.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"query": "How many r's in strawberry?"}
    legacy = _chat(
        model="huggingface/Qwen/Qwen3-8B",
        messages=USER,
        functions=[{"name": "lookup", "parameters": {"type": "object"}}],
    )
    assert hf.requests[-1].json["tools"][0]["function"]["name"] == "lookup"
    assert legacy.choices[0].message.function_call is not None
    assert legacy.choices[0].message.function_call.name == "lookup"


def test_reasoning_content_is_kept(hf: HFRouterUpstream) -> None:
    hf.reasoning_field = "reasoning"
    r = _chat(model="huggingface/deepseek-ai/DeepSeek-R1", messages=USER)
    assert r.choices[0].message.reasoning_content == "Let me think."  # type: ignore[attr-defined]
    assert r.model_dump()["choices"][0]["message"]["reasoning_content"] == "Let me think."


# ---------------------------------------------------------------- errors over HTTP


@pytest.mark.parametrize(
    ("reply", "cls", "needle"),
    [
        (
            Reply(status=401, json={"error": "Invalid username or password."}),
            errors.AuthenticationError,
            "Invalid username",
        ),
        (
            Reply(
                status=402, json={"error": "You have exceeded your monthly included credits for Inference Providers."}
            ),
            errors.PaymentRequiredError,
            "credits",
        ),
        (
            Reply(status=403, json={"error": "This authentication method does not have sufficient permissions"}),
            errors.PermissionDeniedError,
            "permissions",
        ),
        (Reply(status=404, json={"error": "Model X does not exist"}), errors.NotFoundError, "does not exist"),
        (
            Reply(status=422, text="Failed to deserialize the JSON body into the target type"),
            errors.BadRequestError,
            "deserialize",
        ),
        (
            Reply(status=503, json={"error": "Model X is currently loading", "estimated_time": 20.0}),
            errors.ServiceUnavailableError,
            "loading",
        ),
        (Reply(status=500, text="upstream exploded"), errors.InternalServerError, "exploded"),
    ],
)
def test_http_errors_are_typed(hf: HFRouterUpstream, reply: Reply, cls: type, needle: str) -> None:
    hf.enqueue(reply)
    with pytest.raises(cls) as info:
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, api_key="hf_secret_key_987654")
    err = info.value
    assert needle in err.message and err.status_code == reply.status
    assert err.provider == "huggingface" and err.model == "Qwen/Qwen3-8B"
    assert "hf_secret_key_987654" not in str(err) + repr(err) + str(err.body)
    assert [a.status_code for a in err.attempts] == [reply.status]


def test_unsupported_model_400_and_rate_limit_retry_after(hf: HFRouterUpstream) -> None:
    hf.unknown_models = {"acme/nope"}
    with pytest.raises(errors.BadRequestError, match="not supported by any provider"):
        completion(model="huggingface/acme/nope", messages=USER)
    hf.enqueue(Reply(status=429, json={"error": "rate limited"}, headers={"Retry-After": "3"}))
    with pytest.raises(errors.RateLimitError) as info:
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    assert info.value.retry_after == 3.0
    hf.enqueue(Reply(status=503, json={"error": "Model X is currently loading", "estimated_time": 20.0}))
    with pytest.raises(errors.ServiceUnavailableError) as loading:
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    assert loading.value.retry_after == 20.0


def test_real_401_from_router(hf: HFRouterUpstream) -> None:
    hf.valid_tokens = {"hf_good"}
    with pytest.raises(errors.AuthenticationError, match="Invalid username or password"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, api_key="hf_bad_but_long_enough")


def test_200_that_is_not_a_completion(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(json={"unexpected": True}))
    with pytest.raises(errors.UnprocessableResponseError, match="no 'choices'"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER)
    hf.enqueue(Reply(text="<html>gateway</html>"))
    with pytest.raises(errors.UnprocessableResponseError, match="expected a JSON"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER)


def test_timeout_and_connection_refused(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(json={}, delay=1.5))
    with pytest.raises(errors.APITimeoutError):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, timeout=0.3)
    with pytest.raises(errors.APIConnectionError) as info:
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, api_base="http://127.0.0.1:9")
    assert not isinstance(info.value, errors.APITimeoutError)
    assert info.value.provider == "huggingface"


# ---------------------------------------------------------------- DeepInfra, TGI, OpenAI-compatible


def test_deepinfra_keeps_estimated_cost(deepinfra: DeepInfraUpstream) -> None:
    r = _chat(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct", messages=USER)
    req = deepinfra.requests[0]
    assert req.path == "/v1/openai/chat/completions" and req.token == "di-test-key-abcdef"
    assert req.json["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert r.meta.provider == "deepinfra"
    assert r.usage is not None and r.usage.estimated_cost > 0  # type: ignore[attr-defined]


def test_deepinfra_missing_key_names_env_var(deepinfra: DeepInfraUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPINFRA_API_KEY")
    with pytest.raises(errors.MissingCredentialsError, match="DEEPINFRA_API_KEY"):
        completion(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct", messages=USER)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_tgi_with_any_base_url_form(tgi: TGIUpstream, suffix: str) -> None:
    r = _chat(model="huggingface/tgi", api_base=tgi.url + suffix, messages=USER)
    (req,) = tgi.requests
    assert req.path == "/v1/chat/completions" and req.json["model"] == "tgi"
    assert r.model == "tgi-org/tgi-model" and r.meta.provider == "tgi"
    assert r.id  # TGI sends "", the result still has an id
    assert "authorization" not in req.headers  # no token set: a local TGI needs none


def test_inference_endpoint_prefix_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with TGIUpstream(prefix="/endpoint-abc") as server:
        monkeypatch.setenv("HF_TOKEN", "hf_endpoint_token")
        r = _chat(model="huggingface/tgi", api_base=server.base_url + "/v1/", messages=USER)
        assert server.requests[0].path == "/endpoint-abc/v1/chat/completions"
        assert server.requests[0].token == "hf_endpoint_token"
        assert r.choices[0].message.content


def test_tgi2_tool_call_arguments_object_becomes_string(tgi2: TGIUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    r = _chat(model="huggingface/tgi", api_base=tgi2.url, messages=USER, tools=tools)
    (call,) = r.choices[0].message.tool_calls or []
    assert isinstance(call.function.arguments, str) and '"query"' in call.function.arguments
    assert call.id and call.id != "0"
    assert r.choices[0].finish_reason == "tool_calls"


def test_tgi_context_window_error(tgi: TGIUpstream) -> None:
    with pytest.raises(errors.ContextWindowExceededError):
        completion(model="huggingface/tgi", api_base=tgi.url, messages=USER, max_tokens=100_000)


def test_openai_compatible_server_needs_no_key_with_api_base(oai: OpenAICompatUpstream) -> None:
    oai.require_auth = False
    try:
        r = _chat(model="openai/my-local-model", api_base=oai.url + "/v1", messages=USER)
    finally:
        oai.require_auth = True
    assert oai.requests[0].json["model"] == "my-local-model" and r.meta.provider == "openai"
    with pytest.raises(errors.AuthenticationError, match="Incorrect API key"):
        completion(model="openai/my-local-model", api_base=oai.url + "/v1", messages=USER)


def test_registered_provider_is_one_entry(oai: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    from router import Registry

    reg = Registry()
    reg.register("acme", oai.url + "/v1", "ACME_API_KEY")
    monkeypatch.setenv("ACME_API_KEY", "acme-key-123456")
    r = _chat(model="acme/acme-large", messages=USER, registry=reg)
    assert oai.requests[0].token == "acme-key-123456" and r.meta.provider == "acme"


# ---------------------------------------------------------------- clients, async, mock


def test_callers_own_httpx_client(hf: HFRouterUpstream) -> None:
    with httpx.Client(headers={"x-mine": "1"}) as client:
        _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER, client=client)
    assert hf.requests[0].headers["x-mine"] == "1"
    with pytest.raises(TypeError, match="acompletion"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, client=httpx.AsyncClient())


def test_acompletion_concurrent_default_pool(hf: HFRouterUpstream) -> None:
    async def main() -> list[ChatCompletion]:
        results = await asyncio.gather(
            *[
                acompletion(model="huggingface/Qwen/Qwen3-8B", messages=[{"role": "user", "content": f"n{i}"}])
                for i in range(50)
            ]
        )
        return [r for r in results if isinstance(r, ChatCompletion)]

    results = asyncio.run(main())
    assert [r.choices[0].message.content for r in results] == [f"Echo: n{i}" for i in range(50)]
    assert len(hf.requests) == 50
    # A second event loop gets its own session (sessions are loop-bound) and works too.
    again = asyncio.run(main())
    assert len(again) == 50


def test_acompletion_with_callers_clients(hf: HFRouterUpstream) -> None:
    import aiohttp

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            r = await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER, client=client)
            assert isinstance(r, ChatCompletion) and r.choices[0].message.content
        async with aiohttp.ClientSession() as session:
            r = await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER, client=session)
            assert isinstance(r, ChatCompletion) and r.choices[0].message.content
        with pytest.raises(TypeError, match=r"sync httpx\.Client"):
            await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER, client=httpx.Client())

    asyncio.run(main())
    assert len(hf.requests) == 2


def test_async_errors_and_timeouts(hf: HFRouterUpstream) -> None:
    async def main() -> None:
        hf.enqueue(Reply(status=429, json={"error": "slow"}, headers={"Retry-After": "2"}))
        with pytest.raises(errors.RateLimitError) as info:
            await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER)
        assert info.value.retry_after == 2.0
        hf.enqueue(Reply(json={}, delay=1.5))
        with pytest.raises(errors.APITimeoutError):
            await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER, timeout=0.3)
        with pytest.raises(errors.APIConnectionError):
            await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER, api_base="http://127.0.0.1:9")

    asyncio.run(main())


def test_mock_response_makes_no_request(hf: HFRouterUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    r = _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER, mock_response="It has three.")
    assert r.choices[0].message.content == "It has three." and r.usage is not None and r.usage.completion_tokens > 0
    with pytest.raises(errors.RateLimitError):
        completion(
            model="huggingface/Qwen/Qwen3-8B",
            messages=USER,
            mock_response=errors.RateLimitError("mocked", status_code=429),
        )
    assert hf.requests == []


def test_unknown_argument_is_a_clear_error(hf: HFRouterUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="extra_body"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, top_k=3)
    # LiteLLM-only knobs that change nothing are accepted
    _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER, drop_params=True)


def test_gzip_encoded_responses_are_decoded(hf: HFRouterUpstream) -> None:
    import gzip

    body = completion_json("zipped", (1, 1), cid="chatcmpl-z", model="Qwen/Qwen3-8B")
    packed = gzip.compress(json.dumps(body).encode())
    hf.enqueue(Reply(body=packed, headers={"Content-Encoding": "gzip"}))
    assert _chat(model="huggingface/Qwen/Qwen3-8B", messages=USER).choices[0].message.content == "zipped"

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            hf.enqueue(Reply(body=packed, headers={"Content-Encoding": "gzip"}))
            r = await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER, client=client)
            assert isinstance(r, ChatCompletion) and r.choices[0].message.content == "zipped"
        hf.enqueue(Reply(body=packed, headers={"Content-Encoding": "gzip"}))
        r = await acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER)
        assert isinstance(r, ChatCompletion) and r.choices[0].message.content == "zipped"

    asyncio.run(main())


def test_key_without_a_known_prefix_never_leaks(oai: OpenAICompatUpstream) -> None:
    key = "di-SECRET-KEY-abcdef"
    kw = {"model": "openai/m", "api_base": oai.url + "/v1", "api_key": key, "messages": USER}
    oai.enqueue(Reply(text=f"<html>bad key {key}</html>"))
    with pytest.raises(errors.UnprocessableResponseError) as html:
        completion(**kw)
    oai.enqueue(Reply(json={"echo": key}))
    with pytest.raises(errors.UnprocessableResponseError) as echoed:
        completion(**kw)
    oai.enqueue(Reply(status=401, json={"error": {"message": f"key {key} revoked"}}))
    with pytest.raises(errors.AuthenticationError) as denied:
        completion(**kw)
    for info in (html, echoed, denied):
        err = info.value
        assert key not in str(err) + repr(err) + json.dumps(err.body, default=str)


def test_request_repr_masks_credentials() -> None:
    from providers.transport import HttpRequest

    text = repr(HttpRequest("POST", "https://x/v1?token=abc", {"authorization": "Bearer di-SECRET"}, b"{}"))
    assert "di-SECRET" not in text and "token=abc" not in text and "[redacted]" in text


def test_env_keys_only_go_to_their_providers_host(oai: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key-123")
    with pytest.raises(errors.AuthenticationError, match="no API key was sent"):
        completion(model="openai/m", api_base=oai.url + "/v1", messages=USER)
    assert "authorization" not in oai.requests[0].headers
    monkeypatch.setenv("OPENAI_API_BASE", oai.url + "/v1")  # the env says where the key belongs
    _chat(model="openai/m", messages=USER)
    assert oai.requests[1].token == "sk-real-openai-key-123"


def test_legacy_function_call_results_and_misuse(hf: HFRouterUpstream) -> None:
    legacy = _chat(
        model="huggingface/Qwen/Qwen3-8B",
        messages=USER,
        functions=[{"name": "lookup", "parameters": {"type": "object"}}],
    )
    assert legacy.choices[0].finish_reason == "function_call"
    with pytest.raises(errors.InvalidRequestArgumentError, match="function_call= needs functions"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, function_call="auto")


@pytest.mark.parametrize("timeout", [0, -1, True, "soon"])
def test_bad_timeouts_are_argument_errors(hf: HFRouterUpstream, timeout: object) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="timeout"):
        completion(model="huggingface/Qwen/Qwen3-8B", messages=USER, timeout=timeout)
    assert hf.requests == []


def test_event_loops_are_not_retained(hf: HFRouterUpstream) -> None:
    import gc

    from providers.clients import default_pool

    for _ in range(5):
        asyncio.run(acompletion(model="huggingface/Qwen/Qwen3-8B", messages=USER))
    gc.collect()
    assert len(default_pool()._async) == 0


def test_async_session_trusts_env_only_when_a_proxy_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.clients import ClientPool

    async def trust() -> bool:
        pool = ClientPool()
        session = pool.async_transport().session
        await pool.aclose()
        return bool(session.trust_env)

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert asyncio.run(trust()) is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert asyncio.run(trust()) is True
