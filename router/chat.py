"""Chat calls: prepare the request, run it (sync or async, with a budget), build the result.

``completion()`` / ``acompletion()`` and the Router go through :func:`prepare_chat` and
:func:`run_chat` / :func:`arun_chat`; only the I/O differs between the two.
"""

from __future__ import annotations

import time
from typing import Any

from providers.clients import async_transport_for, sync_transport_for
from providers.errors import InvalidRequestArgumentError, PolyrouteError
from providers.registry import Registry, default_registry
from providers.spec import Target
from providers.transport import HttpResponse, Timeouts

from . import mock
from .budget import Budget, Reservation, areserve_call, reserve_call
from .call import (
    Call,
    api_key_for,
    attempt,
    check_unknown,
    connection_failed,
    raise_for_status,
    request_headers,
    success_meta,
)
from .params import build_chat_body
from .pricing.catalog import Catalog, PriceLookup, default_catalog
from .streaming import AsyncStream, ChunkNormalizer, Stream
from .tokens import aload_encoding
from .types import ChatCompletion


def prepare_chat(
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
    target: Target | None = None,
) -> Call:
    check_unknown(kwargs, fn)
    if stream not in (True, False, None):
        raise InvalidRequestArgumentError(f"stream must be True or False, got {stream!r}")
    if target is None:  # the Router passes a resolved target (e.g. pinned to one HF provider)
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
    key = api_key_for(target, api_key, api_base) if need_key else None
    headers = request_headers(target, extra_headers, bill_to)
    request = target.adapter.chat_request(target, body, key, headers, bool(stream))
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    return Call(
        target,
        request,
        Timeouts.from_user(timeout),
        (key,) if key else (),
        time.perf_counter(),
        body["messages"],
        include_usage,
        functions is not None,
        catalog or default_catalog(),
        body,
    )


def parse_chat(call: Call, response: HttpResponse) -> dict[str, Any]:
    raise_for_status(call, response)
    return call.target.adapter.parse_chat(call.target, response, call.secrets)


def finish_chat(
    call: Call, response: HttpResponse, data: dict[str, Any] | None = None, lookup: PriceLookup | None = None
) -> ChatCompletion:
    target = call.target
    if data is None:
        data = parse_chat(call, response)
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
    meta = success_meta(
        call,
        response,
        provider=served,
        model=result.model,
        usage=data["usage"],
        usage_estimated=usage_estimated,
        lookup=lookup,
    )
    object.__setattr__(result, "_meta", meta)  # a plain slot (see WithMeta): no pydantic __setattr__
    return result


def _stream_args(call: Call) -> dict[str, Any]:
    return {"started": call.started, "model_string": call.target.model_string, "catalog": call.catalog}


def normalizer(call: Call) -> ChunkNormalizer:
    return ChunkNormalizer(
        call.target,
        include_usage=call.include_usage,
        messages=call.messages,
        secrets=call.secrets,
        answers=call.body.get("n") or 1,
    )


def _served(call: Call, response: HttpResponse) -> str:
    return call.target.adapter.served_by(call.target, response.headers)


def reserve(call: Call, budget: Budget) -> Reservation:
    """Reserve the call's worst case (sync; may load the catalog)."""
    candidates = call.catalog.candidates(call.target)
    return reserve_call(budget, call.target, call.body, call.messages, candidates, call.catalog.prompt_counts)


async def areserve(call: Call, budget: Budget) -> Reservation:
    await aload_encoding()  # counting the prompt: never load the tokenizer on the event loop
    candidates = await call.catalog.acandidates(call.target)
    return await areserve_call(budget, call.target, call.body, call.messages, candidates, call.catalog.prompt_counts)


def run_chat(
    call: Call, *, stream: bool, client: Any = None, budget: Budget | None = None, mock_response: Any = None
) -> ChatCompletion | Stream:
    """Send a prepared chat call and build its result (or its stream)."""
    if mock_response is not None:  # no network, no budget: nothing is spent
        if stream:
            frames = mock.stream(call.target, call.messages, mock_response)
            return Stream(frames, normalizer(call), attempts=[], mock=True, **_stream_args(call))
        mocked = mock.response(call.target, call.messages, mock_response)
        return finish_chat(call, mocked, lookup=call.catalog.lookup_cached(call.target))
    reservation = reserve(call, budget) if budget is not None else None
    answered = False  # the upstream answered 2xx: from then on a failure may still be billed
    try:
        transport = sync_transport_for(client)
        if stream:
            try:
                upstream = transport.open_stream(call.request, call.timeouts)
            except PolyrouteError as err:
                raise connection_failed(call, err) from None
            if upstream.status >= 400:
                content = upstream.read()
                upstream.close()
                raise_for_status(call, HttpResponse(upstream.status, upstream.headers, content))
            return Stream(
                upstream,
                normalizer(call),
                attempts=[attempt(call, upstream.status, None)],
                reservation=reservation,
                **_stream_args(call),
            )
        try:
            response = transport.send(call.request, call.timeouts)
        except PolyrouteError as err:
            raise connection_failed(call, err) from None
        answered = response.status < 400
        result = finish_chat(call, response)
    except BaseException as err:
        if reservation is not None:
            if answered or _response_started(err):
                reservation.settle(None)  # the upstream may bill it: the worst case, in doubt
                _charged(err, reservation.amount)
            else:
                reservation.release()
        raise
    if reservation is not None:
        reservation.settle(result.meta.cost_pico, *_reported(result))
    return result


async def arun_chat(
    call: Call, *, stream: bool, client: Any = None, budget: Budget | None = None, mock_response: Any = None
) -> ChatCompletion | AsyncStream:
    """Async :func:`run_chat`: no blocking work on the event loop."""
    if mock_response is not None:
        if stream:
            frames = mock.stream(call.target, call.messages, mock_response)
            return AsyncStream(frames, normalizer(call), attempts=[], mock=True, **_stream_args(call))
        mocked = mock.response(call.target, call.messages, mock_response)
        return finish_chat(call, mocked, lookup=call.catalog.lookup_cached(call.target))
    reservation = await areserve(call, budget) if budget is not None else None
    answered = False
    try:
        transport = async_transport_for(client)
        if stream:
            try:
                upstream = await transport.open_stream(call.request, call.timeouts)
            except PolyrouteError as err:
                raise connection_failed(call, err) from None
            if upstream.status >= 400:
                content = await upstream.aread()
                await upstream.aclose()
                raise_for_status(call, HttpResponse(upstream.status, upstream.headers, content))
            return AsyncStream(
                upstream,
                normalizer(call),
                attempts=[attempt(call, upstream.status, None)],
                reservation=reservation,
                **_stream_args(call),
            )
        try:
            response = await transport.send(call.request, call.timeouts)
        except PolyrouteError as err:
            raise connection_failed(call, err) from None
        answered = response.status < 400
        data = parse_chat(call, response)
        if not data.get("usage"):
            await aload_encoding()  # usage will be counted locally
        lookup = await call.catalog.alookup(call.target, _served(call, response))
        result = finish_chat(call, response, data, lookup)
    except BaseException as err:
        if reservation is not None:
            if answered or _response_started(err):
                await reservation.asettle(None)  # the upstream may bill it: the worst case, in doubt
                _charged(err, reservation.amount)
            else:
                await reservation.arelease()
        raise
    if reservation is not None:
        await reservation.asettle(result.meta.cost_pico, *_reported(result))
    return result


def _response_started(err: BaseException) -> bool:
    return bool(getattr(err, "response_started", False))


def _charged(err: BaseException, amount: int) -> None:
    """Say on the error (and so on its attempt) what the budget was charged for it; spend records add it."""
    if isinstance(err, PolyrouteError):
        err.charged_pico = amount
        if err.attempts:
            err.attempts[-1].charged_pico = amount


def _reported(result: ChatCompletion) -> tuple[Any, str | None]:
    """The upstream's own usage (None when it sent none: a local count teaches nothing) and who served."""
    meta = result.meta
    return (None if meta.usage_estimated else result.usage), meta.provider
