"""One call pipeline for every task: resolve -> reserve -> request -> send (and poll) -> parse -> meta and
cost -> settle.

What differs per task on the router's side (the worst case a budget reserves, counting usage an
upstream did not send, the result type) is a :class:`Task`; what differs per upstream is a
``providers.tasks`` helper. :func:`run` and :func:`arun` are the same sequence of shared steps; only
the I/O differs between them. The Router, the proxy and both batch engines reach upstreams through
here; a stream (:func:`run_stream` / :func:`arun_stream`) reserves, opens the upstream stream and hands the
reservation to the stream object, which settles it when it ends. See ARCHITECTURE.md ("The request path").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypedDict, TypeVar
from urllib.parse import urlsplit

from providers.clients import async_transport_for, sync_transport_for
from providers.errors import InvalidRequestArgumentError, MissingCredentialsError, PolyrouteError, error_from_response
from providers.hub_mapping import HubMappingCache, default_hub_cache
from providers.learned_names import alearn_from_mapping, learn_from_mapping
from providers.registry import Registry, UnknownSubproviderError, default_registry
from providers.spec import Target
from providers.tasks import Auth, TaskHelper, helper_for
from providers.transport import (
    AsyncStreamResponse,
    AsyncTransport,
    HttpRequest,
    HttpResponse,
    SyncStreamResponse,
    SyncTransport,
    Timeouts,
)

from .budget import Budget, Hold, WorstCase
from .calibration import PromptCounts
from .params import check_headers
from .pricing.catalog import Catalog, PriceLookup, default_catalog
from .pricing.cost import cost_of
from .streaming import AsyncStream, Stream
from .streaming.core import C, Normalizer
from .types import Attempt, ResponseMeta, WithMeta, attach_meta

_IGNORED_LITELLM_ARGS = frozenset({"drop_params", "metadata", "custom_llm_provider_name", "litellm_logging_obj"})


R = TypeVar("R", bound=WithMeta)  # a task's result: an OpenAI-shaped model with a .meta
R_co = TypeVar("R_co", bound=WithMeta, covariant=True)


class Task(Protocol[R_co]):
    """What the pipeline needs to know of a task on the router's side (upstream differences live in
    the ``providers.tasks`` helper)."""

    name: str

    def worst_case(self, call: Call[Any], budget: Budget, candidates: list[PriceLookup]) -> WorstCase:
        """The most the call can cost, for the budget to reserve."""
        ...

    def prompt_counts(self, call: Call[Any]) -> PromptCounts | None:
        """Learned prompt overheads the reservation bounds and settlement teaches (None: not used)."""
        ...

    def long_input(self, call: Call[Any]) -> bool:
        """Counting the inputs takes long enough to do it off the event loop."""
        ...

    def local_usage(self, call: Call[Any], data: dict[str, Any]) -> dict[str, Any]:
        """Usage counted locally, for an answer that carried none."""
        ...

    def result(self, call: Call[Any], data: dict[str, Any]) -> R_co:
        """The typed, OpenAI-shaped result of the parsed answer."""
        ...


@dataclass(slots=True)
class Call(Generic[R]):
    """Everything about one prepared upstream call except the I/O."""

    task: Task[R]
    target: Target
    helper: TaskHelper
    inputs: Any  # chat: the messages; embeddings: the texts
    params: dict[str, Any]  # the other body fields (checked), without model and inputs
    auth: Auth
    timeouts: Timeouts
    catalog: Catalog
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    request: HttpRequest | None = None  # built once the upstream model id is known
    include_usage: bool = False  # chat streams: the caller asked for a usage chunk
    legacy_functions: bool = False  # chat: the caller used functions=, answer in function_call

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.auth.secrets()


# ---------------------------------------------------------------- resolve
def resolve(model: str, api_base: str | None, registry: Registry | None, catalog: Catalog | None) -> Target:
    """The model string's target. A gateway sub-provider the registry does not know yet is looked up in the
    gateway's catalog (which lists every provider), then in the model's Hub mapping, before the model string
    is refused."""
    registry = registry or default_registry()
    try:
        return registry.resolve(model, api_base)
    except UnknownSubproviderError as err:
        (catalog or default_catalog()).learn_names(err, registry)
    try:
        return registry.resolve(model, api_base)
    except UnknownSubproviderError as err:
        learn_from_mapping(err, registry, sync_transport_for(None))
    return registry.resolve(model, api_base)  # still unknown: the error, with "did you mean"


async def aresolve(model: str, api_base: str | None, registry: Registry | None, catalog: Catalog | None) -> Target:
    """Async :func:`resolve`: a catalog or mapping fetch does not block the event loop."""
    registry = registry or default_registry()
    try:
        return registry.resolve(model, api_base)
    except UnknownSubproviderError as err:
        await (catalog or default_catalog()).alearn_names(err, registry)
    try:
        return registry.resolve(model, api_base)
    except UnknownSubproviderError as err:
        await alearn_from_mapping(err, registry, async_transport_for(None))
    return registry.resolve(model, api_base)


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


def api_key_for(target: Target, api_key: str | None, api_base: str | None) -> str | None:
    """``api_key=``, else the provider's env key; env keys are only sent to their provider's host."""
    if api_key:
        return api_key
    spec = target.spec
    if api_base and not spec.key_follows_api_base and _host(api_base) != _host(spec.resolved_base_url()):
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


def check_unknown(kwargs: dict[str, Any], fn: str) -> None:
    if not kwargs:
        return
    unknown = sorted(k for k in kwargs if k not in _IGNORED_LITELLM_ARGS)
    if unknown:
        raise InvalidRequestArgumentError(
            f"{fn}() got unexpected argument(s) {', '.join(unknown)}; provider-specific body fields go in "
            f"extra_body={{{unknown[0]!r}: ...}}, headers in extra_headers={{...}}"
        )


def request_headers(target: Target, extra_headers: Any, bill_to: Any) -> dict[str, str]:
    headers = check_headers(extra_headers)
    if bill_to is not None:
        if not isinstance(bill_to, str) or not bill_to:
            raise InvalidRequestArgumentError("bill_to must be the name of an HF organization, e.g. bill_to='my-org'")
        if not target.spec.bills_to_org:
            raise InvalidRequestArgumentError(
                f"bill_to applies to Hugging Face calls only, not {target.provider!r} ({target.model_string!r})"
            )
        headers["x-hf-bill-to"] = bill_to
    return headers


class CallSettings(TypedDict, total=False):
    """How a call is made, whatever its task: the keyword arguments every entry point passes through."""

    api_key: str | None
    api_base: str | None
    timeout: Any
    extra_headers: Any
    bill_to: Any
    catalog: Catalog | None
    need_key: bool  # False: no credentials needed (mock_response=)


def prepare(
    task: Task[R], target: Target, inputs: Any, params: dict[str, Any], settings: CallSettings, stream: bool = False
) -> Call[R]:
    """A call with its helper, credentials and headers resolved; the request is built by :func:`build`.

    ``settings`` is the entry point's keyword arguments as they came (one dict, not re-packed per step)."""
    helper = helper_for(target, task.name)
    need_key = settings.get("need_key", True)
    key = api_key_for(target, settings.get("api_key"), settings.get("api_base")) if need_key else None
    auth = Auth(key, request_headers(target, settings.get("extra_headers"), settings.get("bill_to")))
    catalog = settings.get("catalog") or default_catalog()
    timeouts = Timeouts.from_user(settings.get("timeout"))
    return Call(task, target, helper, inputs, params, auth, timeouts, catalog, stream=stream)


def build(call: Call[Any], upstream_model: str | None = None) -> HttpRequest:
    """The upstream request (``upstream_model``: the provider's own id, when the helper needs one)."""
    call.request = call.helper.request(
        call.target, call.inputs, call.params, call.auth, stream=call.stream, upstream_model=upstream_model
    )
    return call.request


def _upstream_model(call: Call[Any], mapping: dict[str, Any]) -> str:
    return HubMappingCache.pick(mapping, call.target.model, call.target.subprovider or "")


def build_sync(call: Call[Any], transport: SyncTransport) -> HttpRequest:
    """:func:`build`, looking the provider's model id up first when the helper needs it (sync I/O)."""
    if call.request is not None:
        return call.request
    if not call.helper.needs_model_mapping(call.target):
        return build(call)
    mapping = default_hub_cache().mapping(transport, call.target.model, call.auth.api_key)
    return build(call, _upstream_model(call, mapping))


async def abuild(call: Call[Any], transport: AsyncTransport) -> HttpRequest:
    """Async :func:`build_sync`."""
    if call.request is not None:
        return call.request
    if not call.helper.needs_model_mapping(call.target):
        return build(call)
    mapping = await default_hub_cache().amapping(transport, call.target.model, call.auth.api_key)
    return build(call, _upstream_model(call, mapping))


# ---------------------------------------------------------------- reserve
_UNBUDGETED = Hold(None)  # shared by every call without a budget: it holds nothing to settle or release


def reserve(call: Call[Any], budget: Budget | None) -> Hold:
    """Reserve the call's worst case (sync; may load the catalog). No budget: an empty hold."""
    if budget is None:
        return _UNBUDGETED
    candidates = call.catalog.candidates(call.target)
    counts = call.task.prompt_counts(call)
    return Hold(budget.reserve_worst(call.target, lambda: call.task.worst_case(call, budget, candidates), counts))


async def areserve(call: Call[Any], budget: Budget | None) -> Hold:
    """Async :func:`reserve`: counting long inputs happens in a worker thread."""
    if budget is None:
        return _UNBUDGETED
    from .tokens import aload_encoding

    await aload_encoding()  # counting the inputs: never load the tokenizer on the event loop
    candidates = await call.catalog.acandidates(call.target)
    counts = call.task.prompt_counts(call)
    heavy = call.task.long_input(call)

    async def worst() -> WorstCase:
        if heavy:
            return await asyncio.to_thread(call.task.worst_case, call, budget, candidates)
        return call.task.worst_case(call, budget, candidates)

    return Hold(await budget.areserve_worst(call.target, worst, counts))


# ---------------------------------------------------------------- send (and poll)
def attempt(call: Call[Any], status: int | None, error: str | None) -> Attempt:
    return Attempt(
        model=call.target.model_string,
        provider=call.target.label,
        api_base=call.target.api_base,
        status_code=status,
        error=error,
        latency_ms=(time.perf_counter() - call.started) * 1000,
    )


def raise_for_status(call: Call[Any], response: HttpResponse) -> None:
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
    err.attempts = [attempt(call, response.status, type(err).__name__)]
    raise err


def connection_failed(call: Call[Any], err: PolyrouteError) -> PolyrouteError:
    err.provider = err.provider or call.target.label
    err.model = err.model or call.target.model
    err.attempts = [attempt(call, None, type(err).__name__)]
    return err


def _poll_wait(call: Call[Any], polls: int) -> float:
    first, longest = call.helper.poll_wait
    return float(min(longest, first * 2**polls))


def send(call: Call[Any], transport: SyncTransport, hold: Hold) -> HttpResponse:
    """Send the call (and its polls, for an asynchronous upstream); errors carry the attempt."""
    request = build_sync(call, transport)
    polls = 0
    while True:
        try:
            response = transport.send(request, call.timeouts)
        except PolyrouteError as err:
            raise connection_failed(call, err) from None
        raise_for_status(call, response)
        hold.answered = True  # from here on a failure may still be billed
        following = call.helper.poll(call.target, response, call.auth)
        if following is None:
            return response
        time.sleep(_poll_wait(call, polls))
        request, polls = following, polls + 1


async def asend(call: Call[Any], transport: AsyncTransport, hold: Hold) -> HttpResponse:
    """Async :func:`send`."""
    request = await abuild(call, transport)
    polls = 0
    while True:
        try:
            response = await transport.send(request, call.timeouts)
        except PolyrouteError as err:
            raise connection_failed(call, err) from None
        raise_for_status(call, response)
        hold.answered = True
        following = call.helper.poll(call.target, response, call.auth)
        if following is None:
            return response
        await asyncio.sleep(_poll_wait(call, polls))
        request, polls = following, polls + 1


# ---------------------------------------------------------------- parse, meta and cost
def parse(call: Call[Any], response: HttpResponse) -> dict[str, Any]:
    return call.helper.parse(call.target, call.inputs, response, call.secrets)


def served_by(call: Call[Any], response: HttpResponse) -> str:
    return call.helper.served_by(call.target, response.headers)


def finish(call: Call[R], response: HttpResponse, data: dict[str, Any], lookup: PriceLookup | None = None) -> R:
    """The typed result of a parsed answer, with its ``.meta``: who served, latency, attempt and cost."""
    estimated = not data.get("usage")
    if estimated:
        data["usage"] = call.task.local_usage(call, data)
    result = call.task.result(call, data)
    served = served_by(call, response)
    if lookup is None:
        lookup = call.catalog.lookup(call.target, served)
    attach_meta(
        result,
        success_meta(
            call,
            response,
            provider=served,
            model=getattr(result, "model", None) or call.target.model,
            usage=data["usage"],
            usage_estimated=estimated,
            lookup=lookup,
        ),
    )
    return result


def success_meta(
    call: Call[Any],
    response: HttpResponse,
    *,
    provider: str,
    model: str,
    usage: Any,
    usage_estimated: bool,
    lookup: PriceLookup,
) -> ResponseMeta:
    """The ``.meta`` of a successful call: who served, latency, the attempt, and the cost."""
    target = call.target
    latency = (time.perf_counter() - call.started) * 1000
    cost = cost_of(lookup, usage, estimated=usage_estimated)
    # One positional constructor call per record (the hot path of every call): the field order of
    # Attempt and ResponseMeta in router.types.
    return ResponseMeta(
        provider,
        model,
        target.api_base,
        latency,
        target.model_string,
        [Attempt(target.model_string, target.label, target.api_base, response.status, None, latency)],
        None,
        usage_estimated,
        response.headers.get("x-request-id"),
        cost.cost_usd,
        cost.cost_pico,
        cost.cost_estimated,
        cost.price_source,
        cost.price_fetched_at,
        cost.unpriced_reason,
        cost.upstream_cost_usd,
    )


def settlement(result: Any) -> tuple[int | None, Any, str | None]:
    """What a result settles its reservation with: its cost, the upstream's own usage (None when it sent
    none: a local count teaches nothing) and who served."""
    meta = result.meta
    return meta.cost_pico, (None if meta.usage_estimated else result.usage), meta.provider


# ---------------------------------------------------------------- the whole pipeline
def run(call: Call[R], client: Any = None, budget: Budget | None = None) -> R:
    """Reserve, send, parse, price and settle one call (sync)."""
    with reserve(call, budget) as hold:
        response = send(call, sync_transport_for(client), hold)
        result = finish(call, response, parse(call, response))
        if hold.reservation is not None:
            hold.settle(*settlement(result))
    return result


async def arun(call: Call[R], client: Any = None, budget: Budget | None = None) -> R:
    """Async :func:`run`: no blocking work on the event loop."""
    async with await areserve(call, budget) as hold:
        response = await asend(call, async_transport_for(client), hold)
        data = parse(call, response)
        if not data.get("usage"):
            from .tokens import aload_encoding

            await aload_encoding()  # usage will be counted locally
        lookup = await call.catalog.alookup(call.target, served_by(call, response))
        result = finish(call, response, data, lookup)
        if hold.reservation is not None:
            await hold.asettle(*settlement(result))
    return result


# ---------------------------------------------------------------- streams
def open_stream(call: Call[Any], transport: SyncTransport) -> SyncStreamResponse:
    """The upstream's stream, opened; a failed connection or an error status raises with the attempt."""
    try:
        upstream = transport.open_stream(build_sync(call, transport), call.timeouts)
    except PolyrouteError as err:
        raise connection_failed(call, err) from None
    if upstream.status >= 400:
        content = upstream.read()
        upstream.close()
        raise_for_status(call, HttpResponse(upstream.status, upstream.headers, content))
    return upstream


async def aopen_stream(call: Call[Any], transport: AsyncTransport) -> AsyncStreamResponse:
    """Async :func:`open_stream`."""
    try:
        upstream = await transport.open_stream(await abuild(call, transport), call.timeouts)
    except PolyrouteError as err:
        raise connection_failed(call, err) from None
    if upstream.status >= 400:
        content = await upstream.aread()
        await upstream.aclose()
        raise_for_status(call, HttpResponse(upstream.status, upstream.headers, content))
    return upstream


def stream_settings(call: Call[Any], status: int | None = None, hold: Hold | None = None) -> dict[str, Any]:
    """What a stream object is made with besides its response and normalizer: the attempt behind it and the
    reservation it settles (none for a mock), when the call started, its model string and catalog."""
    return {
        "attempts": [] if status is None else [attempt(call, status, None)],
        "reservation": None if hold is None else hold.hand_over(),
        "started": call.started,
        "model_string": call.target.model_string,
        "catalog": call.catalog,
    }


def run_stream(
    call: Call[Any], normalizer: Normalizer[C], client: Any = None, budget: Budget | None = None
) -> Stream[C]:
    """Reserve, open the upstream stream and hand the reservation to the stream (sync)."""
    with reserve(call, budget) as hold:
        upstream = open_stream(call, sync_transport_for(client))
        return Stream(upstream, normalizer, **stream_settings(call, upstream.status, hold))


async def arun_stream(
    call: Call[Any], normalizer: Normalizer[C], client: Any = None, budget: Budget | None = None
) -> AsyncStream[C]:
    """Async :func:`run_stream`."""
    async with await areserve(call, budget) as hold:
        upstream = await aopen_stream(call, async_transport_for(client))
        return AsyncStream(upstream, normalizer, **stream_settings(call, upstream.status, hold))
