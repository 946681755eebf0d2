"""The drop-in functions: ``completion``, ``acompletion``, ``embedding``, ``aembedding``.

Same call shape as ``litellm.completion`` for every argument polyroute supports; results are
OpenAI-shaped pydantic models with a ``.meta``. The sync and async functions share everything but
the I/O: ``_prepare_*`` builds the request, ``_finish_*`` turns the response into a result.

Example::

    from router import completion
    r = completion(model="huggingface/together/deepseek-ai/DeepSeek-R1",
                   messages=[{"role": "user", "content": "How many r's in strawberry?"}])
    print(r.choices[0].message.content, r.usage.total_tokens, r.meta.provider)
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from providers.clients import async_transport_for, sync_transport_for
from providers.errors import (
    InvalidRequestArgumentError,
    MissingCredentialsError,
    PolyrouteError,
    error_from_response,
)
from providers.registry import Registry, default_registry
from providers.spec import Target
from providers.transport import HttpRequest, HttpResponse, Timeouts

from . import mock
from .params import build_chat_body, check_headers, has_local_images
from .pricing.catalog import Catalog, PriceLookup, default_catalog
from .pricing.cost import cost_of
from .streaming import AsyncStream, ChunkNormalizer, Stream
from .tokens import aload_encoding
from .types import Attempt, ChatCompletion, ResponseMeta

# LiteLLM arguments that change nothing here; accepted so code written for LiteLLM keeps working.
_IGNORED_LITELLM_ARGS = frozenset({"drop_params", "metadata", "custom_llm_provider_name", "litellm_logging_obj"})


@dataclass(slots=True)
class _Call:
    target: Target
    request: HttpRequest
    timeouts: Timeouts
    secrets: tuple[str, ...] = field(repr=False)
    started: float
    messages: list[dict[str, Any]]
    include_usage: bool
    legacy_functions: bool
    catalog: Catalog


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


def _api_key(target: Target, api_key: str | None, api_base: str | None) -> str | None:
    """``api_key=``, else the provider's env key; env keys are only sent to their provider's host."""
    if api_key:
        return api_key
    spec = target.spec
    if api_base and spec.adapter == "openai" and _host(api_base) != _host(spec.resolved_base_url()):
        # A per-call api_base on another host (a local vLLM, a proxy): do not hand it OPENAI_API_KEY
        # & co. from the environment; pass api_key= to authenticate there.
        return None
    key = spec.find_api_key(None)
    if key is None and spec.key_required:
        env = " or ".join(spec.key_env) or "an api_key"
        raise MissingCredentialsError(
            f"no API key for {target.provider!r} (model {target.model_string!r}): pass api_key=... or set {env}"
        )
    return key


def _check_unknown(kwargs: dict[str, Any], fn: str) -> None:
    unknown = sorted(k for k in kwargs if k not in _IGNORED_LITELLM_ARGS)
    if unknown:
        raise InvalidRequestArgumentError(
            f"{fn}() got unexpected argument(s) {', '.join(unknown)}; provider-specific body fields go in "
            f"extra_body={{{unknown[0]!r}: ...}}, headers in extra_headers={{...}}"
        )


def _headers(target: Target, extra_headers: Any, bill_to: Any) -> dict[str, str]:
    headers = check_headers(extra_headers)
    if bill_to is not None:
        if not isinstance(bill_to, str) or not bill_to:
            raise InvalidRequestArgumentError("bill_to must be the name of an HF organization, e.g. bill_to='my-org'")
        if target.provider not in ("huggingface", "tgi"):
            raise InvalidRequestArgumentError(
                f"bill_to applies to Hugging Face calls only, not {target.provider!r} ({target.model_string!r})"
            )
        headers["x-hf-bill-to"] = bill_to
    return headers


def _prepare_chat(
    model: str,
    messages: Any,
    stream: bool,
    params: dict[str, Any],
    *,
    api_key: str | None,
    api_base: str | None,
    timeout: Any,
    stream_options: Any,
    functions: Any,
    function_call: Any,
    extra_headers: Any,
    extra_body: Any,
    bill_to: Any,
    registry: Registry | None,
    catalog: Catalog | None,
    kwargs: dict[str, Any],
    fn: str,
    need_key: bool = True,
) -> _Call:
    _check_unknown(kwargs, fn)
    if stream not in (True, False, None):
        raise InvalidRequestArgumentError(f"stream must be True or False, got {stream!r}")
    target = (registry or default_registry()).resolve(model, api_base)
    body = build_chat_body(
        messages,
        params,
        stream=bool(stream),
        stream_options=stream_options,
        functions=functions,
        function_call=function_call,
        extra_body=extra_body,
    )
    key = _api_key(target, api_key, api_base) if need_key else None
    headers = _headers(target, extra_headers, bill_to)
    request = target.adapter.chat_request(target, body, key, headers, bool(stream))
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    return _Call(
        target,
        request,
        Timeouts.from_user(timeout),
        (key,) if key else (),
        time.perf_counter(),
        body["messages"],
        include_usage,
        functions is not None,
        catalog or default_catalog(),
    )


def _attempt(call: _Call, status: int | None, error: str | None) -> Attempt:
    return Attempt(
        model=call.target.model_string,
        provider=call.target.label,
        api_base=call.target.api_base,
        status_code=status,
        error=error,
        latency_ms=(time.perf_counter() - call.started) * 1000,
    )


def _raise_for_status(call: _Call, response: HttpResponse) -> None:
    if response.status < 400:
        return
    err = error_from_response(
        response.status,
        response.headers,
        response.content,
        provider=call.target.label,
        model=call.target.model,
        secrets=call.secrets,
    )
    if response.status == 401 and not call.secrets:
        err.message += " (no API key was sent: environment keys only go to their provider's own host; pass api_key=)"
    err.attempts = [_attempt(call, response.status, type(err).__name__)]  # type: ignore[attr-defined]
    raise err


def _connection_failed(call: _Call, err: PolyrouteError) -> PolyrouteError:
    err.provider = err.provider or call.target.label
    err.model = err.model or call.target.model
    err.attempts = [_attempt(call, None, type(err).__name__)]  # type: ignore[attr-defined]
    return err


def _parse_chat(call: _Call, response: HttpResponse) -> dict[str, Any]:
    _raise_for_status(call, response)
    return call.target.adapter.parse_chat(call.target, response, call.secrets)


def _finish_chat(
    call: _Call, response: HttpResponse, data: dict[str, Any] | None = None, lookup: PriceLookup | None = None
) -> ChatCompletion:
    target = call.target
    if data is None:
        data = _parse_chat(call, response)
    usage_estimated = False
    if not data.get("usage"):
        from .tokens import count_completion, count_messages

        prompt = count_messages(call.messages)
        completion_tokens = sum(count_completion(c.get("message") or {}) for c in data["choices"])
        data["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }
        usage_estimated = True
    if call.legacy_functions:
        for choice in data["choices"]:
            calls = choice["message"].get("tool_calls")
            if calls:  # legacy callers read message.function_call and finish_reason "function_call"
                choice["message"]["function_call"] = calls[0]["function"]
                choice["finish_reason"] = "function_call"
    result = ChatCompletion.model_validate(data)
    served = target.adapter.served_by(target, response.headers)
    if lookup is None:
        lookup = call.catalog.lookup(target, served)
    meta = result._meta = ResponseMeta(
        provider=served,
        model=result.model,
        api_base=target.api_base,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        model_string=target.model_string,
        attempts=[_attempt(call, response.status, None)],
        usage_estimated=usage_estimated,
        upstream_request_id=response.headers.get("x-request-id"),
    )
    meta.set_cost(cost_of(lookup, data["usage"], estimated=usage_estimated))
    return result


def _normalizer(call: _Call) -> ChunkNormalizer:
    return ChunkNormalizer(call.target, include_usage=call.include_usage, messages=call.messages, secrets=call.secrets)


def completion(
    model: str,
    messages: Any = None,
    *,
    stream: bool = False,
    api_key: str | None = None,
    api_base: str | None = None,
    base_url: str | None = None,
    timeout: Any = None,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    n: int | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    functions: list[dict[str, Any]] | None = None,
    function_call: Any = None,
    response_format: Any = None,
    reasoning_effort: str | None = None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    logit_bias: dict[str, float] | None = None,
    user: str | None = None,
    parallel_tool_calls: bool | None = None,
    stream_options: dict[str, Any] | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    mock_response: Any = None,
    client: Any = None,
    bill_to: str | None = None,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    **kwargs: Any,
) -> ChatCompletion | Stream:
    """Send a chat completion to any supported provider; OpenAI-shaped result.

    Same arguments as ``litellm.completion`` for what polyroute supports, plus ``bill_to`` (HF org to
    bill, sent as ``X-HF-Bill-To``). ``stream=True`` returns a :class:`Stream`.

    Example::

        r = completion(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct",
                       messages=[{"role": "user", "content": "Hi"}], max_tokens=50)
        r.choices[0].message.content, r.meta.latency_ms
    """
    params = {
        "max_tokens": max_tokens, "max_completion_tokens": max_completion_tokens, "temperature": temperature,
        "top_p": top_p, "stop": stop, "seed": seed, "n": n, "tools": tools, "tool_choice": tool_choice,
        "response_format": response_format, "reasoning_effort": reasoning_effort, "logprobs": logprobs,
        "top_logprobs": top_logprobs, "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty, "logit_bias": logit_bias, "user": user,
        "parallel_tool_calls": parallel_tool_calls,
    }  # fmt: skip
    call = _prepare_chat(
        model, messages, stream, params, api_key=api_key, api_base=api_base or base_url, timeout=timeout,
        stream_options=stream_options, functions=functions, function_call=function_call,
        extra_headers=extra_headers, extra_body=extra_body, bill_to=bill_to, registry=registry,
        catalog=catalog, kwargs=kwargs, fn="completion", need_key=mock_response is None,
    )  # fmt: skip
    if mock_response is not None:
        if stream:
            return Stream(mock.sync_stream(call.target, call.messages, mock_response), _normalizer(call),
                          started=call.started, model_string=call.target.model_string, attempts=[],
                          catalog=call.catalog, mock=True)  # fmt: skip
        mocked = mock.response(call.target, call.messages, mock_response)
        return _finish_chat(call, mocked, lookup=call.catalog.lookup_cached(call.target))
    transport = sync_transport_for(client)
    if stream:
        try:
            upstream = transport.open_stream(call.request, call.timeouts)
        except PolyrouteError as err:
            raise _connection_failed(call, err) from None
        if upstream.status >= 400:
            content = upstream.read()
            upstream.close()
            _raise_for_status(call, HttpResponse(upstream.status, upstream.headers, content))
        return Stream(upstream, _normalizer(call), started=call.started, model_string=call.target.model_string,
                      attempts=[_attempt(call, upstream.status, None)], catalog=call.catalog)  # fmt: skip
    try:
        response = transport.send(call.request, call.timeouts)
    except PolyrouteError as err:
        raise _connection_failed(call, err) from None
    return _finish_chat(call, response)


async def acompletion(
    model: str,
    messages: Any = None,
    *,
    stream: bool = False,
    api_key: str | None = None,
    api_base: str | None = None,
    base_url: str | None = None,
    timeout: Any = None,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    n: int | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    functions: list[dict[str, Any]] | None = None,
    function_call: Any = None,
    response_format: Any = None,
    reasoning_effort: str | None = None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    logit_bias: dict[str, float] | None = None,
    user: str | None = None,
    parallel_tool_calls: bool | None = None,
    stream_options: dict[str, Any] | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    mock_response: Any = None,
    client: Any = None,
    bill_to: str | None = None,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    **kwargs: Any,
) -> ChatCompletion | AsyncStream:
    """Async :func:`completion`; ``stream=True`` returns an :class:`AsyncStream`.

    Example::

        r = await acompletion(model="huggingface/Qwen/Qwen3-8B:cheapest",
                              messages=[{"role": "user", "content": "Hi"}])
    """
    params = {
        "max_tokens": max_tokens, "max_completion_tokens": max_completion_tokens, "temperature": temperature,
        "top_p": top_p, "stop": stop, "seed": seed, "n": n, "tools": tools, "tool_choice": tool_choice,
        "response_format": response_format, "reasoning_effort": reasoning_effort, "logprobs": logprobs,
        "top_logprobs": top_logprobs, "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty, "logit_bias": logit_bias, "user": user,
        "parallel_tool_calls": parallel_tool_calls,
    }  # fmt: skip
    prepare = functools.partial(
        _prepare_chat, model, messages, stream, params, api_key=api_key, api_base=api_base or base_url,
        timeout=timeout, stream_options=stream_options, functions=functions, function_call=function_call,
        extra_headers=extra_headers, extra_body=extra_body, bill_to=bill_to, registry=registry,
        catalog=catalog, kwargs=kwargs, fn="acompletion", need_key=mock_response is None,
    )  # fmt: skip
    # Local image files are read and encoded off the event loop.
    call = await asyncio.to_thread(prepare) if has_local_images(messages) else prepare()
    if mock_response is not None:
        if stream:
            return AsyncStream(mock.async_stream(call.target, call.messages, mock_response), _normalizer(call),
                               started=call.started, model_string=call.target.model_string, attempts=[],
                               catalog=call.catalog, mock=True)  # fmt: skip
        mocked = mock.response(call.target, call.messages, mock_response)
        return _finish_chat(call, mocked, lookup=call.catalog.lookup_cached(call.target))
    transport = async_transport_for(client)
    if stream:
        try:
            upstream = await transport.open_stream(call.request, call.timeouts)
        except PolyrouteError as err:
            raise _connection_failed(call, err) from None
        if upstream.status >= 400:
            content = await upstream.aread()
            await upstream.aclose()
            _raise_for_status(call, HttpResponse(upstream.status, upstream.headers, content))
        return AsyncStream(upstream, _normalizer(call), started=call.started,
                           model_string=call.target.model_string,
                           attempts=[_attempt(call, upstream.status, None)], catalog=call.catalog)  # fmt: skip
    try:
        response = await transport.send(call.request, call.timeouts)
    except PolyrouteError as err:
        raise _connection_failed(call, err) from None
    data = _parse_chat(call, response)
    if not data.get("usage"):
        await aload_encoding()  # usage will be counted locally
    lookup = await call.catalog.alookup(call.target, call.target.adapter.served_by(call.target, response.headers))
    return _finish_chat(call, response, data, lookup)
