"""``/admin/...`` (master key only): virtual keys and spend reports.

- ``POST /admin/keys`` ``{alias, max_budget_usd, rpm, tpm, models, metadata, expires_at | duration_seconds}``
  creates a key — the key is in this response only, it is stored hashed.
- ``GET /admin/keys`` (each key with ``spend_usd``, ``reserved_usd`` held by requests in flight,
  ``remaining_budget_usd`` and ``requests``), ``PATCH /admin/keys/{id}``, ``DELETE /admin/keys/{id}`` (revoke).
- ``GET /admin/spend?group_by=key|model|provider&since=<unix seconds>&outcome=ok|failed|in_doubt``: per
  group, ``in_doubt_requests`` / ``in_doubt_cost_usd`` count requests a crash left in doubt (charged at
  their reservation), and ``in_doubt`` sums them over every group.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson
from aiohttp import web

from ..pricing.prices import PICO_PER_USD, pico_to_usd, to_decimal
from .body import read_body
from .keys import budget_name
from .state import ACCESS, SPEND, STORE
from .store import OUTCOMES, KeyRow
from .validate import ClientError, check_depth

_EDITABLE: dict[str, type | tuple[type, ...]] = {
    "alias": str,
    "max_budget_usd": (int, float),
    "rpm": int,
    "tpm": int,
    "models": list,
    "expires_at": (int, float),
    "metadata": dict,
}
# Sane bounds (and what the stores and ledgers hold: rpm/tpm are 32-bit columns in PostgreSQL, budgets are
# counted in integer picodollars).
_MAX = {
    "max_budget_usd": 1_000_000.0,
    "rpm": 1_000_000_000,
    "tpm": 2_000_000_000,
    "expires_at": 253_402_300_799.0,  # 9999-12-31
    "duration_seconds": 100 * 365 * 86_400.0,
}
_MAX_TEXT = 256  # alias and model names
_MAX_MODELS = 1_000
_MAX_METADATA = 16_000  # bytes of a key's metadata, as JSON


class AdminError(ClientError):
    """A bad admin request: a 400 naming the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_range(name: str, value: int | float, low_open: bool = True) -> None:
    top = _MAX[name]
    if not math.isfinite(value) or value > top or (value <= 0 if low_open else value < 0):
        low = "> 0" if low_open else ">= 0"
        raise AdminError(f"{name} must be {low} and at most {top:.0f}, got {_shown(value)}", param=name)


def key_fields(body: Any, *, creating: bool) -> dict[str, Any]:
    """Checked key settings from an admin request body."""
    if not isinstance(body, dict):
        raise AdminError("the body must be a JSON object")
    allowed = set(_EDITABLE) | ({"duration_seconds"} if creating else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise AdminError(
            f"unknown field {_shown(unknown[0])}; settable: {', '.join(sorted(allowed))}", param=unknown[0][:_MAX_TEXT]
        )
    fields: dict[str, Any] = {}
    value: Any
    for name, value in body.items():
        if name == "duration_seconds":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise AdminError("duration_seconds must be a positive number", param=name)
            _check_range(name, value)
            fields["expires_at"] = time.time() + float(value)
            continue
        kind = _EDITABLE[name]
        if value is not None and (isinstance(value, bool) or not _is(value, kind)):
            raise AdminError(
                f"{name} must be {getattr(kind, '__name__', 'a number')} or null, got {_shown(value)}", param=name
            )
        if name in ("max_budget_usd", "rpm", "tpm") and value is not None:
            if value <= 0:
                raise AdminError(f"{name} must be > 0 (or null for no limit)", param=name)
            _check_range(name, value)
        if name == "expires_at" and value is not None:
            _check_range(name, value, low_open=False)
        if name == "alias" and value is not None and len(value) > _MAX_TEXT:
            raise AdminError(f"alias must be at most {_MAX_TEXT} characters", param=name)
        if name == "models" and value is not None:
            if len(value) > _MAX_MODELS:
                raise AdminError(f"models must list at most {_MAX_MODELS} model aliases", param=name)
            if not all(isinstance(m, str) and 0 < len(m) <= _MAX_TEXT for m in value):
                raise AdminError("models must be a list of model aliases", param=name)
        if name == "metadata" and value is not None and len(orjson.dumps(value)) > _MAX_METADATA:
            raise AdminError(f"metadata must be at most {_MAX_METADATA} bytes of JSON", param=name)
        fields[name] = value
    return fields


async def json_body(request: web.Request) -> Any:
    """The request body as JSON (an empty body: {}); a 400 when it is not JSON."""
    raw = await read_body(request)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as e:
        raise AdminError(f"malformed JSON body: {e}") from None
    check_depth(body)
    return body


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def create_key(request: web.Request) -> web.Response:
    fields = key_fields(await json_body(request), creating=True)
    key, row = await asyncio.to_thread(request.app[STORE].create_key, **fields)
    return json_response({"key": key, **row.public()}, status=201)


async def key_spend(app: web.Application, rows: list[KeyRow]) -> dict[str, dict[str, Any]]:
    """Each key's ``spend_usd`` (its stored records), ``reserved_usd`` (held by its requests in flight),
    ``remaining_budget_usd`` (None: no budget) and ``requests``, by key id. Records of finished requests are
    written first, so a request answered before this call is counted.

    Example::

        (await key_spend(app, [row]))[row.id]  # {"spend_usd": 0.0012, "reserved_usd": 0.0, ...}
    """
    await app[SPEND].flush()
    ids = [r.id for r in rows]
    stored = await asyncio.to_thread(app[STORE].key_spend, ids if len(ids) <= 500 else None)
    ledger = app[ACCESS].ledger
    budgeted = [r for r in rows if r.max_budget_usd is not None]
    held = await asyncio.to_thread(lambda: {r.id: ledger.totals(budget_name(r.id)) for r in budgeted})
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        cost, requests = stored.get(row.id, (0, 0))
        spent, reserved = held.get(row.id, (0, 0))
        remaining = None
        if row.max_budget_usd is not None:
            limit = int((to_decimal(row.max_budget_usd) or 0) * PICO_PER_USD)
            remaining = pico_to_usd(max(0, limit - spent - reserved))
        out[row.id] = {
            "spend_usd": pico_to_usd(cost),
            "reserved_usd": pico_to_usd(reserved),
            "remaining_budget_usd": remaining,
            "requests": requests,
        }
    return out


async def list_keys(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[STORE].keys)
    spend = await key_spend(request.app, rows)
    return json_response({"object": "list", "data": [{**r.public(), **spend[r.id]} for r in rows]})


async def update_key(request: web.Request) -> web.Response:
    return await _edit_key(request, key_fields(await json_body(request), creating=False))


async def revoke_key(request: web.Request) -> web.Response:
    return await _edit_key(request, {"revoked_at": time.time()})


async def _edit_key(request: web.Request, fields: dict[str, Any]) -> web.Response:
    key_id = request.match_info["key_id"]
    row = await asyncio.to_thread(request.app[STORE].update_key, key_id, **fields)
    if row is None:
        return json_response({"error": {"message": f"no key {key_id!r}", "type": "invalid_request_error"}}, 404)
    request.app[ACCESS].forget(key_id)  # its cached limits and models are stale now
    return json_response(row.public())


async def spend(request: web.Request) -> web.Response:
    group_by = request.query.get("group_by", "key")
    if group_by not in ("key", "model", "provider"):
        raise AdminError("group_by must be key, model or provider")
    since_raw = request.query.get("since")
    try:
        since = float(since_raw) if since_raw else None
    except ValueError:
        since = math.nan
    if since is not None and not 0 <= since <= _MAX["expires_at"]:  # NaN fails the comparison too
        raise AdminError(f"since must be a unix time in seconds, got {_shown(since_raw)}", param="since")
    outcome = request.query.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise AdminError(f"outcome must be one of {', '.join(OUTCOMES)}, got {_shown(outcome)}", param="outcome")
    data = await asyncio.to_thread(request.app[STORE].spend_report, group_by, since, outcome)
    in_doubt = {
        "requests": sum(r["in_doubt_requests"] for r in data),
        "cost_usd": sum(r["in_doubt_cost_usd"] for r in data),
    }
    return json_response(
        {"object": "list", "group_by": group_by, "outcome": outcome, "in_doubt": in_doubt, "data": data}
    )
