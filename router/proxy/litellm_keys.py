"""LiteLLM's key management API over the proxy's one key store (the same keys as ``/admin/keys``).

Master key only, but a virtual key may read ``/key/info`` about itself:

- ``POST /key/generate`` ``{models, max_budget, duration: "30s"|"30m"|"30h"|"30d"|"2w"|"1mo"|"1y", key_alias,
  metadata, rpm_limit, tpm_limit}``: the key is in this answer only (it is stored hashed); ``token`` is its id.
- ``GET /key/info?key=<key or token>``: the key's settings with ``spend``, ``reserved_spend`` (held by its
  requests in flight) and ``remaining_budget``.
- ``POST /key/update`` ``{key, ...the generate fields}`` (null leaves a setting as it is, as in LiteLLM).
- ``POST /key/delete`` ``{keys: [...], key_aliases: [...]}``: the keys are revoked; their spend stays.
- ``GET /key/list?page=&size=&key_alias=&key_hash=<token>&return_full_object=&sort_by=&sort_order=``.

Field names and status codes are LiteLLM's: 200 on success, 401 without the master key, 403 for a key asking
about another, 404 for an unknown key, 422 for a malformed value, 400 for a setting polyroute does not have.

Example::

    curl -X POST http://127.0.0.1:4000/key/generate -H "Authorization: Bearer $MASTER" \\
        -d '{"models": ["chat"], "max_budget": 10, "duration": "30d", "key_alias": "team-a"}'
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .admin import AdminError, json_body, json_response, key_fields, key_spend
from .keys import Caller, Refused
from .state import ACCESS, CONFIG, STORE, key_of
from .store import KeyRow, SqlStore, hash_key
from .validate import ClientError

# LiteLLM's name -> the store's.
_FIELDS = {
    "key_alias": "alias",
    "models": "models",
    "max_budget": "max_budget_usd",
    "rpm_limit": "rpm",
    "tpm_limit": "tpm",
    "metadata": "metadata",
}
_LITELLM_NAME = {store: litellm for litellm, store in _FIELDS.items()}
# LiteLLM key settings polyroute has no equivalent for: refused by name rather than silently dropped.
_UNSUPPORTED = frozenset(
    {
        "team_id",
        "user_id",
        "organization_id",
        "project_id",
        "budget_id",
        "budget_duration",
        "soft_budget",
        "max_parallel_requests",
        "aliases",
        "config",
        "permissions",
        "model_max_budget",
        "model_rpm_limit",
        "model_tpm_limit",
        "guardrails",
        "prompts",
        "blocked",
        "tags",
        "spend",
        "enforced_params",
        "allowed_cache_controls",
        "allowed_routes",
        "send_invite_email",
        "key_type",
        "object_permission",
        "auto_rotate",
        "rotation_interval",
        "temp_budget_increase",
        "temp_budget_expiry",
        "key",  # a key chosen by the caller: polyroute makes every key itself
    }
)
_KINDS = {
    "be int ": "be a whole number ",
    "be list ": "be a list ",
    "be dict ": "be a JSON object ",
    "be str ": "be a string ",
}
NO_MODELS = "no-default-models"  # LiteLLM's name for "no model at all" (its empty list means every model)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "mo": 30 * 86_400, "y": 365 * 86_400}
_DURATION = re.compile(r"(\d{1,9})(s|m|h|d|w|mo|y)")
_MAX_DURATION = 100 * 365 * 86_400
_MAX_REF = 256  # a key or token given to find a key
_MAX_LIST = 1_000  # keys or aliases in one delete


def invalid(message: str, param: str | None = None) -> ClientError:
    """A malformed value: LiteLLM (FastAPI) answers 422."""
    return ClientError(message, param=param, code="invalid_value", status=422)


async def require_master(request: web.Request) -> None:
    """Raise 401 unless the caller holds the master key (or the proxy runs without one, ``--dev``)."""
    if request.app[CONFIG].master_key is not None and not request.app[ACCESS].is_master(key_of(request)):
        raise Refused(401, f"{request.path} needs the master key", "admin_only")


def iso(ts: float | None) -> str | None:
    """A unix time as LiteLLM writes times: ISO 8601 in UTC (``iso(0) == "1970-01-01T00:00:00+00:00"``)."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def duration_seconds(value: Any) -> float:
    """LiteLLM's ``duration``: ``"30s"``, ``"30m"``, ``"30h"``, ``"30d"``, ``"2w"``, ``"1mo"`` (30 days),
    ``"1y"`` (365 days) — ``duration_seconds("2h") == 7200``."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise invalid('duration must be a string like "30s", "30m", "30h", "30d", "2w", "1mo" or "1y"', "duration")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= _MAX_DURATION:
        raise invalid("duration must be more than 0 seconds and at most 100 years", "duration")
    return float(seconds)


def settings(body: Any, *, updating: bool) -> dict[str, Any]:
    """The store's key settings from a LiteLLM generate/update body (checked by the admin API's rules).

    Example::

        settings({"max_budget": 5, "rpm_limit": 60, "models": []}, updating=False)
        # {"max_budget_usd": 5, "rpm": 60, "models": None}
    """
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    supported = sorted([*_FIELDS, "duration", *(["key"] if updating else [])])
    for name in body:
        if name in supported:
            continue
        shown = name if len(name) <= 60 else name[:57] + "..."
        if name in _UNSUPPORTED:
            raise ClientError(
                f"{shown!r} is a LiteLLM key setting polyroute does not support; supported: {', '.join(supported)}",
                param=name,
                code="unsupported_field",
            )
        raise ClientError(f"unknown field {shown!r}; supported: {', '.join(supported)}", param=name[:256])
    admin_body: dict[str, Any] = {}
    expires_at = None
    for name, value in body.items():
        if name == "key" or (value is None and (updating or name == "duration")):
            continue  # LiteLLM: a null leaves the setting as it is (on generate: its default, none)
        if name == "duration":
            expires_at = time.time() + duration_seconds(value)
            continue
        if name == "models" and isinstance(value, list):
            value = None if not value else [] if value == [NO_MODELS] else value
        admin_body[_FIELDS[name]] = value
    try:
        fields = key_fields(admin_body, creating=False)
    except AdminError as e:
        litellm = _LITELLM_NAME.get(e.param or "", e.param)
        message = e.message.replace(e.param, litellm, 1) if e.param and litellm else e.message
        for admin_word, word in _KINDS.items():
            message = message.replace(admin_word, word)
        raise invalid(message, litellm) from None
    if expires_at is not None:
        fields["expires_at"] = expires_at
    return fields


def ref_param(value: Any, param: str) -> str:
    """``value`` checked as a key or token given to find a key (its text is never echoed)."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_REF:
        raise invalid(f"{param} must be a key (sk-...) or a key's token, as a string", param)
    return value


def lookup(store: SqlStore, ref: str) -> KeyRow | None:
    """The key that ``ref`` names, deleted or not: the key itself (``sk-...``) or its token (id)."""
    return store.key_by_hash(hash_key(ref)) if ref.startswith("sk-") else store.key_by_id(ref)


def find_key(store: SqlStore, ref: str) -> KeyRow | None:
    """The live key (not deleted) that ``ref`` names (see :func:`lookup`)."""
    row = lookup(store, ref)
    return None if row is None or row.revoked_at is not None else row


def not_found(param: str = "key") -> ClientError:
    """LiteLLM's 404 for a key it does not know (``param``: where it was named; the key is never echoed)."""
    return ClientError("key not found (deleted, or never created here)", param=param, code="not_found", status=404)


def key_info(row: KeyRow, spend: dict[str, Any]) -> dict[str, Any]:
    """A key as LiteLLM's ``/key/info`` shows it (never the key, nor its hash); ``spend`` as from
    :func:`router.proxy.admin.key_spend`. Example: ``key_info(row, spend)["remaining_budget"]``."""
    models = [] if row.models is None else row.models or [NO_MODELS]
    return {
        "token": row.id,
        "key_name": row.key_hint,
        "key_alias": row.alias,
        "spend": spend["spend_usd"],
        "max_budget": row.max_budget_usd,
        "reserved_spend": spend["reserved_usd"],
        "remaining_budget": spend["remaining_budget_usd"],
        "expires": iso(row.expires_at),
        "models": models,
        "metadata": row.metadata or {},
        "rpm_limit": row.rpm,
        "tpm_limit": row.tpm,
        "created_at": iso(row.created_at),
        "blocked": False,
    }


async def _info_of(request: web.Request, row: KeyRow) -> dict[str, Any]:
    return key_info(row, (await key_spend(request.app, [row]))[row.id])


async def _unique_alias(store: SqlStore, alias: Any, own_id: str | None = None) -> None:
    if not isinstance(alias, str):
        return
    taken = [r for r in await asyncio.to_thread(store.keys_by_alias, alias) if r.revoked_at is None and r.id != own_id]
    if taken:
        raise ClientError(
            f"key_alias {alias!r} is already used by key {taken[0].id}: key aliases are unique",
            param="key_alias",
            code="alias_taken",
        )


async def generate(request: web.Request) -> web.Response:
    """``POST /key/generate``: a new key, in this answer only."""
    await require_master(request)
    body = await json_body(request)
    fields = settings(body, updating=False)
    store = request.app[STORE]
    await _unique_alias(store, fields.get("alias"))
    key, row = await asyncio.to_thread(store.create_key, **fields)
    zero = {"spend_usd": 0.0, "reserved_usd": 0.0, "remaining_budget_usd": row.max_budget_usd, "requests": 0}
    answer = {"key": key, **key_info(row, zero), "token_id": row.id, "duration": body.get("duration")}
    return json_response(answer)


async def info(request: web.Request) -> web.Response:
    """``GET /key/info``: the master key about any key, a virtual key about itself."""
    caller: Caller = await request.app[ACCESS].authenticate(key_of(request))
    store = request.app[STORE]
    ref = request.query.get("key")
    if caller.key is not None:  # a virtual key: itself only
        row = caller.key if ref is None else await asyncio.to_thread(find_key, store, ref_param(ref, "key"))
        if row is None or row.id != caller.key.id:
            raise Refused(403, "a key may only read its own info; use the master key for others", "forbidden")
    else:
        if ref is None:
            raise invalid("key is required: ?key=<the key or its token>", "key")
        row = await asyncio.to_thread(find_key, store, ref_param(ref, "key"))
        if row is None:
            raise not_found()
    return json_response({"key": row.id, "info": await _info_of(request, row)})


async def update(request: web.Request) -> web.Response:
    """``POST /key/update``: the settings given change; the key's cached limits are dropped."""
    await require_master(request)
    body = await json_body(request)
    if not isinstance(body, dict) or "key" not in body:
        raise invalid("key is required: the key (sk-...) or its token", "key")
    fields = settings(body, updating=True)
    store = request.app[STORE]
    row = await asyncio.to_thread(find_key, store, ref_param(body["key"], "key"))
    if row is None:
        raise not_found()
    await _unique_alias(store, fields.get("alias"), row.id)
    updated = await asyncio.to_thread(store.update_key, row.id, **fields)
    if updated is None:
        raise not_found()
    request.app[ACCESS].forget(row.id)
    return json_response({"key": row.id, **await _info_of(request, updated)})


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > _MAX_LIST or not all(isinstance(v, str) for v in value):
        raise invalid(f"{name} must be a list of at most {_MAX_LIST} strings", name)
    return [ref_param(v, name) for v in value]


async def delete(request: web.Request) -> web.Response:
    """``POST /key/delete``: every key named is revoked, or none is (an unknown one is a 404)."""
    await require_master(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise invalid('the body must be a JSON object: {"keys": [...]} or {"key_aliases": [...]}')
    unknown = sorted(set(body) - {"keys", "key_aliases"})
    if unknown:
        raise ClientError(f"unknown field {unknown[0][:60]!r}; supported: key_aliases, keys", param=unknown[0][:256])
    refs, aliases = _strings(body, "keys"), _strings(body, "key_aliases")
    if not refs and not aliases:
        raise invalid('give the keys to delete: {"keys": [...]} or {"key_aliases": [...]}', "keys")
    store = request.app[STORE]

    def resolve() -> list[KeyRow]:
        rows: list[KeyRow] = []
        for i, ref in enumerate(refs):
            row = find_key(store, ref)
            if row is None:  # never echo what was sent: it may be a key
                raise not_found(f"keys[{i}]")
            rows.append(row)
        for alias in aliases:
            found = [r for r in store.keys_by_alias(alias) if r.revoked_at is None]
            if not found:
                raise ClientError(
                    f"no key has the alias {alias[:60]!r}", param="key_aliases", code="not_found", status=404
                )
            rows += found
        return rows

    rows = await asyncio.to_thread(resolve)
    await asyncio.to_thread(store.revoke_keys, list(dict.fromkeys(r.id for r in rows)), time.time())
    for row in rows:
        request.app[ACCESS].forget(row.id)
    deleted = [r.id for r in rows[: len(refs)]] + aliases
    return json_response({"deleted_keys": deleted})


_SORTS = ("created_at", "spend", "max_budget", "key_alias", "token")


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise invalid(f"{name} must be a whole number from {low} to {high}", name)
    return value


def bool_query(request: web.Request, name: str, default: bool) -> bool:
    """A true/false query parameter (``?return_full_object=true``)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false", "1", "0"):
        raise invalid(f"{name} must be true or false", name)
    return raw.lower() in ("true", "1")


async def list_keys(request: web.Request) -> web.Response:
    """``GET /key/list``: live keys' tokens (or whole objects), a page at a time."""
    await require_master(request)
    page = _int_query(request, "page", 1, 1, 1_000_000)
    size = _int_query(request, "size", 10, 1, 100)
    full = bool_query(request, "return_full_object", False)
    sort_by = request.query.get("sort_by")
    order = request.query.get("sort_order", "desc").lower()
    if sort_by is not None and sort_by not in _SORTS:
        raise ClientError(f"sort_by must be one of {', '.join(_SORTS)}", param="sort_by")
    if order not in ("asc", "desc"):
        raise ClientError("sort_order must be asc or desc", param="sort_order")
    rows = [r for r in await asyncio.to_thread(request.app[STORE].keys) if r.revoked_at is None]
    alias, token = request.query.get("key_alias"), request.query.get("key_hash")
    rows = [r for r in rows if (alias is None or r.alias == alias) and (token is None or r.id == token)]
    spend = await key_spend(request.app, rows) if full or sort_by == "spend" else {}
    if sort_by is not None:
        value: Callable[[KeyRow], Any] = {
            "created_at": lambda r: r.created_at,
            "spend": lambda r: spend[r.id]["spend_usd"],
            "max_budget": lambda r: r.max_budget_usd if r.max_budget_usd is not None else math.inf,
            "key_alias": lambda r: r.alias or "",
            "token": lambda r: r.id,
        }[sort_by]
        rows.sort(key=value, reverse=order == "desc")
    shown = rows[(page - 1) * size : page * size]
    keys: list[Any] = [key_info(r, spend[r.id]) if full else r.id for r in shown]
    return json_response(
        {"keys": keys, "total_count": len(rows), "current_page": page, "total_pages": math.ceil(len(rows) / size)}
    )
