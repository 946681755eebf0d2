"""The proxy's OpenAI-compatible task endpoints, as one table, and the one handler that serves any row.

Each :class:`Endpoint` row says: its ``path`` (served under ``/v1`` and without it), the ``task`` it runs
(used in messages), the body it takes (``inputs``: the fields carrying the task's input, passed to the
router in that order after the model; ``fields``: the named fields a client may set; ``streams``: whether
``stream: true`` is allowed; ``check``: the library's own check of the request), the router method it
calls (``call``, e.g. ``Router.aembedding``) and how its result is written (``write``). :func:`serve` runs
every row the same way: the client's key, the body read and checked (:mod:`router.proxy.validate`), the
request journaled and its budget begun, the router called, the spend recorded, the answer written.

Adding a task (Responses API, images, audio, rerank) is one row in :data:`ENDPOINTS`::

    Endpoint("/rerank", "rerank", inputs=("query", "documents"), fields=frozenset({"top_n"}),
             call=Router.arerank, write=write_json, check=check_rerank),

with the router method taking ``(model, *inputs, **fields, extra_body=, budget=)`` and returning a result
with ``.meta`` and ``.usage`` (``write_json``), or a writer of its own for another answer (audio bytes).
Every row's input fields are owned by the proxy: another endpoint refuses them with a 400 naming them.
Give the new task a valid body in ``tests/test_proxy_endpoints.py`` (``BODIES``): that test pins the table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from providers.errors import PolyrouteError

from ..budget import Budget
from ..completions import COMPLETION_PARAMS
from ..completions import check_request as check_completion_request
from ..routing.router import Router
from .body import BODY_LIMITS
from .errors import error_body, from_error, public_message
from .hf_inference import FEATURE_EXTRACTION_FIELDS, FeatureVectors, check_feature_extraction, feature_extraction
from .keys import Caller
from .state import ACCESS, CONFIG, FLIGHT, JOURNAL, METRICS, ROUTER, SHOWN, SPEND, key_of
from .store import SpendRecord
from .validate import (
    CHAT_FIELDS,
    EMBEDDING_FIELDS,
    PROXY_OWNED,
    BodyRules,
    Checked,
    ClientError,
    check_chat,
    check_embedding,
    check_stream_options,
    is_upstream_field,
    model_of,
    parse_body,
)

log = logging.getLogger("polyroute.proxy")
# Legacy text completions: OpenAI's body parameters besides model and prompt, and stream_options.
COMPLETION_FIELDS = frozenset(COMPLETION_PARAMS) | {"stream_options"}


def check_text_completion(checked: Checked) -> None:
    """The library's checks of a text completion request."""
    if check_stream_options(checked) is not None and not checked.stream:
        raise ClientError('stream_options is only for streamed requests: add "stream": true', param="stream_options")
    (prompt,) = checked.inputs
    named = {k: v for k, v in checked.named.items() if k != "stream_options"}
    check_completion_request(prompt, named, checked.extra or None)


PREFIXES = ("/v1", "")  # every OpenAI-compatible path is served with and without /v1
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Served:
    """One request being served: who asked, for which model alias, since when; records its spend."""

    request: web.Request
    caller: Caller
    alias: str
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False

    @property
    def shown(self) -> Callable[[str], str] | None:
        """How error messages are rendered for this caller (None: the master key reads them whole)."""
        return self.request.app[SHOWN] if self.caller.key is not None else None

    def record(self, status: int, meta: Any = None, usage: Any = None, error: PolyrouteError | None = None) -> None:
        """Queue the spend record of this request (success or failure) and count its tokens; the record goes to
        the request's flight journal first, so it survives the process dying before it reaches the store.
        Failed attempts the budget was charged for (an answer cut short) add to the record's cost."""
        app, caller = self.request.app, self.caller
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = getattr(meta, "cost_pico", None)
        attempts: list[Any] = getattr(meta, "attempts", None) or (error.attempts if error is not None else [])
        charged = sum(int(a.charged_pico or 0) for a in attempts)
        if charged:
            cost = (cost or 0) + charged
        elapsed = time.perf_counter() - self.started
        provider = getattr(meta, "provider", None)
        record = SpendRecord(
            ts=time.time(),
            key_id=caller.key_id,
            alias=self.alias,
            provider=provider,
            model=getattr(meta, "model", None),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_pico=cost,
            price_source=getattr(meta, "price_source", None),
            latency_ms=elapsed * 1000,
            status=status,
        )
        flight = self.request.get(FLIGHT)
        if flight is not None:
            flight.journal.end(flight, record)
        app[SPEND].add(record)
        shared = caller.key is not None and caller.key.tpm is not None
        app[ACCESS].used_tokens(caller.key_id, prompt + completion, shared=shared)
        app[METRICS].observe(
            model=self.alias,
            provider=provider,
            key=caller.key_id,
            status=status,
            latency_s=elapsed,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=getattr(meta, "cost_usd", None),
        )


Writer = Callable[[Served, Any], Awaitable[web.StreamResponse]]


def _headers(meta: Any) -> dict[str, str]:
    headers = {"x-polyroute-provider": str(meta.provider), "x-polyroute-model": str(meta.model)}
    if meta.cost_usd is not None:
        headers["x-polyroute-cost-usd"] = f"{meta.cost_usd:.10f}"
    return headers


async def write_json(served: Served, result: Any) -> web.StreamResponse:
    """A result with ``.meta`` and ``.usage`` as one JSON answer."""
    served.record(200, result.meta, result.usage)
    body = result.model_dump_json().encode()
    return web.Response(body=body, content_type="application/json", headers=_headers(result.meta))


async def write_vectors(served: Served, result: FeatureVectors) -> web.StreamResponse:
    """Vectors as a bare JSON array (HF's inference API answer)."""
    served.record(200, result.meta, result.usage)
    return web.Response(
        body=orjson.dumps(result.vectors), content_type="application/json", headers=_headers(result.meta)
    )


async def write_events(served: Served, stream: Any) -> web.StreamResponse:
    """A router stream as server-sent events, ``data: [DONE]`` last; an error after the first byte goes in
    the stream (the status is sent already)."""
    request = served.request
    response = web.StreamResponse(
        headers={
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-polyroute-provider": stream.provider,
            "x-polyroute-model": stream.model,
        }
    )
    status = 200
    try:
        await response.prepare(request)
        async for chunk in stream:
            await response.write(b"data: " + chunk.model_dump_json().encode() + b"\n\n")
    except PolyrouteError as err:
        status = err.status_code or 502
        payload = error_body(status, public_message(err, served.shown), code=type(err).__name__)
        await response.write(b"data: " + orjson.dumps(payload) + b"\n\n")
    except (ConnectionError, asyncio.CancelledError) as gone:
        # The client left (or the server is stopping): stop the upstream, settle the budget at what
        # arrived, and record exactly that.
        await stream.aclose()
        served.record(499, stream.partial_meta(), stream.partial_usage())
        if isinstance(gone, asyncio.CancelledError):
            raise
        elapsed_ms = (time.perf_counter() - served.started) * 1000
        log.debug("client left a stream of %r after %.0f ms", served.alias, elapsed_ms)
        return response  # aiohttp sees the closed connection and drops it quietly
    meta = stream.meta if status == 200 else stream.partial_meta()
    served.record(status, meta, stream.usage or stream.partial_usage())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def write_json_or_events(served: Served, result: Any) -> web.StreamResponse:
    """Events when the client asked for a stream, else one JSON answer."""
    return await (write_events if served.stream else write_json)(served, result)


@dataclass(frozen=True)
class Endpoint:
    """One row of the endpoint table (see the module doc)."""

    path: str
    task: str
    inputs: tuple[str, ...]
    fields: frozenset[str]
    call: Callable[..., Awaitable[Any]]
    write: Writer
    streams: bool = False
    check: Callable[[Checked], None] | None = None
    model_in_path: bool = False  # the model alias is the path's {model} (HF's inference API shape)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/chat/completions",
        "chat",
        inputs=("messages",),
        fields=CHAT_FIELDS,
        call=Router.acompletion,
        write=write_json_or_events,
        streams=True,
        check=check_chat,
    ),
    Endpoint(
        "/completions",
        "completions",
        inputs=("prompt",),
        fields=COMPLETION_FIELDS,
        call=Router.atext_completion,
        write=write_json_or_events,
        streams=True,
        check=check_text_completion,
    ),
    Endpoint(
        "/embeddings",
        "embeddings",
        inputs=("input",),
        fields=EMBEDDING_FIELDS,
        call=Router.aembedding,
        write=write_json,
        check=check_embedding,
    ),
    Endpoint(
        "/models/{model:.+}",
        "feature-extraction",
        inputs=("inputs",),
        fields=FEATURE_EXTRACTION_FIELDS,
        call=feature_extraction,
        write=write_vectors,
        check=check_feature_extraction,
        model_in_path=True,
    ),
)


def _with_path_model(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The body with the path's model alias; a body naming another model is refused, not silently overridden."""
    if "model" in body and body["model"] != model:
        raise ClientError(
            f"the path names model {model!r} but the body names {body['model']!r}: drop 'model' from the body",
            param="model",
        )
    return {**body, "model": model}


_BIG_BODY = 256_000  # bytes: parsing and checking a body this large runs in a worker thread, not on the loop


async def _checked(request: web.Request, caller: Caller, rules: BodyRules, model_in_path: bool) -> Checked:
    """The request's checked body; raises :class:`ClientError`."""
    raw = await request.app[BODY_LIMITS].read(request)
    big = len(raw) > _BIG_BODY  # e.g. 100,000 tiny messages: checking them would stall every other request
    body = await asyncio.to_thread(parse_body, raw) if big else parse_body(raw)
    if model_in_path:
        body = _with_path_model(body, request.match_info["model"])
    model = model_of(body, drop_upstream=request.app[CONFIG].client_upstream_fields == "ignore")
    router = request.app[ROUTER]
    mine = caller.key.models if caller.key is not None else None
    unserved = request.app[CONFIG].unserved.get(model)
    if unserved is not None:  # the config names it, but only with providers polyroute cannot serve (501) or
        status, why = unserved  # with deployments configured wrong (503)
        code = "provider_not_supported" if status == 501 else "server_misconfigured"
        raise ClientError(why, param="model", code=code, status=status)
    try:
        group = model if model in router.groups else router.group_of(model)
    except PolyrouteError as e:  # a wildcard group's model string for this name does not resolve
        raise ClientError(e.message, param="model", code="model_not_found", status=400) from None
    if group is None:
        names = ", ".join(n for n in router.listed() if mine is None or n in mine)
        shown = model if len(model) <= 100 else model[:97] + "..."
        raise ClientError(
            f"model {shown!r} is not served here; use one of: {names}",
            param="model",
            code="model_not_found",
            status=404,
        )
    request.app[ACCESS].allow(caller, model)
    return await asyncio.to_thread(rules.checked, body) if big else rules.checked(body)


def _begin(request: web.Request, caller: Caller, alias: str) -> Budget | None:
    """Journal the request as begun (before anything is reserved or sent); its budget, seen through a view
    that tags the reservation with the request id and journals it as soon as it is made."""
    budget = caller.budget
    budget_id = None if budget is None else budget.name
    flight = request[FLIGHT] = request.app[JOURNAL].begin(caller.key_id, alias, budget_id)
    return None if budget is None else budget.for_request(flight.id, flight.reserved)


async def serve(request: web.Request, endpoint: Endpoint, rules: BodyRules) -> web.StreamResponse:
    """Serve one request of any endpoint row (see the module doc)."""
    started = time.perf_counter()
    caller = await request.app[ACCESS].authenticate(key_of(request))
    checked = await _checked(request, caller, rules, endpoint.model_in_path)
    served = Served(request, caller, checked.model, started, checked.stream)
    budget = _begin(request, caller, served.alias)
    options: dict[str, Any] = {**checked.named, "extra_body": checked.extra or None, "budget": budget}
    if endpoint.streams:
        options["stream"] = checked.stream
    try:
        result = await endpoint.call(request.app[ROUTER], served.alias, *checked.inputs, **options)
    except PolyrouteError as err:
        response = from_error(err, served.shown, served.alias)
        served.record(response.status, error=err)
        return response
    except asyncio.CancelledError:  # the client left, or the server is shutting down: still one record
        served.record(499)
        raise
    return await endpoint.write(served, result)


_CALL_OPTIONS = frozenset({"model", "stream", "extra_body", "budget"})


def add_endpoints(app: web.Application, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> None:
    """Route every row's path (with and without ``/v1``) to :func:`serve`."""
    owned = PROXY_OWNED.union(*(e.inputs for e in endpoints))
    for endpoint in endpoints:
        # A row can never hand a client the call's own options or a field that picks the upstream.
        taken = endpoint.fields | set(endpoint.inputs)
        wrong = sorted(n for n in taken if n in _CALL_OPTIONS or is_upstream_field(n))
        if wrong:
            raise ValueError(f"endpoint {endpoint.path}: clients may never set {', '.join(wrong)}")
        rules = BodyRules(endpoint.task, endpoint.inputs, endpoint.fields, owned, endpoint.streams, endpoint.check)
        handler = _handler(endpoint, rules)
        for prefix in PREFIXES:
            app.router.add_post(prefix + endpoint.path, handler)


def _handler(endpoint: Endpoint, rules: BodyRules) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve(request, endpoint, rules)

    return handle
