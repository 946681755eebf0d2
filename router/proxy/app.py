"""The OpenAI-compatible HTTP proxy (aiohttp): one process, one event loop, one Router.

Endpoints: ``POST /v1/chat/completions`` (stream and not), ``POST /v1/embeddings``, ``GET /v1/models``,
``GET /health``, ``GET /health/ready`` — also without the ``/v1`` prefix. Every error is OpenAI's
error JSON with the right status, so the OpenAI SDK raises its matching exception. Clients can never
choose the upstream: ``api_base``, ``api_key`` and similar body fields are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from providers.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BudgetExceededError,
    BudgetUnavailableError,
    InvalidRequestArgumentError,
    PaymentRequiredError,
    PermissionDeniedError,
    PolyrouteError,
)

from ..params import BODY_PARAMS
from ..routing.router import Router
from ..shared.ledger import RedisLedger
from . import admin
from .admin import AdminError
from .config import ProxyConfig
from .keys import Access, Caller, Refused
from .metrics import Metrics, shared_metrics
from .spend import SpendWriter
from .store import SpendRecord, SqlStore


def _squash_name(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


# Fields that would let a client pick the upstream or its credentials (any spelling: apiBase, API_KEY...).
UPSTREAM_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "custom_llm_provider",
        "organization",
        "litellm_params",
        "extra_headers",
        "bill_to",
        "client",
        "registry",
        "catalog",
        "budget",
    }
)
_UPSTREAM_SQUASHED = frozenset(_squash_name(n) for n in UPSTREAM_FIELDS | {"azure_endpoint", "headers", "api_type"})
_CHAT_FIELDS = frozenset(BODY_PARAMS) | {"stream_options", "functions", "function_call"}
_EMBED_FIELDS = frozenset({"dimensions", "encoding_format", "user"})
_ROUTER = web.AppKey("router", Router)
_CONFIG = web.AppKey("config", ProxyConfig)
_STARTED = web.AppKey("started", float)
_ACCESS = web.AppKey("access", Access)
_STORE = web.AppKey("store", SqlStore)
_SPEND = web.AppKey("spend", SpendWriter)
_METRICS = web.AppKey("metrics", Metrics)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("polyroute.proxy")


def error_response(status: int, message: str, *, type_: str | None = None, code: str | None = None,
                   param: str | None = None) -> web.Response:  # fmt: skip
    """OpenAI's error JSON."""
    type_ = type_ or _error_type(status)
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def _public_message(err: PolyrouteError) -> str:
    """What a client may see: never an upstream URL or connection detail (those go to the log)."""
    if isinstance(err, APIConnectionError):
        log.warning("upstream failure: %s", err)
        kind = "timed out" if isinstance(err, APITimeoutError) else "failed"
        return f"the upstream connection {kind}; try again"
    return err.message


def _from_error(err: PolyrouteError) -> web.Response:
    if isinstance(err, BudgetUnavailableError):  # the shared ledger is away: try again, not "out of money"
        return error_response(503, err.message, type_="service_unavailable", code="budget_unavailable")
    if isinstance(err, BudgetExceededError):
        return error_response(429, err.message, type_="insufficient_quota", code="budget_exceeded")
    if isinstance(err, InvalidRequestArgumentError):
        return error_response(400, err.message, code="invalid_request")
    if isinstance(err, AuthenticationError | PermissionDeniedError | PaymentRequiredError):
        # The upstream refused the proxy's own credentials: the client's key is fine, the proxy is not.
        return error_response(
            502, f"the upstream refused this proxy's credentials: {err.message}", code="upstream_auth"
        )
    if isinstance(err, APIConnectionError):
        status = 504 if isinstance(err, APITimeoutError) else 502
        return error_response(status, _public_message(err), code=type(err).__name__)
    status = err.status_code or 500
    if status < 400:
        status = 502
    return error_response(status, err.message, code=type(err).__name__)


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
    except AdminError as err:
        return error_response(400, err.message, code="invalid_request")
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[_CONFIG].max_request_bytes
        return error_response(413, f"request body larger than the proxy's limit of {limit} bytes", code="too_large")
    except web.HTTPNotFound:
        return error_response(404, f"no route {request.method} {request.path}", code="not_found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, f"method {request.method} not allowed on {request.path}", code="method_not_allowed")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error in the proxy (logged)", code="internal_error")


def _record(request: web.Request, caller: Caller, alias: str, started: float, status: int, meta: Any = None,
            usage: Any = None) -> None:  # fmt: skip
    """Queue the spend record of one request (success or failure) and count its tokens."""
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    request.app[_SPEND].add(
        SpendRecord(
            ts=time.time(), key_id=caller.key_id, alias=alias, provider=getattr(meta, "provider", None),
            model=getattr(meta, "model", None), prompt_tokens=prompt, completion_tokens=completion,
            cost_pico=getattr(meta, "cost_pico", None), price_source=getattr(meta, "price_source", None),
            latency_ms=(time.perf_counter() - started) * 1000, status=status,
        )
    )  # fmt: skip
    request.app[_ACCESS].used_tokens(caller.key_id, prompt + completion,
                                     shared=caller.key is not None and caller.key.tpm is not None)  # fmt: skip
    request.app[_METRICS].observe(
        model=alias, provider=getattr(meta, "provider", None), key=caller.key_id, status=status,
        latency_s=time.perf_counter() - started, prompt_tokens=prompt, completion_tokens=completion,
        cost_usd=getattr(meta, "cost_usd", None),
    )  # fmt: skip


def _forbidden_fields(body: dict[str, Any]) -> list[str]:
    """Body fields that name an upstream or a credential, however they are spelled."""
    found = []
    for name in body:
        if _squash_name(name) in _UPSTREAM_SQUASHED:
            found.append(name)
    extra = body.get("extra_body")
    if isinstance(extra, dict):
        found += [f"extra_body.{n}" for n in extra if _squash_name(n) in _UPSTREAM_SQUASHED]
    return sorted(found)


async def _json_body(
    request: web.Request, allowed: frozenset[str], caller: Caller
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(body, {known fields, other fields}) of a checked JSON body; raises a ready OpenAI error response."""
    limit = request.app[_CONFIG].max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _Reply(
            error_response(413, f"request body larger than the proxy's limit of {limit} bytes", code="too_large")
        )
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _Reply(error_response(400, f"malformed JSON body: {e}", code="invalid_json")) from None
    if not isinstance(body, dict):
        raise _Reply(error_response(400, "the JSON body must be an object", code="invalid_json"))
    upstream = _forbidden_fields(body)
    if upstream:
        if request.app[_CONFIG].client_upstream_fields == "reject":
            raise _Reply(error_response(400, f"{', '.join(upstream)} cannot be set by clients: the proxy's config "
                                             "chooses upstreams and credentials", param=upstream[0],
                                        code="forbidden_field"))  # fmt: skip
        for name in upstream:
            if name.startswith("extra_body."):
                body["extra_body"].pop(name[len("extra_body.") :])
            else:
                body.pop(name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Reply(error_response(400, "the body needs a 'model' string (one of GET /v1/models)", param="model",
                                    code="missing_model"))  # fmt: skip
    router = request.app[_ROUTER]
    mine = caller.key.models if caller.key is not None else None
    if model not in router.groups:
        names = ", ".join(n for n in sorted(router.groups) if mine is None or n in mine)
        raise _Reply(error_response(404, f"model {model!r} is not served here; use one of: {names}", param="model",
                                    code="model_not_found"))  # fmt: skip
    request.app[_ACCESS].allow(caller, model)
    if allowed is _CHAT_FIELDS and not isinstance(body.get("messages"), list):
        raise _Reply(error_response(400, "messages must be a list of {role, content} objects", param="messages",
                                    code="invalid_request"))  # fmt: skip
    known = {k: v for k, v in body.items() if k in allowed}
    other = {k: v for k, v in body.items() if k not in allowed and k not in ("model", "messages", "input", "stream")}
    if isinstance(other.get("extra_body"), dict):
        other.update(other.pop("extra_body"))
    return body, {"known": known, "other": other}


class _Reply(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _headers(meta: Any) -> dict[str, str]:
    headers = {"x-polyroute-provider": str(meta.provider), "x-polyroute-model": str(meta.model)}
    if meta.cost_usd is not None:
        headers["x-polyroute-cost-usd"] = f"{meta.cost_usd:.10f}"
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    caller = await request.app[_ACCESS].authenticate(_key_of(request))
    try:
        body, parts = await _json_body(request, _CHAT_FIELDS, caller)
    except _Reply as reply:
        return reply.response
    router = request.app[_ROUTER]
    stream = bool(body.get("stream"))
    try:
        result = await router.acompletion(body["model"], body.get("messages"), stream=stream, **parts["known"],
                                          extra_body=parts["other"] or None, budget=caller.budget)  # fmt: skip
    except PolyrouteError as err:
        response = _from_error(err)
        _record(request, caller, body["model"], started, response.status)
        return response
    except asyncio.CancelledError:  # the client left, or the server is shutting down: still one record
        _record(request, caller, body["model"], started, 499)
        raise
    if not stream:
        _record(request, caller, body["model"], started, 200, result.meta, result.usage)
        return web.Response(body=result.model_dump_json().encode(), content_type="application/json",
                            headers=_headers(result.meta))  # fmt: skip
    return await _stream_out(request, result, caller, body["model"], started)


async def _stream_out(
    request: web.Request, stream: Any, caller: Caller, alias: str, started: float
) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "content-type": "text/event-stream", "cache-control": "no-cache",
        "x-polyroute-provider": stream.provider, "x-polyroute-model": stream.model,
    })  # fmt: skip
    status = 200
    try:
        await response.prepare(request)
        async for chunk in stream:
            await response.write(b"data: " + chunk.model_dump_json().encode() + b"\n\n")
    except PolyrouteError as err:
        # After the first byte the status is sent: the error goes in the stream, then [DONE].
        status = err.status_code or 500
        payload = {"error": {"message": _public_message(err), "type": _error_type(status),
                             "code": type(err).__name__}}  # fmt: skip
        await response.write(b"data: " + orjson.dumps(payload) + b"\n\n")
    except (ConnectionError, asyncio.CancelledError):
        # The client left (or the server is stopping): stop the upstream, settle the budget at what
        # arrived, and record exactly that.
        await stream.aclose()
        _record(request, caller, alias, started, 499, stream.partial_meta(), stream.partial_usage())
        raise
    meta = stream.meta if status == 200 else stream.partial_meta()
    _record(request, caller, alias, started, status, meta, stream.usage or stream.partial_usage())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def embeddings(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    caller = await request.app[_ACCESS].authenticate(_key_of(request))
    try:
        body, parts = await _json_body(request, _EMBED_FIELDS, caller)
    except _Reply as reply:
        return reply.response
    try:
        result = await request.app[_ROUTER].aembedding(
            body["model"], body.get("input"), **parts["known"], extra_body=parts["other"] or None,
            budget=caller.budget,
        )  # fmt: skip
    except PolyrouteError as err:
        response = _from_error(err)
        _record(request, caller, body["model"], started, response.status)
        return response
    _record(request, caller, body["model"], started, 200, result.meta, result.usage)
    return web.Response(body=result.model_dump_json().encode(), content_type="application/json",
                        headers=_headers(result.meta))  # fmt: skip


async def models(request: web.Request) -> web.Response:
    caller = await request.app[_ACCESS].authenticate(_key_of(request))
    created = int(request.app[_STARTED])
    allowed = caller.key.models if caller.key is not None else None
    data = [{"id": name, "object": "model", "created": created, "owned_by": "polyroute"}
            for name in sorted(request.app[_ROUTER].groups) if allowed is None or name in allowed]  # fmt: skip
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
    app[_STARTED] = time.time()
    app[_STORE] = store
    if router.shared is not None:  # budgets and key windows shared by every replica through Redis
        ledger: Any = RedisLedger(router.shared.link, on_unavailable=config.on_redis_unavailable)
        router.shared.flushers.append(ledger.flush)  # settlements owed after an outage reach Redis soon after
        app[_ACCESS] = Access(store, config.master_key, ledger, router.shared.windows)
    else:
        app[_ACCESS] = Access(store, config.master_key, store.ledger())
    spend_writer = app[_SPEND] = SpendWriter(store)
    app[_METRICS] = Metrics()

    async def start_writer(_app: web.Application) -> None:
        spend_writer.start()
        if router.shared is not None:  # Redis calls on this loop's own client, not worker threads
            router.shared.link.bind_loop()

    async def flush_spend(_app: web.Application) -> None:
        await spend_writer.stop()  # after in-flight requests finished: every record is written
        ledger = app[_ACCESS].ledger
        if hasattr(ledger, "close"):
            ledger.close()
        router.close()
        if router.shared is not None:
            await router.shared.link.aclose()
        store.close()

    app.on_startup.append(start_writer)
    app.on_cleanup.append(flush_spend)
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
