"""Chat calls: the chat :class:`~router.pipeline.Task`, preparing a call, and opening streams.

``completion()`` / ``acompletion()`` and the Router go through :func:`prepare_chat` and
:func:`run_chat` / :func:`arun_chat`; a non-streamed call runs the shared pipeline
(:func:`router.pipeline.run`), a streamed one reserves, opens the upstream stream and hands the
reservation to the stream, which settles it when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry
from providers.spec import Target

from . import mock
from .budget import Budget, WorstCase
from .calibration import PromptCounts
from .params import build_chat_body
from .pipeline import (
    Call,
    CallSettings,
    arun,
    arun_stream,
    check_unknown,
    finish,
    parse,
    prepare,
    resolve,
    run,
    run_stream,
    stream_settings,
)
from .pricing.catalog import PriceLookup
from .streaming import AsyncStream, ChunkNormalizer, Stream
from .tokens import long_prompt
from .types import ChatCompletion


class ChatTask:
    """Chat completions on the router's side: a worst case from prompt and output caps, learned
    prompt overheads, local counts for answers without usage, ``ChatCompletion`` results."""

    name = "chat"

    def worst_case(self, call: Call[ChatCompletion], budget: Budget, candidates: list[PriceLookup]) -> WorstCase:
        return budget.worst_case(call.target, call.params, call.inputs, candidates, call.catalog.prompt_counts)

    def prompt_counts(self, call: Call[ChatCompletion]) -> PromptCounts | None:
        return call.catalog.prompt_counts

    def long_input(self, call: Call[ChatCompletion]) -> bool:
        return long_prompt(call.inputs)

    def local_usage(self, call: Call[ChatCompletion], data: dict[str, Any]) -> dict[str, Any]:
        from .tokens import count_completion, count_messages

        prompt = count_messages(call.inputs)
        completion_tokens = sum(count_completion(c.get("message") or {}) for c in data["choices"])
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def result(self, call: Call[ChatCompletion], data: dict[str, Any]) -> ChatCompletion:
        if call.legacy_functions:
            for choice in data["choices"]:
                calls = choice["message"].get("tool_calls")
                if calls:  # legacy callers read message.function_call and finish_reason "function_call"
                    choice["message"]["function_call"] = calls[0]["function"]
                    choice["finish_reason"] = "function_call"
        return ChatCompletion.model_validate(data)


CHAT = ChatTask()


class ChatSettings(CallSettings, total=False):
    """How a chat call is made: the settings of every call, and chat's own options beside the body."""

    stream_options: Any
    functions: Any
    function_call: Any
    extra_body: Any


def prepare_chat(
    model: str,
    messages: Any,
    stream: bool,
    params: Mapping[str, Any],
    settings: ChatSettings,
    *,
    registry: Registry | None = None,
    kwargs: dict[str, Any] | None = None,
    fn: str = "completion",
    target: Target | None = None,
) -> Call[ChatCompletion]:
    """A prepared chat call: arguments checked, the OpenAI body built (``params``: its named parameters,
    read by name; ``settings``: one mapping, as the entry point got it)."""
    stream_options = settings.get("stream_options")
    functions = settings.get("functions")
    check_unknown(kwargs or {}, fn)
    if stream not in (True, False, None):
        raise InvalidRequestArgumentError(f"stream must be True or False, got {stream!r}")
    if target is None:  # the Router passes a resolved target (e.g. pinned to one HF provider)
        target = resolve(model, settings.get("api_base"), registry, settings.get("catalog"))
    body = build_chat_body(
        messages,
        params,
        stream=bool(stream),
        stream_options=stream_options,
        functions=functions,
        function_call=settings.get("function_call"),
        extra_body=settings.get("extra_body"),
    )
    call = prepare(CHAT, target, body.pop("messages"), body, settings, bool(stream))
    call.include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    call.legacy_functions = functions is not None
    return call


def normalizer(call: Call[ChatCompletion]) -> ChunkNormalizer:
    return ChunkNormalizer(
        call.target,
        include_usage=call.include_usage,
        messages=call.inputs,
        secrets=call.secrets,
        answers=call.params.get("n") or 1,
    )


def _mocked(
    call: Call[ChatCompletion], stream: bool, mock_response: Any, stream_type: type[Stream] | type[AsyncStream]
) -> Any:
    """``mock_response=``: no network, no budget (nothing is spent)."""
    if stream:
        frames = mock.stream(call.target, call.inputs, mock_response)
        return stream_type(frames, normalizer(call), mock=True, **stream_settings(call))
    mocked = mock.response(call.target, call.inputs, mock_response)
    return finish(call, mocked, parse(call, mocked), call.catalog.lookup_cached(call.target))


def run_chat(
    call: Call[ChatCompletion],
    *,
    stream: bool,
    client: Any = None,
    budget: Budget | None = None,
    mock_response: Any = None,
) -> ChatCompletion | Stream:
    """Send a prepared chat call and build its result (or its stream)."""
    if mock_response is not None:
        return _mocked(call, stream, mock_response, Stream)  # type: ignore[no-any-return]
    if not stream:
        return run(call, client, budget)
    return run_stream(call, normalizer(call), client, budget)


async def arun_chat(
    call: Call[ChatCompletion],
    *,
    stream: bool,
    client: Any = None,
    budget: Budget | None = None,
    mock_response: Any = None,
) -> ChatCompletion | AsyncStream:
    """Async :func:`run_chat`: no blocking work on the event loop."""
    if mock_response is not None:
        return _mocked(call, stream, mock_response, AsyncStream)  # type: ignore[no-any-return]
    if not stream:
        return await arun(call, client, budget)
    return await arun_stream(call, normalizer(call), client, budget)
