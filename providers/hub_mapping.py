"""Provider model ids from the Hub mapping API, cached with a TTL.

``GET {HF_ENDPOINT}/api/models/{org}/{model}?expand[]=inferenceProviderMapping`` tells, per
provider, the provider's own id for a Hub model. Needed only for non-chat tasks through
``router.huggingface.co/{provider}/...``. Successes are cached for ``ttl`` seconds, failures for
``failure_ttl`` (so a typo does not hammer the Hub). The async path never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from typing import Any

import orjson

from .defaults import ProcessDefault
from .errors import NotFoundError, PolyrouteError, UnprocessableResponseError, error_from_response, rebuild_error
from .transport import AsyncTransport, HttpRequest, HttpResponse, SyncTransport, Timeouts

DEFAULT_HUB = "https://huggingface.co"
_LOOKUP_TIMEOUTS = Timeouts(total=20.0, connect=5.0)


def hub_url() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB).rstrip("/")


def _token_key(token: str | None) -> str:
    # Mappings can differ by token (private / gated repos, a revoked token): cache per token,
    # by a hash so the token itself is not kept around as a dict key.
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else "-"


def _fresh(err: PolyrouteError) -> PolyrouteError:
    # A cached failure is re-raised as a new instance: re-raising one object grows its traceback
    # and keeps every frame it passed through alive.
    return rebuild_error(type(err), err.message, dict(err.__dict__))


class HubMappingCache:
    """``provider_model_id(model, provider)`` with a TTL cache and single-flight async lookups.

    Example::

        cache = HubMappingCache()
        mapping = cache.mapping(transport, "Qwen/Qwen3-Embedding-8B", token)
        HubMappingCache.pick(mapping, "Qwen/Qwen3-Embedding-8B", "nebius")
    """

    def __init__(self, ttl: float = 600.0, failure_ttl: float = 30.0) -> None:
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._entries: dict[tuple[str, str, str], tuple[float, dict[str, Any] | PolyrouteError]] = {}
        self._lock = threading.Lock()
        self._inflight: dict[tuple[int, str, str, str], asyncio.Task[dict[str, Any]]] = {}

    def clear(self) -> None:
        """Forget every cached mapping and failure."""
        with self._lock:
            self._entries.clear()

    def _request(self, model: str, token: str | None) -> HttpRequest:
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        return HttpRequest("GET", f"{hub_url()}/api/models/{model}?expand[]=inferenceProviderMapping", headers)

    def _cached(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        value = entry[1]
        if isinstance(value, PolyrouteError):
            raise _fresh(value)
        return value

    def _store(
        self, key: tuple[str, str, str], response: HttpResponse | PolyrouteError, model: str, token: str | None
    ) -> dict[str, Any]:
        try:
            if isinstance(response, PolyrouteError):
                raise response
            mapping = _parse(response, model, token)
        except PolyrouteError as err:
            with self._lock:
                self._entries[key] = (time.monotonic() + self.failure_ttl, _fresh(err))
            raise
        with self._lock:
            self._entries[key] = (time.monotonic() + self.ttl, mapping)
        return mapping

    def mapping(self, transport: SyncTransport, model: str, token: str | None) -> dict[str, Any]:
        key = (hub_url(), model, _token_key(token))
        cached = self._cached(key)
        if cached is not None:
            return cached
        try:
            response: HttpResponse | PolyrouteError = transport.send(self._request(model, token), _LOOKUP_TIMEOUTS)
        except PolyrouteError as err:
            response = err
        return self._store(key, response, model, token)

    async def _fetch(
        self, transport: AsyncTransport, key: tuple[str, str, str], model: str, token: str | None
    ) -> dict[str, Any]:
        try:
            response: HttpResponse | PolyrouteError = await transport.send(
                self._request(model, token), _LOOKUP_TIMEOUTS
            )
        except PolyrouteError as err:
            response = err
        return self._store(key, response, model, token)

    def _landed(self, flight_key: tuple[int, str, str, str], task: asyncio.Task[dict[str, Any]]) -> None:
        self._inflight.pop(flight_key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a lookup nobody waits for any more logs nothing

    async def amapping(self, transport: AsyncTransport, model: str, token: str | None) -> dict[str, Any]:
        key = (hub_url(), model, _token_key(token))
        cached = self._cached(key)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        flight_key = (id(loop), *key)
        task = self._inflight.get(flight_key)
        if task is None:
            # The lookup runs in its own task: a caller that is cancelled stops waiting for it,
            # without cancelling the lookup the other callers share.
            task = loop.create_task(self._fetch(transport, key, model, token))
            self._inflight[flight_key] = task
            task.add_done_callback(lambda done: self._landed(flight_key, done))
        try:
            return await asyncio.shield(task)
        except PolyrouteError as err:
            raise _fresh(err) from None

    @staticmethod
    def pick(mapping: dict[str, Any], model: str, provider: str) -> str:
        entry = mapping.get(provider)
        if not isinstance(entry, dict) or not entry.get("providerId"):
            available = ", ".join(sorted(mapping)) or "none"
            raise NotFoundError(
                f"{model!r} is not available on HF provider {provider!r} (providers for it: {available})",
                status_code=404,
                provider=f"huggingface:{provider}",
                model=model,
            )
        return str(entry["providerId"])


def _parse(response: HttpResponse, model: str, token: str | None) -> dict[str, Any]:
    secrets = (token,) if token else ()
    if response.status >= 400:
        raise error_from_response(
            response.status,
            response.headers,
            response.content,
            provider="huggingface-hub",
            model=model,
            secrets=secrets,
        )
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise UnprocessableResponseError(
            "the Hub's model info is not JSON", provider="huggingface-hub", model=model
        ) from None
    mapping = data.get("inferenceProviderMapping") if isinstance(data, dict) else None
    if isinstance(mapping, list):  # list endpoints return [{provider, providerId, ...}]
        mapping = {m.get("provider"): m for m in mapping if isinstance(m, dict)}
    if not isinstance(mapping, dict):
        mapping = {}
    return mapping


_HUB_CACHE = ProcessDefault(HubMappingCache)


def default_hub_cache() -> HubMappingCache:
    """The process-wide mapping cache."""
    return _HUB_CACHE.get()
