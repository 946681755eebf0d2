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
    params = {
        "max_tokens": max_tokens, "max_completion_tokens": max_completion_tokens, "temperature": temperature,
        "top_p": top_p, "stop": stop, "seed": seed, "n": n, "tools": tools, "tool_choice": tool_choice,
        "response_format": response_format, "reasoning_effort": reasoning_effort, "logprobs": logprobs,
        "top_logprobs": top_logprobs, "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty, "logit_bias": logit_bias, "user": user,
        "parallel_tool_calls": parallel_tool_calls,
    }  # fmt: skip
    call = prepare_chat(
        model, messages, stream, params, api_key=api_key, api_base=api_base or base_url, timeout=timeout,
        stream_options=stream_options, functions=functions, function_call=function_call,
        extra_headers=extra_headers, extra_body=extra_body, bill_to=bill_to, registry=registry,
        catalog=catalog, kwargs=kwargs, fn="completion", need_key=mock_response is None,
    )  # fmt: skip
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
    params = {
        "max_tokens": max_tokens, "max_completion_tokens": max_completion_tokens, "temperature": temperature,
        "top_p": top_p, "stop": stop, "seed": seed, "n": n, "tools": tools, "tool_choice": tool_choice,
        "response_format": response_format, "reasoning_effort": reasoning_effort, "logprobs": logprobs,
        "top_logprobs": top_logprobs, "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty, "logit_bias": logit_bias, "user": user,
        "parallel_tool_calls": parallel_tool_calls,
    }  # fmt: skip
    prepare = functools.partial(
        prepare_chat, model, messages, stream, params, api_key=api_key, api_base=api_base or base_url,
        timeout=timeout, stream_options=stream_options, functions=functions, function_call=function_call,
        extra_headers=extra_headers, extra_body=extra_body, bill_to=bill_to, registry=registry,
        catalog=catalog, kwargs=kwargs, fn="acompletion", need_key=mock_response is None,
    )  # fmt: skip
    # Local image files are read and encoded off the event loop.
    call = await asyncio.to_thread(prepare) if has_local_images(messages) else prepare()
    return await arun_chat(call, stream=bool(stream), client=client, budget=budget, mock_response=mock_response)
