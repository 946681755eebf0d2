"""The drop-in functions: ``completion`` and ``acompletion`` (embeddings: :mod:`router.embeddings`).

Same call shape as ``litellm.completion`` for every argument polyroute supports; results are
OpenAI-shaped pydantic models with a ``.meta``. The work is in :mod:`router.chat`.

Example::

    from router import completion
    r = completion(model="huggingface/together/deepseek-ai/DeepSeek-R1",
                   messages=[{"role": "user", "content": "How many r's in strawberry?"}])
    print(r.choices[0].message.content, r.usage.total_tokens, r.meta.provider, r.meta.cost_usd)
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry

from .budget import Budget
from .chat import arun_chat, prepare_chat, run_chat
from .params import has_local_images
from .pricing.catalog import Catalog
from .streaming import AsyncStream, Stream
from .types import ChatCompletion


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
    budget: Budget | None = None,
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
    if _ROUTER_ARGS & kwargs.keys():  # fallbacks= / num_retries=: a one-group router
        args = {k: v for k, v in locals().items() if k not in ("model", "messages", "kwargs") and v is not None}
        router, call_args = _one_group_router(model, args, kwargs)
        return router.completion(model, messages, **call_args)  # type: ignore[no-any-return]
    params = {
        "max_tokens": max_tokens,
        "max_completion_tokens": max_completion_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop": stop,
        "seed": seed,
        "n": n,
        "tools": tools,
        "tool_choice": tool_choice,
        "response_format": response_format,
        "reasoning_effort": reasoning_effort,
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
        "logit_bias": logit_bias,
        "user": user,
        "parallel_tool_calls": parallel_tool_calls,
    }
    call = prepare_chat(
        model,
        messages,
        stream,
        params,
        api_key=api_key,
        api_base=api_base or base_url,
        timeout=timeout,
        stream_options=stream_options,
        functions=functions,
        function_call=function_call,
        extra_headers=extra_headers,
        extra_body=extra_body,
        bill_to=bill_to,
        registry=registry,
        catalog=catalog,
        kwargs=kwargs,
        fn="completion",
        need_key=mock_response is None,
    )
    return run_chat(call, stream=bool(stream), client=client, budget=budget, mock_response=mock_response)


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
    budget: Budget | None = None,
    **kwargs: Any,
) -> ChatCompletion | AsyncStream:
    """Async :func:`completion`; ``stream=True`` returns an :class:`AsyncStream`.

    Example::

        r = await acompletion(model="huggingface/Qwen/Qwen3-8B:cheapest",
                              messages=[{"role": "user", "content": "Hi"}])
    """
    if _ROUTER_ARGS & kwargs.keys():
        args = {k: v for k, v in locals().items() if k not in ("model", "messages", "kwargs") and v is not None}
        router, call_args = _one_group_router(model, args, kwargs)
        return await router.acompletion(model, messages, **call_args)  # type: ignore[no-any-return]
    params = {
        "max_tokens": max_tokens,
        "max_completion_tokens": max_completion_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop": stop,
        "seed": seed,
        "n": n,
        "tools": tools,
        "tool_choice": tool_choice,
        "response_format": response_format,
        "reasoning_effort": reasoning_effort,
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
        "logit_bias": logit_bias,
        "user": user,
        "parallel_tool_calls": parallel_tool_calls,
    }
    prepare = functools.partial(
        prepare_chat,
        model,
        messages,
        stream,
        params,
        api_key=api_key,
        api_base=api_base or base_url,
        timeout=timeout,
        stream_options=stream_options,
        functions=functions,
        function_call=function_call,
        extra_headers=extra_headers,
        extra_body=extra_body,
        bill_to=bill_to,
        registry=registry,
        catalog=catalog,
        kwargs=kwargs,
        fn="acompletion",
        need_key=mock_response is None,
    )
    # Local image files are read and encoded off the event loop.
    call = await asyncio.to_thread(prepare) if has_local_images(messages) else prepare()
    return await arun_chat(call, stream=bool(stream), client=client, budget=budget, mock_response=mock_response)


_ROUTER_ARGS = frozenset({"fallbacks", "num_retries", "context_window_fallbacks", "content_policy_fallbacks"})
_DEPLOYMENT_ARGS = ("api_key", "api_base", "base_url")


def _one_group_router(model: str, args: dict[str, Any], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``completion(model, fallbacks=[...], num_retries=n)`` as a router whose groups are model strings."""
    from .routing.router import Router

    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _ROUTER_ARGS}
    primary = {"model": model, **{k: args.pop(k) for k in _DEPLOYMENT_ARGS if k in args}}
    model_list: list[dict[str, Any]] = [{"model_name": model, "params": primary}]
    groups: dict[str, list[str]] = {}
    for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        names = []
        for item in settings.get(key) or []:
            params = {"model": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else None
            if params is None or not isinstance(params.get("model"), str):
                raise InvalidRequestArgumentError(
                    f"{key} must be a list of model strings or {{'model': ..., 'api_key': ...}} dicts, got {item!r}"
                )
            if params["model"] not in [m["model_name"] for m in model_list]:
                model_list.append({"model_name": params["model"], "params": params})
            names.append(params["model"])
        if names:
            groups[key] = names

    def chain(key: str) -> list[dict[str, list[str]]] | None:
        return [{model: groups[key]}] if key in groups else None

    router = Router(
        model_list,
        num_retries=settings.get("num_retries", 0),
        registry=args.pop("registry", None),
        catalog=args.pop("catalog", None),
        fallbacks=chain("fallbacks"),
        context_window_fallbacks=chain("context_window_fallbacks"),
        content_policy_fallbacks=chain("content_policy_fallbacks"),
    )
    return router, args
