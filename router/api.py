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
from dataclasses import dataclass, field
from typing import Any

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry
from providers.spec import Target

from .budget import Budget
from .chat import arun_chat, prepare_chat, run_chat
from .params import has_local_images
from .pipeline import Call, aresolve
from .pricing.catalog import Catalog
from .streaming import AsyncStream, Stream
from .surface import same_arguments_as
from .types import ChatCompletion


@dataclass(slots=True)
class ChatArgs:
    """One chat call's arguments as :func:`completion` and :func:`acompletion` take them."""

    # Every argument by name, as given: the OpenAI body parameters (max_tokens, tools, ...; read by name
    # when the body is built) and how the call is made (api_key, timeout, budget, ...). Kept as the one
    # dict ``locals()`` made: splitting it per call costs more than the rest of the argument handling.
    given: dict[str, Any]
    routed_by: Any = field(default=None, init=False)  # a one-group Router, for fallbacks= / num_retries=
    routed_args: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def model(self) -> str:
        return self.given["model"]  # type: ignore[no-any-return]

    @property
    def messages(self) -> Any:
        return self.given["messages"]

    @property
    def stream(self) -> bool:
        return bool(self.given["stream"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.given["kwargs"]  # type: ignore[no-any-return]

    def prepare(self, fn: str, target: Target | None = None) -> Call[ChatCompletion]:
        s = self.given
        s["api_base"] = s["api_base"] or s["base_url"]
        s["need_key"] = s["mock_response"] is None
        settings: Any = s  # every ChatSettings key is among the arguments
        return prepare_chat(
            s["model"],
            s["messages"],
            s["stream"],
            s,
            settings,
            registry=s["registry"],
            kwargs=s["kwargs"],
            fn=fn,
            target=target,
        )

    async def resolved(self) -> Target:
        """The model string's target, learning a new gateway sub-provider without blocking the loop."""
        s = self.given
        return await aresolve(s["model"], s["api_base"] or s["base_url"], s["registry"], s["catalog"])

    def sending(self) -> dict[str, Any]:
        """How the prepared call is sent: its client, budget and mock."""
        s = self.given
        return {"client": s["client"], "budget": s["budget"], "mock_response": s["mock_response"]}

    def __post_init__(self) -> None:
        kwargs = self.given["kwargs"]
        if kwargs and _ROUTER_ARGS & kwargs.keys():
            given = {k: v for k, v in self.given.items() if v is not None and k not in _NOT_SETTINGS}
            given["stream"] = self.stream
            self.routed_by, self.routed_args = _one_group_router(self.model, given, kwargs)


def chat_args(
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
) -> ChatArgs:
    """The arguments of :func:`completion` / :func:`acompletion`, written once (LiteLLM's names)."""
    return ChatArgs(locals())


_NOT_SETTINGS = frozenset({"model", "messages", "kwargs"})


@same_arguments_as(chat_args)
def completion(*args: Any, **kwargs: Any) -> ChatCompletion | Stream:
    """Send a chat completion to any supported provider; OpenAI-shaped result.

    Same arguments as ``litellm.completion`` for what polyroute supports, plus ``bill_to`` (HF org to
    bill, sent as ``X-HF-Bill-To``). ``stream=True`` returns a :class:`Stream`.

    Example::

        r = completion(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct",
                       messages=[{"role": "user", "content": "Hi"}], max_tokens=50)
        r.choices[0].message.content, r.meta.latency_ms
    """
    a = chat_args(*args, **kwargs)
    if a.routed_by is not None:  # fallbacks= / num_retries=
        return a.routed_by.completion(a.model, a.messages, **a.routed_args)  # type: ignore[no-any-return]
    return run_chat(a.prepare("completion"), stream=a.stream, **a.sending())


@same_arguments_as(chat_args)
async def acompletion(*args: Any, **kwargs: Any) -> ChatCompletion | AsyncStream:
    """Async :func:`completion`; ``stream=True`` returns an :class:`AsyncStream`.

    Example::

        r = await acompletion(model="huggingface/Qwen/Qwen3-8B:cheapest",
                              messages=[{"role": "user", "content": "Hi"}])
    """
    a = chat_args(*args, **kwargs)
    if a.routed_by is not None:
        return await a.routed_by.acompletion(a.model, a.messages, **a.routed_args)  # type: ignore[no-any-return]
    # Local image files are read and encoded off the event loop.
    local_images = has_local_images(a.messages)
    target = await a.resolved()
    call = (
        await asyncio.to_thread(a.prepare, "acompletion", target) if local_images else a.prepare("acompletion", target)
    )
    return await arun_chat(call, stream=a.stream, **a.sending())


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
