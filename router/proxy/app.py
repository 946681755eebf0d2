"""The OpenAI-compatible HTTP proxy (aiohttp): one process, one event loop, one Router.

Endpoints: the task endpoints of :mod:`router.proxy.endpoints` (``POST /v1/chat/completions``, stream and
not, ``POST /v1/embeddings``: one table, one handler), ``GET /v1/models`` and ``GET /v1/models/{id}`` (ids may
hold ``/``) — all also without the ``/v1`` prefix — ``GET /metrics``, ``GET /health``, ``GET /health/ready``,
the admin API (:mod:`router.proxy.admin`) and LiteLLM's key, spend, model-info and health routes
(:mod:`router.proxy.litellm_keys`, :mod:`router.proxy.litellm_info`). Deployments without upstream
credentials are named in one warning at startup (:mod:`router.credentials`).
Every error is OpenAI's error JSON with the right status (:mod:`router.proxy.errors`), so the OpenAI SDK
raises its matching exception. Clients can never choose the upstream or override a field the proxy owns
(see :mod:`router.proxy.validate`); bodies are read under a size, time and memory limit
(:mod:`router.proxy.body`). Errors shown to virtual keys never name the proxy's deployments, upstream hosts
or URLs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..credentials import missing_warning
from ..routing.router import Router
from ..shared.ledger import RedisLedger
from . import admin, litellm_info, litellm_keys
from .body import BODY_LIMITS, BodyLimits
from .config import ConfigError, ProxyConfig
from .endpoints import PREFIXES, Handler, add_endpoints
from .errors import Shown, error_response
from .flight import FlightJournal, Recovery, journal_dir
from .keys import Access, Refused
from .metrics import Metrics, shared_metrics
from .spend import SpendWriter
from .state import ACCESS, CONFIG, FLIGHT, JOURNAL, METRICS, RECOVERY, ROUTER, SHOWN, SPEND, STARTED, STORE, key_of
from .store import SpendRecord, SqlStore
from .validate import ClientError

__all__ = ["build_app", "error_response"]
log = logging.getLogger("polyroute.proxy")


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    admin_path = request.path.startswith("/admin/")
    if admin_path and request.app[CONFIG].master_key is not None and not request.app[ACCESS].is_master(key_of(request)):
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
        limit = request.app[CONFIG].max_request_bytes
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


async def _end_unended(request: web.Request, response: web.StreamResponse) -> None:
    """A handler that failed unexpectedly (a 500 from the middleware) still ends its flight with a record."""
    flight = request.get(FLIGHT)
    if flight is not None and not flight.ended and type(response) is web.Response:
        record = SpendRecord(
            time.time(), flight.key_id, flight.alias, None, None, 0, 0, None, None, 0.0, response.status
        )
        flight.journal.end(flight, record)
        request.app[SPEND].add(record)


async def _visible_models(request: web.Request) -> list[str]:
    """The model names the caller's key may use (all of them for the master key or without auth)."""
    caller = await request.app[ACCESS].authenticate(key_of(request))
    allowed = caller.key.models if caller.key is not None else None
    return [name for name in request.app[ROUTER].listed() if allowed is None or name in allowed]


def _model_object(request: web.Request, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(request.app[STARTED]), "owned_by": "polyroute"}


async def models(request: web.Request) -> web.Response:
    data = [_model_object(request, name) for name in await _visible_models(request)]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def model(request: web.Request) -> web.Response:
    """OpenAI's Model object for one model name the caller may use; 404 for any other (unknown or not its)."""
    name = request.match_info["model"]
    if name not in await _visible_models(request):
        return error_response(
            404,
            f"The model {name!r} does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return web.Response(body=orjson.dumps(_model_object(request, name)), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    if request.app[CONFIG].master_key is not None and not request.app[ACCESS].is_master(key_of(request)):
        return error_response(401, "/metrics needs the master key (scrape with a bearer token)", code="admin_only")
    text = request.app[METRICS].render()
    shared = request.app[ROUTER].shared
    if shared is not None:
        text += shared_metrics(shared, request.app[ACCESS].ledger)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 while requests can be served: ``degraded`` when Redis is away (local state, budgets per
    ``on_redis_unavailable``), 503 when the store is unreachable."""
    router = request.app[ROUTER]
    store_ok = await asyncio.to_thread(request.app[STORE].ping)
    body: dict[str, Any] = {"status": "ready", "models": len(router.groups), "store": store_ok}
    if router.shared is not None:
        body.update(router.shared.status())
        body["budgets_when_redis_down"] = request.app[CONFIG].on_redis_unavailable
        if not router.shared.link.up:
            body["status"] = "degraded"
    if not store_ok:
        body["status"] = "store unreachable"
    return web.json_response(body, status=200 if store_ok else 503)


# The proxy's routes besides the task endpoints (endpoints.py) and the model list: (method, path, handler).
# /admin/* and LiteLLM's /key/*, /spend/logs, /model/info need the master key (a key may read its own
# /key/info); /health/* need none.
ROUTES: tuple[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]], ...] = (
    ("POST", "/admin/keys", admin.create_key),
    ("GET", "/admin/keys", admin.list_keys),
    ("PATCH", "/admin/keys/{key_id}", admin.update_key),
    ("DELETE", "/admin/keys/{key_id}", admin.revoke_key),
    ("GET", "/admin/spend", admin.spend),
    ("GET", "/spend/logs", litellm_info.spend_logs),
    ("GET", "/model/info", litellm_info.model_info),
    ("GET", "/v1/model/info", litellm_info.model_info),
    ("GET", "/health/liveliness", litellm_info.liveliness),
    ("GET", "/health/liveness", litellm_info.liveliness),
    ("GET", "/health/readiness", litellm_info.readiness),
    ("POST", "/key/generate", litellm_keys.generate),
    ("GET", "/key/info", litellm_keys.info),
    ("POST", "/key/update", litellm_keys.update),
    ("POST", "/key/delete", litellm_keys.delete),
    ("GET", "/key/list", litellm_keys.list_keys),
)


def build_app(config: ProxyConfig, router: Router, store: SqlStore) -> web.Application:
    """The aiohttp application serving ``router`` under ``config``'s rules, with keys and spend in ``store``."""
    missing = missing_warning(
        router.groups, "routing skips them, and a request only they could serve gets a 503 (server misconfigured)"
    )
    if missing:  # once, at startup: the operator learns what to set (and restarts) before a client finds out
        log.warning("%s", missing)
    app = web.Application(middlewares=[_errors_and_auth], client_max_size=config.max_request_bytes)
    app[ROUTER] = router
    app[CONFIG] = config
    app[BODY_LIMITS] = BodyLimits(config.max_request_bytes, config.request_body_timeout, config.max_pending_body_bytes)
    app[SHOWN] = Shown(router)
    app[STARTED] = time.time()
    app[STORE] = store
    if router.shared is not None:  # budgets and key windows shared by every replica through Redis
        ledger: Any = RedisLedger(router.shared.link, on_unavailable=config.on_redis_unavailable)
        router.shared.flushers.append(ledger.flush)  # settlements owed after an outage reach Redis soon after
        app[ACCESS] = Access(store, config.master_key, ledger, router.shared.windows)
    else:
        app[ACCESS] = Access(store, config.master_key, store.ledger())
    # Crash safety (router/proxy/flight.py): every request is journaled before it is sent; at start and every
    # sweep_interval, what dead processes left (journals here, reservations of expired leases) is resolved.
    folder = journal_dir(store, config.journal_dir)
    try:
        journal = app[JOURNAL] = FlightJournal(folder, store.identity())
    except OSError as e:
        raise ConfigError(
            f"{config.source}: general_settings.journal_dir: cannot write the flight journal in "
            f"{folder}: {e.strerror or e}"
        ) from None
    recovery = app[RECOVERY] = Recovery(journal, store, app[ACCESS].ledger, lease_seconds=config.lease_seconds)
    ledger_now: Any = app[ACCESS].ledger
    redis_lease = router.shared is not None and isinstance(ledger_now, RedisLedger)
    if router.shared is not None and redis_lease:  # the lease is renewed by every sync: no extra round trip
        router.shared.heartbeats.append(ledger_now.add_heartbeat)
    spend_writer = app[SPEND] = SpendWriter(store, on_stored=journal.stored)
    app[METRICS] = Metrics()
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
        ledger = app[ACCESS].ledger
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
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    add_endpoints(app)
    for prefix in PREFIXES:
        app.router.add_get(f"{prefix}/models", models)
        app.router.add_get(f"{prefix}/models/{{model:.+}}", model)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    return app
