"""The OpenAI-compatible HTTP proxy (aiohttp): one process, one event loop, one Router.

Endpoints: ``POST /v1/chat/completions`` (stream and not), ``POST /v1/embeddings``, ``GET /v1/models``,
``GET /health``, ``GET /health/ready`` — also without the ``/v1`` prefix. Every error is OpenAI's
error JSON with the right status, so the OpenAI SDK raises its matching exception. Clients can never
choose the upstream or override a field the proxy owns (see :mod:`router.proxy.validate`); bodies are
read under a size, time and memory limit (:mod:`router.proxy.body`). Errors shown to virtual keys never
name the proxy's deployments, upstream hosts or URLs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from providers.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BudgetExceededError,
    BudgetUnavailableError,
    InvalidRequestArgumentError,
    MissingCredentialsError,
    PaymentRequiredError,
    PermissionDeniedError,
    PolyrouteError,
    UnpricedCallError,
)

from ..budget import Budget
from ..routing.router import Router
from ..shared.ledger import RedisLedger
from . import admin
from .body import BODY_LIMITS, BodyLimits
from .config import ConfigError, ProxyConfig
from .flight import Flight, FlightJournal, Recovery, journal_dir
from .keys import Access, Caller, Refused
from .metrics import Metrics, shared_metrics
from .spend import SpendWriter
from .store import SpendRecord, SqlStore
from .validate import Checked, ClientError, chat_request, embedding_request, model_of, parse_body

_ROUTER = web.AppKey("router", Router)
_CONFIG = web.AppKey("config", ProxyConfig)
_STARTED = web.AppKey("started", float)
_ACCESS = web.AppKey("access", Access)
_STORE = web.AppKey("store", SqlStore)
_SPEND = web.AppKey("spend", SpendWriter)
_METRICS = web.AppKey("metrics", Metrics)
_JOURNAL = web.AppKey("journal", FlightJournal)
_RECOVERY = web.AppKey("recovery", Recovery)
_FLIGHT = web.RequestKey("flight", Flight)
_BODY = BODY_LIMITS
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("polyroute.proxy")


def error_response(
    status: int, message: str, *, type_: str | None = None, code: str | None = None, param: str | None = None
) -> web.Response:
    """OpenAI's error JSON."""
    type_ = type_ or _error_type(status)
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


class Shown:
    """What a virtual key may read of an error: the deployments' model strings, upstream model ids,
    base URLs and hosts become the model alias or ``[upstream]``. (The master key reads errors whole.)"""

    _URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)]+")
    _IP = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")

    def __init__(self, router: Router) -> None:
        names: dict[str, str] = {}
        for group, deployments in router.groups.items():
            for d in deployments:
                names[d.name] = group
                for text in (d.model, d.target.model_string, d.target.model):
                    if text and len(text) >= 4:  # a 1-3 letter model id would mangle ordinary words
                        names.setdefault(text, group)
                for base in (d.target.api_base, d.params.get("api_base"), d.params.get("base_url")):
                    if isinstance(base, str) and base:
                        parts = urlsplit(base)
                        for where in (base, parts.netloc, parts.hostname):
                            if where and len(where) >= 4:
                                names.setdefault(where, "[upstream]")
        self.names = names
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![\w/-])(?:{alternatives})(?![\w/-])") if names else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self.names[m.group(0)], text)
        return self._IP.sub("[upstream]", self._URL.sub("[upstream]", text))


_SHOWN = web.AppKey("shown", Shown)


def _public_message(err: PolyrouteError) -> str:
    """What a client may see: never an upstream URL or connection detail (those go to the log)."""
    if isinstance(err, APIConnectionError):
        log.warning("upstream failure: %s", err)
        kind = "timed out" if isinstance(err, APITimeoutError) else "failed"
        return f"the upstream connection {kind}; try again"
    return err.message


def _from_error(err: PolyrouteError, shown: Callable[[str], str] | None = None, alias: str = "") -> web.Response:
    """The OpenAI error response for a router error; ``shown`` renders messages for a virtual key."""
    message = _public_message(err)
    if shown is not None:
        message = shown(message)
    if isinstance(err, BudgetUnavailableError):  # the shared ledger is away: try again, not "out of money"
        return error_response(503, message, type_="service_unavailable", code="budget_unavailable")
    if isinstance(err, BudgetExceededError):
        return error_response(429, message, type_="insufficient_quota", code="budget_exceeded")
    if isinstance(err, MissingCredentialsError):  # the proxy's config lacks a key: not the client's mistake
        log.error("no upstream credentials for model %r: %s", alias, err.message)
        return error_response(
            502, "the proxy has no upstream credentials for this model (logged)", code="upstream_auth"
        )
    if isinstance(err, UnpricedCallError) and shown is not None:
        return error_response(
            400,
            f"model {alias!r} has no price, so it cannot be used under this key's budget; "
            "ask the proxy's operator to set one",
            code="unpriced",
        )
    if isinstance(err, InvalidRequestArgumentError):
        return error_response(400, message, code="invalid_request")
    if isinstance(err, AuthenticationError | PermissionDeniedError | PaymentRequiredError):
        # The upstream refused the proxy's own credentials: the client's key is fine, the proxy is not.
        if shown is not None:
            log.error("the upstream refused this proxy's credentials for model %r: %s", alias, err.message)
            message = "the upstream refused this proxy's credentials (logged)"
        else:
            message = f"the upstream refused this proxy's credentials: {message}"
        return error_response(502, message, code="upstream_auth")
    if isinstance(err, APIConnectionError):
        status = 504 if isinstance(err, APITimeoutError) else 502
        return error_response(status, message, code=type(err).__name__)
    # An upstream's own failure (or an unreadable answer) is a bad gateway: 500 means this proxy failed.
    status = err.status_code or 502
    if status < 400 or status == 500:
        status = 502
    return error_response(status, message, code=type(err).__name__)


def _shown_for(request: web.Request, caller: Caller) -> Callable[[str], str] | None:
    return request.app[_SHOWN] if caller.key is not None else None


def _key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    admin_path = request.path.startswith("/admin/")
    if (
        admin_path
        and request.app[_CONFIG].master_key is not None
        and not request.app[_ACCESS].is_master(_key_of(request))
    ):
        return error_response(401, "the admin API needs the master key", code="admin_only")
    try:
        return await handler(request)
    except Refused as refused:
        return error_response(refused.status, refused.message, code=refused.code)
    except ClientError as err:  # AdminError included
        response = error_response(err.status, err.message, param=err.param, code=err.code)
        if err.retry_after is not None:
            response.headers["Retry-After"] = str(err.retry_after)
        if err.close:  # its body was not read: the connection cannot carry another request
            response.force_close()
        if err.drop:  # and no more time for this client: answer, then close at once (no lingering read)
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[_CONFIG].max_request_bytes
        return error_response(413, f"request body larger than the proxy's limit of {limit} bytes", code="too_large")
    except web.HTTPNotFound:
        return error_response(404, f"no route {request.method} {request.path}", code="not_found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, f"method {request.method} not allowed on {request.path}", code="method_not_allowed")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, code="http_error")
    except ConnectionError:  # the client left: nothing to answer, nothing wrong with the proxy
        log.debug("client disconnected during %s %s", request.method, request.path)
        return error_response(400, "client disconnected", code="client_disconnected")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error in the proxy (logged)", code="internal_error")


def _record(
    request: web.Request,
    caller: Caller,
    alias: str,
    started: float,
    status: int,
    meta: Any = None,
    usage: Any = None,
    error: PolyrouteError | None = None,
) -> None:
    """Queue the spend record of one request (success or failure) and count its tokens; the record goes to
    the request's flight journal first, so it survives the process dying before it reaches the store.
    Failed attempts the budget was charged for (an answer cut short) add to the record's cost."""
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    cost = getattr(meta, "cost_pico", None)
    attempts: list[Any] = getattr(meta, "attempts", None) or (error.attempts if error is not None else [])
    charged = sum(int(a.charged_pico or 0) for a in attempts)
    if charged:
        cost = (cost or 0) + charged
    record = SpendRecord(
        ts=time.time(),
        key_id=caller.key_id,
        alias=alias,
        provider=getattr(meta, "provider", None),
        model=getattr(meta, "model", None),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_pico=cost,
        price_source=getattr(meta, "price_source", None),
        latency_ms=(time.perf_counter() - started) * 1000,
        status=status,
    )
    flight = request.get(_FLIGHT)
    if flight is not None:
        flight.journal.end(flight, record)
    request.app[_SPEND].add(record)
    request.app[_ACCESS].used_tokens(
        caller.key_id, prompt + completion, shared=caller.key is not None and caller.key.tpm is not None
    )
    request.app[_METRICS].observe(
        model=alias,
        provider=getattr(meta, "provider", None),
        key=caller.key_id,
        status=status,
        latency_s=time.perf_counter() - started,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=getattr(meta, "cost_usd", None),
    )


_BIG_BODY = 256_000  # bytes: parsing and checking a body this large runs in a worker thread, not on the loop


async def _checked(request: web.Request, caller: Caller, check: Callable[[dict[str, Any]], Checked]) -> Checked:
    """The request's checked body (see :mod:`router.proxy.validate`); raises :class:`ClientError`."""
    raw = await request.app[_BODY].read(request)
    big = len(raw) > _BIG_BODY  # e.g. 100,000 tiny messages: checking them would stall every other request
    body = await asyncio.to_thread(parse_body, raw) if big else parse_body(raw)
    model = model_of(body, drop_upstream=request.app[_CONFIG].client_upstream_fields == "ignore")
    router = request.app[_ROUTER]
    mine = caller.key.models if caller.key is not None else None
    if model not in router.groups:
        names = ", ".join(n for n in sorted(router.groups) if mine is None or n in mine)
        shown = model if len(model) <= 100 else model[:97] + "..."
        raise ClientError(
            f"model {shown!r} is not served here; use one of: {names}",
            param="model",
            code="model_not_found",
            status=404,
        )
    request.app[_ACCESS].allow(caller, model)
    return await asyncio.to_thread(check, body) if big else check(body)


def _begin(request: web.Request, caller: Caller, alias: str) -> Budget | None:
    """Journal the request as begun (before anything is reserved or sent); its budget, seen through a view
    that tags the reservation with the request id and journals it as soon as it is made."""
    budget = caller.budget
    budget_id = None if budget is None else budget.name
    flight = request[_FLIGHT] = request.app[_JOURNAL].begin(caller.key_id, alias, budget_id)
    return None if budget is None else budget.for_request(flight.id, flight.reserved)


async def _end_unended(request: web.Request, response: web.StreamResponse) -> None:
    """A handler that failed unexpectedly (a 500 from the middleware) still ends its flight with a record."""
    flight = request.get(_FLIGHT)
    if flight is not None and not flight.ended and type(response) is web.Response:
        record = SpendRecord(
            time.time(), flight.key_id, flight.alias, None, None, 0, 0, None, None, 0.0, response.status
        )
        flight.journal.end(flight, record)
        request.app[_SPEND].add(record)


def _headers(meta: Any) -> dict[str, str]:
    headers = {"x-polyroute-provider": str(meta.provider), "x-polyroute-model": str(meta.model)}
    if meta.cost_usd is not None:
        headers["x-polyroute-cost-usd"] = f"{meta.cost_usd:.10f}"
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    caller = await request.app[_ACCESS].authenticate(_key_of(request))
    checked = await _checked(request, caller, chat_request)
    router = request.app[_ROUTER]
    stream, alias = checked.stream, checked.model
    budget = _begin(request, caller, alias)
    try:
        result = await router.acompletion(
            alias, checked.payload, stream=stream, **checked.named, extra_body=checked.extra or None, budget=budget
        )
    except PolyrouteError as err:
        response = _from_error(err, _shown_for(request, caller), alias)
        _record(request, caller, alias, started, response.status, error=err)
        return response
    except asyncio.CancelledError:  # the client left, or the server is shutting down: still one record
        _record(request, caller, alias, started, 499)
        raise
    if not stream:
        _record(request, caller, alias, started, 200, result.meta, result.usage)
        return web.Response(
            body=result.model_dump_json().encode(), content_type="application/json", headers=_headers(result.meta)
        )
    return await _stream_out(request, result, caller, alias, started)


async def _stream_out(
    request: web.Request, stream: Any, caller: Caller, alias: str, started: float
) -> web.StreamResponse:
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
        # After the first byte the status is sent: the error goes in the stream, then [DONE].
        status = err.status_code or 502
        shown = _shown_for(request, caller)
        message = _public_message(err) if shown is None else shown(_public_message(err))
        payload = {"error": {"message": message, "type": _error_type(status), "code": type(err).__name__}}
        await response.write(b"data: " + orjson.dumps(payload) + b"\n\n")
    except (ConnectionError, asyncio.CancelledError) as gone:
        # The client left (or the server is stopping): stop the upstream, settle the budget at what
        # arrived, and record exactly that.
        await stream.aclose()
        _record(request, caller, alias, started, 499, stream.partial_meta(), stream.partial_usage())
        if isinstance(gone, asyncio.CancelledError):
            raise
        log.debug("client left a stream of %r after %.0f ms", alias, (time.perf_counter() - started) * 1000)
        return response  # aiohttp sees the closed connection and drops it quietly
    meta = stream.meta if status == 200 else stream.partial_meta()
    _record(request, caller, alias, started, status, meta, stream.usage or stream.partial_usage())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def embeddings(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    caller = await request.app[_ACCESS].authenticate(_key_of(request))
    checked = await _checked(request, caller, embedding_request)
    alias = checked.model
    budget = _begin(request, caller, alias)
    try:
        result = await request.app[_ROUTER].aembedding(
            alias,
            checked.payload,
            **checked.named,
            extra_body=checked.extra or None,
            budget=budget,
        )
    except PolyrouteError as err:
        response = _from_error(err, _shown_for(request, caller), alias)
        _record(request, caller, alias, started, response.status, error=err)
        return response
    _record(request, caller, alias, started, 200, result.meta, result.usage)
    return web.Response(
        body=result.model_dump_json().encode(), content_type="application/json", headers=_headers(result.meta)
    )


async def models(request: web.Request) -> web.Response:
    caller = await request.app[_ACCESS].authenticate(_key_of(request))
    created = int(request.app[_STARTED])
    allowed = caller.key.models if caller.key is not None else None
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "polyroute"}
        for name in sorted(request.app[_ROUTER].groups)
        if allowed is None or name in allowed
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    if request.app[_CONFIG].master_key is not None and not request.app[_ACCESS].is_master(_key_of(request)):
        return error_response(401, "/metrics needs the master key (scrape with a bearer token)", code="admin_only")
    text = request.app[_METRICS].render()
    shared = request.app[_ROUTER].shared
    if shared is not None:
        text += shared_metrics(shared, request.app[_ACCESS].ledger)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 while requests can be served: ``degraded`` when Redis is away (local state, budgets per
    ``on_redis_unavailable``), 503 when the store is unreachable."""
    router = request.app[_ROUTER]
    store_ok = await asyncio.to_thread(request.app[_STORE].ping)
    body: dict[str, Any] = {"status": "ready", "models": len(router.groups), "store": store_ok}
    if router.shared is not None:
        body.update(router.shared.status())
        body["budgets_when_redis_down"] = request.app[_CONFIG].on_redis_unavailable
        if not router.shared.link.up:
            body["status"] = "degraded"
    if not store_ok:
        body["status"] = "store unreachable"
    return web.json_response(body, status=200 if store_ok else 503)


def _admin(handler: Callable[..., Awaitable[web.Response]]) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        return await handler(request, request.app[_STORE], request.app[_ACCESS])

    return run


def build_app(config: ProxyConfig, router: Router, store: SqlStore) -> web.Application:
    """The aiohttp application serving ``router`` under ``config``'s rules, with keys and spend in ``store``."""
    app = web.Application(middlewares=[_errors_and_auth], client_max_size=config.max_request_bytes)
    app[_ROUTER] = router
    app[_CONFIG] = config
    app[_BODY] = BodyLimits(config.max_request_bytes, config.request_body_timeout, config.max_pending_body_bytes)
    app[_SHOWN] = Shown(router)
    app[_STARTED] = time.time()
    app[_STORE] = store
    if router.shared is not None:  # budgets and key windows shared by every replica through Redis
        ledger: Any = RedisLedger(router.shared.link, on_unavailable=config.on_redis_unavailable)
        router.shared.flushers.append(ledger.flush)  # settlements owed after an outage reach Redis soon after
        app[_ACCESS] = Access(store, config.master_key, ledger, router.shared.windows)
    else:
        app[_ACCESS] = Access(store, config.master_key, store.ledger())
    # Crash safety (router/proxy/flight.py): every request is journaled before it is sent; at start and every
    # sweep_interval, what dead processes left (journals here, reservations of expired leases) is resolved.
    folder = journal_dir(store, config.journal_dir)
    try:
        journal = app[_JOURNAL] = FlightJournal(folder, store.identity())
    except OSError as e:
        raise ConfigError(
            f"{config.source}: general_settings.journal_dir: cannot write the flight journal in "
            f"{folder}: {e.strerror or e}"
        ) from None
    recovery = app[_RECOVERY] = Recovery(journal, store, app[_ACCESS].ledger, lease_seconds=config.lease_seconds)
    ledger_now: Any = app[_ACCESS].ledger
    redis_lease = router.shared is not None and isinstance(ledger_now, RedisLedger)
    if router.shared is not None and redis_lease:  # the lease is renewed by every sync: no extra round trip
        router.shared.heartbeats.append(ledger_now.add_heartbeat)
    spend_writer = app[_SPEND] = SpendWriter(store, on_stored=journal.stored)
    app[_METRICS] = Metrics()
    sweeps: list[asyncio.Task[None]] = []

    async def start_writer(_app: web.Application) -> None:
        spend_writer.start()
        if router.shared is not None:  # Redis calls on this loop's own client, not worker threads
            router.shared.link.bind_loop()
        try:  # before serving: this process's lease, then what dead processes left
            await asyncio.to_thread(recovery.start)
        except Exception as e:  # the store or ledger away: the periodic sweep tries again
            log.warning(
                "crash recovery at start failed (%s); retried every %.0f s", type(e).__name__, config.sweep_interval
            )
        sweeps.append(
            asyncio.get_running_loop().create_task(
                recovery.run(sweep_interval=config.sweep_interval, heartbeat=not redis_lease)
            )
        )

    async def flush_spend(_app: web.Application) -> None:
        recovery.stop()
        for task in sweeps:
            await task
        await spend_writer.stop()  # after in-flight requests finished: every record is written
        journal.close()  # deleted when every record is in the store; else left for the next start
        ledger = app[_ACCESS].ledger
        try:
            await asyncio.to_thread(recovery.end)
        except Exception as e:
            log.warning("could not give the ledger lease up (%s): it expires by itself", type(e).__name__)
        if hasattr(ledger, "close"):
            ledger.close()
        router.close()
        if router.shared is not None:
            await router.shared.link.aclose()
        store.close()

    app.on_startup.append(start_writer)
    app.on_cleanup.append(flush_spend)
    app.on_response_prepare.append(_end_unended)
    app.router.add_post("/admin/keys", _admin(admin.create_key))
    app.router.add_get("/admin/keys", _admin(admin.list_keys))
    app.router.add_patch("/admin/keys/{key_id}", _admin(admin.update_key))
    app.router.add_delete("/admin/keys/{key_id}", _admin(admin.revoke_key))
    app.router.add_get("/admin/spend", _admin(admin.spend))
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_get(f"{prefix}/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    return app
