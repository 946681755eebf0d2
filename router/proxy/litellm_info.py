"""LiteLLM's read-only proxy routes: spend logs, model info and the two health probes.

- ``GET /spend/logs?api_key=&request_id=&start_date=YYYY-MM-DD&end_date=YYYY-MM-DD&summarize=`` (master key):
  one row per request, oldest first (the newest 10,000 at most); with both dates (and ``summarize`` not
  false), one row per UTC day, as LiteLLM does. ``end_date`` is inclusive.
- ``GET /model/info`` and ``GET /v1/model/info`` (master key): each deployment's ``model_name``,
  ``litellm_params`` without any credential, header or URL password, and ``model_info``.
- ``GET /health/liveliness`` (and ``/health/liveness``): ``"I'm alive!"``; ``GET /health/readiness``: 200 with
  the store's state, 503 when the store is unreachable. No key needed.

Example::

    curl "http://127.0.0.1:4000/spend/logs?api_key=$TOKEN" -H "Authorization: Bearer $MASTER"
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from ..pricing.prices import pico_to_usd
from .admin import json_response
from .litellm_keys import bool_query, invalid, iso, lookup, ref_param, require_master
from .state import CONFIG, ROUTER, SPEND, STORE
from .store import SpendRecord
from .validate import ClientError

_DAY = 86_400.0


def _date(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise invalid(f"{name} must be a date written YYYY-MM-DD (UTC)", name) from None


def log_row(record: SpendRecord) -> dict[str, Any]:
    """One request as a LiteLLM spend log row (``api_key`` is the key's token; None: the master key).
    Example: ``log_row(record)["spend"]`` is its cost in USD (0 when unknown; ``metadata.cost_known`` says)."""
    cost = record.cost_pico
    return {
        "request_id": record.request_id,
        "api_key": record.key_id,
        "spend": pico_to_usd(cost or 0),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens,
        "startTime": iso(record.ts - record.latency_ms / 1000),
        "endTime": iso(record.ts),
        "model": record.model,
        "model_group": record.alias,
        "custom_llm_provider": record.provider,
        "status": "success" if record.outcome == "ok" else "failure",
        "metadata": {
            "status_code": record.status,
            "outcome": record.outcome,
            "price_source": record.price_source,
            "cost_known": cost is not None,
        },
    }


async def spend_logs(request: web.Request) -> web.Response:
    """``GET /spend/logs``: rows per request, or totals per day for a date range (see the module doc)."""
    await require_master(request)
    if "user_id" in request.query:
        raise ClientError("user_id: polyroute keys have no users; filter by api_key", param="user_id")
    since, until = _date(request, "start_date"), _date(request, "end_date")
    if until is not None:
        until += _DAY  # the whole end day
    if since is not None and until is not None and since >= until:
        raise invalid("end_date must not be before start_date", "end_date")
    summarize = bool_query(request, "summarize", True)
    request_id = request.query.get("request_id")
    store = request.app[STORE]
    await request.app[SPEND].flush()  # requests answered before this call are in the store
    key_id = None
    if "api_key" in request.query:
        row = await asyncio.to_thread(lookup, store, ref_param(request.query["api_key"], "api_key"))
        if row is None:
            return json_response([])
        key_id = row.id
    if since is not None and until is not None and summarize and request_id is None:
        totals = await asyncio.to_thread(store.spend_by_day, since, until, key_id)
        days: dict[str, dict[str, Any]] = {}
        for day, key, alias, cost in totals:
            entry = days.setdefault(day, {"startTime": day, "spend": 0.0, "users": {}, "models": {}})
            usd = pico_to_usd(cost)
            entry["spend"] += usd
            entry["models"][alias or "unknown"] = entry["models"].get(alias or "unknown", 0.0) + usd
            entry[key or "master_key"] = entry.get(key or "master_key", 0.0) + usd
        return json_response(list(days.values()))
    records = await asyncio.to_thread(
        lambda: store.spend_log(key_id=key_id, request_id=request_id, since=since, until=until)
    )
    return json_response([log_row(r) for r in records])


# Parameter names that hold or carry a credential (api_key, aws_secret_access_key, extra_headers, ...).
_SECRET = re.compile(r"key|secret|token|passw|credential|auth|header|cookie|signature|session", re.IGNORECASE)


def _secret_name(name: str) -> bool:
    safe = name.startswith("max_") or "cost_per" in name or name.endswith("_tokens")
    return bool(_SECRET.search(name)) and not safe


def _clean_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return "[hidden]"
    if not parts.scheme or not parts.netloc:
        return value
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))  # no user:password, no query (?key=...)


def without_secrets(value: Any) -> Any:
    """``value`` (a deployment's params) with every credential-like entry left out and URLs stripped of
    passwords and query strings: ``without_secrets({"model": "m", "api_key": "sk-1"}) == {"model": "m"}``."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if not (isinstance(k, str) and _secret_name(k))}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _clean_url(value)
    return value


def model_entries(model_list: list[dict[str, Any]], served: set[str]) -> list[dict[str, Any]]:
    """LiteLLM's ``/model/info`` data for a config's ``model_list`` (``served``: the model names routed).
    Example: ``model_entries([{"model_name": "chat", "params": {"model": "openai/m"}}], {"chat"})``."""
    out = []
    for i, entry in enumerate(model_list):
        name = entry.get("model_name")
        params = entry.get("litellm_params", entry.get("params")) or {}
        info = entry.get("model_info") if isinstance(entry.get("model_info"), dict) else {}
        model = params.get("model") if isinstance(params, dict) else None
        ident = hashlib.sha256(f"{i}|{name}|{model}".encode()).hexdigest()[:32]
        out.append(
            {
                "model_name": name,
                "litellm_params": without_secrets(params) if isinstance(params, dict) else {},
                "model_info": {
                    **without_secrets(info),
                    "id": ident,
                    "db_model": False,
                    "served": name in served and not entry.get("unset_env"),
                },
            }
        )
    return out


async def model_info(request: web.Request) -> web.Response:
    """``GET /model/info``: the config's deployments, without their secrets."""
    await require_master(request)
    served = set(request.app[ROUTER].groups)
    return json_response({"data": model_entries(request.app[CONFIG].model_list, served)})


async def liveliness(request: web.Request) -> web.Response:
    """``GET /health/liveliness``: LiteLLM's answer, ``"I'm alive!"``."""
    return json_response("I'm alive!")


async def readiness(request: web.Request) -> web.Response:
    """``GET /health/readiness``: 200 while the store answers, else 503."""
    store_ok = await asyncio.to_thread(request.app[STORE].ping)
    body = {
        "status": "healthy" if store_ok else "unhealthy",
        "db": "connected" if store_ok else "Not connected",
        "cache": "redis" if request.app[ROUTER].shared is not None else None,
        "models": len(request.app[ROUTER].groups),
    }
    return json_response(body, status=200 if store_ok else 503)
