"""The pricing catalog: providers' own price lists, fetched lazily, cached, refreshed, with fallbacks.

Never fetched at import. The first lookup for a source fetches it (one fetch however many callers
arrive at once); the result is kept in memory and on disk for ``ttl`` seconds; an older entry is
still served while a background refresh runs. When a source cannot be reached, the newest disk copy
is used, then the bundled snapshot — and the record says so (``price_source="snapshot"``, old
``price_fetched_at``). User overrides (Python or YAML) always win.

Which families have a catalog, where it is and how to read it is the provider layer's knowledge
(:mod:`providers.catalogs`); this module iterates the registered sources and tests the provider
spec's capabilities (``gateway``, ``self_hosted``), never a family's name.

Example::

    catalog = Catalog(ttl=3600)
    catalog.set_price("huggingface/together/deepseek-ai/DeepSeek-R1", input_per_million=3, output_per_million=7)
    catalog.lookup(target, served_provider="together").price
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from providers.catalogs import CATALOG_SOURCES, CatalogSource
from providers.defaults import ProcessDefault
from providers.errors import InvalidRequestArgumentError, PolyrouteError
from providers.registry import Registry, UnknownSubproviderError, default_registry
from providers.spec import Target
from providers.transport import HttpRequest, SyncTransport, Timeouts

from ..calibration import PromptCounts, counts_file
from .prices import Offer, Price, to_decimal

_FETCH_TIMEOUTS = Timeouts(total=20.0, connect=5.0)
RETRY_AFTER_FAILURE = 60.0  # seconds before a failed catalog fetch is tried again
_OVERRIDE_KEYS = frozenset(
    {
        "model",
        "input_per_million",
        "output_per_million",
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_per_million",
        "context_length",
        "max_output_tokens",
    }
)
SNAPSHOT_PATH = Path(__file__).with_name("snapshot.json")
_PLACEHOLDER_BASE = "http://pricing.invalid"  # for model strings that need an api_base to resolve


def default_cache_dir() -> Path:
    """``$POLYROUTE_CACHE_DIR``, else ``$XDG_CACHE_HOME/polyroute``, else ``~/.cache/polyroute``."""
    env = os.environ.get("POLYROUTE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polyroute"


def source_url(family: str, registry: Registry, sources: Mapping[str, CatalogSource] = CATALOG_SOURCES) -> str:
    """The catalog URL of a family, following the same base-URL overrides as calls do.

    Raises KeyError when the family has no registered catalog source.
    """
    return sources[family].url(registry.get(family))


@dataclass(slots=True)
class SourceData:
    """One source's offers, keyed by (provider, model), with where and when they came from."""

    url: str
    fetched_at: float
    origin: str  # "live", "disk" or "snapshot"
    offers: dict[tuple[str, str], Offer]
    error: str | None = None  # why a fallback is in use
    _by_model: dict[str, list[Offer]] | None = None

    def by_model(self, model: str) -> list[Offer]:
        """Every provider's offer of one model."""
        if self._by_model is None:
            index: dict[str, list[Offer]] = {}
            for offer in self.offers.values():
                index.setdefault(offer.model, []).append(offer)
            self._by_model = index
        return self._by_model.get(model, [])


@dataclass(slots=True)
class PriceLookup:
    """The price to charge for one call, or why there is none."""

    price: Price | None
    offer: Offer | None = None
    reason: str | None = None  # set when price is None


@dataclass(slots=True)
class _Override:
    price: Price
    context_length: int | None = None
    max_output_tokens: int | None = None


@dataclass
class _State:
    data: SourceData | None = None
    refreshing: bool = False
    failed_at: float | None = None  # last failed fetch: retried only after RETRY_AFTER_FAILURE
    lock: threading.Lock = field(default_factory=threading.Lock)
    tasks: dict[int, asyncio.Task[SourceData]] = field(default_factory=dict)


class Catalog:
    """Prices and model facts from the providers' catalogs, plus overrides.

    ``transport`` (sync) is used for fetches; by default the process-wide pool. ``cache_dir=False``
    keeps nothing on disk. ``snapshot`` is the offline fallback file (the bundled one by default).
    ``sources`` maps families to their catalogs: by default the provider layer's registry
    (:data:`providers.catalogs.CATALOG_SOURCES`), read at each use so later registrations count.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        cache_dir: str | Path | bool | None = None,
        snapshot: str | Path | None = SNAPSHOT_PATH,
        transport: SyncTransport | None = None,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.time,
        sources: Mapping[str, CatalogSource] | None = None,
    ) -> None:
        self.ttl = ttl
        self.cache_dir: Path | None = (
            None if cache_dir is False else default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)  # type: ignore[arg-type]
        )
        self.snapshot = Path(snapshot) if snapshot else None
        self._transport = transport
        self.registry = registry or default_registry()
        self.clock = clock
        self.sources: Mapping[str, CatalogSource] = CATALOG_SOURCES if sources is None else sources
        self._states: dict[str, _State] = {}
        self._states_lock = threading.Lock()
        self._overrides: dict[tuple[str, str | None, str], _Override] = {}
        self.fetch_count = 0  # live fetches made (visible for tests and `polyroute models`)
        # Prompt overheads learned from usage (budgets bound prompts with them), kept beside the catalog cache.
        self.prompt_counts = PromptCounts(counts_file(self.cache_dir))

    # ---------------------------------------------------------------- overrides
    def set_price(
        self,
        model: str,
        *,
        input_per_million: Any = None,
        output_per_million: Any = None,
        input_cost_per_token: Any = None,
        output_cost_per_token: Any = None,
        cache_read_per_million: Any = None,
        context_length: int | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        """Set the price of a model string (wins over every catalog). Per million or per token.

        A gateway model without a sub-provider (``huggingface/<org>/<model>``) prices every
        sub-provider of that model; with one (``huggingface/<provider>/<org>/<model>``) that one;
        a self-hosted family's model string (``huggingface/tgi``) every server of that family.
        """
        per_m_in = _per_million(model, "input", input_per_million, input_cost_per_token)
        per_m_out = _per_million(model, "output", output_per_million, output_cost_per_token)
        target = self.resolve(model)
        key = (target.provider, target.subprovider, target.model)
        cache_read = to_decimal(cache_read_per_million)
        self._overrides[key] = _Override(
            Price(per_m_in, per_m_out, "config", None, cache_read), context_length, max_output_tokens
        )

    def load_overrides(self, entries: Iterable[dict[str, Any]], source: str = "<config>") -> None:
        """Overrides from config: ``[{model, input_cost_per_token | input_per_million, ...}]``."""
        allowed = _OVERRIDE_KEYS
        for i, entry in enumerate(entries):
            where = f"{source}: pricing[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
                raise InvalidRequestArgumentError(f"{where}: expected a mapping with a 'model' string, got {entry!r}")
            unknown = sorted(set(entry) - allowed)
            if unknown:
                raise InvalidRequestArgumentError(
                    f"{where}.{unknown[0]}: unknown key; expected one of {', '.join(sorted(allowed))}"
                )
            try:
                self.set_price(**entry)
            except InvalidRequestArgumentError as e:
                raise InvalidRequestArgumentError(f"{where}: {e.message}") from None

    def load_file(self, path: str | Path) -> None:
        """Read price overrides from YAML: a ``pricing:`` list of ``{model, input_cost_per_token, ...}``."""
        from providers.config import read_yaml_mapping

        source = str(path)
        entries = read_yaml_mapping(path, "a mapping with a 'pricing' list").get("pricing", [])
        if not isinstance(entries, list):
            raise InvalidRequestArgumentError(f"{source}: pricing: expected a list of {{model, ...}} entries")
        self.load_overrides(entries, source)

    # ---------------------------------------------------------------- sources
    def _state(self, url: str) -> _State:
        state = self._states.get(url)
        if state is None:
            with self._states_lock:
                state = self._states.setdefault(url, _State())
        return state

    def _disk_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        import hashlib

        return self.cache_dir / f"catalog-{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"

    def _fetch(self, family: str, url: str) -> SourceData:
        """Fetch live; on failure fall back to the disk copy, then to the snapshot."""
        transport = self._transport
        if transport is None:
            from providers.clients import default_pool

            transport = default_pool().sync_transport()
        now = self.clock()
        try:
            self.fetch_count += 1
            headers = {"accept": "application/json"}
            key = self.registry.get(family).find_api_key(None)
            if key:  # works without a key, but a key can see more (a gateway's gated providers)
                headers["authorization"] = f"Bearer {key}"
            response = transport.send(HttpRequest("GET", url, headers), _FETCH_TIMEOUTS)
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status}")
            payload = orjson.loads(response.content)
            offers = self.sources[family].parse(payload, url, now)
            if not offers:
                raise RuntimeError("the catalog lists no models")
        except (PolyrouteError, RuntimeError, orjson.JSONDecodeError) as e:
            return self._fallback(family, url, f"{type(e).__name__}: {getattr(e, 'message', e)}")
        self._write_disk(url, payload, now)
        return self._data(family, url, now, "live", offers)

    def _data(
        self, family: str, url: str, fetched_at: float, origin: str, offers: Any, error: str | None = None
    ) -> SourceData:
        """A family's loaded catalog; a gateway's sub-provider names are taught to the registry's grammar."""
        if self.registry.get(family).gateway:
            self.registry.learn_subproviders(family, {o.provider for o in offers})
        return SourceData(url, fetched_at, origin, {(o.provider, o.model): o for o in offers}, error)

    def _fetch_into(self, family: str, url: str, state: _State) -> SourceData:
        data = self._fetch(family, url)
        state.failed_at = None if data.origin == "live" else self.clock()
        return data

    def _write_disk(self, url: str, payload: Any, fetched_at: float) -> None:
        path = self._disk_path(url)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps({"url": url, "fetched_at": fetched_at, "payload": payload}))
            tmp.replace(path)  # atomic: readers never see half a file
        except OSError:
            pass  # a read-only home is no reason to fail a call

    def _read_disk(self, family: str, url: str) -> SourceData | None:
        path = self._disk_path(url)
        if path is None or not path.is_file():
            return None
        try:
            saved = orjson.loads(path.read_bytes())
            fetched_at = float(saved["fetched_at"])
            offers = self.sources[family].parse(saved["payload"], url, fetched_at)
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return self._data(family, url, fetched_at, "disk", offers) if offers else None

    def _fallback(self, family: str, url: str, error: str) -> SourceData:
        disk = self._read_disk(family, url)
        if disk is not None:
            disk.error = error
            return disk
        saved = json.loads(self.snapshot.read_text()) if self.snapshot is not None and self.snapshot.is_file() else {}
        if family in saved:  # the snapshot is keyed by family; a family registered later has no entry
            fetched_at = float(saved.get("fetched_at", 0))
            offers = self.sources[family].parse(saved[family], "snapshot", fetched_at)
            return self._data(family, url, fetched_at, "snapshot", offers, error)
        return SourceData(url, self.clock(), "none", {}, error)

    def _fresh(self, data: SourceData | None) -> bool:
        return data is not None and data.origin in ("live", "disk") and self.clock() - data.fetched_at < self.ttl

    def source(self, family: str) -> SourceData:
        """A family's catalog (fetching it on first need; stale data is served while it refreshes)."""
        url = source_url(family, self.registry, self.sources)
        state = self._state(url)
        data = state.data
        if data is None:
            disk = self._read_disk(family, url)
            if disk is not None and self.clock() - disk.fetched_at < self.ttl:
                state.data = data = disk
        if data is None:
            with state.lock:  # single flight: the others wait for the one fetch
                if state.data is None:
                    state.data = self._fetch_into(family, url, state)
                data = state.data
        elif self._should_refresh(data, state):
            self._refresh_in_background(family, url, state)
        return data

    def _should_refresh(self, data: SourceData, state: _State) -> bool:
        if self._fresh(data) or state.refreshing:
            return False
        return state.failed_at is None or self.clock() - state.failed_at >= RETRY_AFTER_FAILURE

    async def asource(self, family: str) -> SourceData:
        """:meth:`source` without blocking the event loop; concurrent first callers share one fetch."""
        url = source_url(family, self.registry, self.sources)
        state = self._state(url)
        data = state.data
        if data is not None:
            if self._should_refresh(data, state):
                self._refresh_in_background(family, url, state)
            return data
        loop = asyncio.get_running_loop()
        task = state.tasks.get(id(loop))
        if task is None:
            task = loop.create_task(asyncio.to_thread(self.source, family))
            state.tasks[id(loop)] = task
            task.add_done_callback(lambda _t: state.tasks.pop(id(loop), None))
        return await asyncio.shield(task)

    def _refresh_in_background(self, family: str, url: str, state: _State) -> None:
        state.refreshing = True

        def run() -> None:
            try:
                fresh = self._fetch_into(family, url, state)
                if fresh.origin == "live" or state.data is None:
                    state.data = fresh
            finally:
                state.refreshing = False

        threading.Thread(target=run, name=f"polyroute-catalog-{family}", daemon=True).start()

    def refresh(self, family: str) -> SourceData:
        """Fetch a family's catalog now (``polyroute models --refresh``)."""
        url = source_url(family, self.registry, self.sources)
        state = self._state(url)
        with state.lock:
            state.data = self._fetch_into(family, url, state)
        return state.data

    # ---------------------------------------------------------------- lookups
    def _override(self, target: Target, served: str | None) -> _Override | None:
        if not self._overrides:
            return None
        for key in ((target.provider, served, target.model), (target.provider, None, target.model)):
            found = self._overrides.get(key)
            if found is not None:
                return found
        return None

    def families(self) -> list[str]:
        """The families with a registered catalog source that the registry knows (``polyroute models`` lists these).

        Example: ``Catalog(cache_dir=False).families()  # the built-in catalog families, in registration order``
        """
        known = set(self.registry.names())
        return [family for family in self.sources if family in known]

    def learn_names(self, err: UnknownSubproviderError, registry: Registry) -> None:
        """Teach ``registry`` the sub-providers the catalog of the gateway ``err`` is about lists
        (sync: may fetch it; see :meth:`alearn_names`)."""
        if err.family in self.sources:
            data = self.source(err.family)
            registry.learn_subproviders(err.family, {provider for provider, _ in data.offers})

    async def alearn_names(self, err: UnknownSubproviderError, registry: Registry) -> None:
        """:meth:`learn_names` without blocking the event loop."""
        if err.family in self.sources:
            data = await self.asource(err.family)
            registry.learn_subproviders(err.family, {provider for provider, _ in data.offers})

    def family_of(self, target: Target) -> str | None:
        """The catalog family that prices a target, or None when only config can."""
        return target.provider if target.provider in self.sources else None

    def lookup_in(self, data: SourceData | None, target: Target, served: str | None) -> PriceLookup:
        """The price of ``target`` as served by ``served``, from already-loaded catalog data."""
        override = self._override(target, served)
        if override is not None:
            return PriceLookup(override.price)
        if target.spec.self_hosted:
            return PriceLookup(Price(Decimal(0), Decimal(0), "config"))  # the caller's hardware: 0 unless configured
        if data is None:
            return PriceLookup(
                None,
                reason=f"no catalog prices {target.provider!r} models; set one with "
                f"Catalog.set_price({target.model_string!r}, input_per_million=..., output_per_million=...)",
            )
        if target.spec.gateway:  # the offer of the sub-provider that served, when the gateway said
            provider = served if served not in (None, target.provider) else None
        else:
            provider = target.provider
        if provider is None:
            offers = [o for o in data.by_model(target.model) if o.status == "live" and o.price is not None]
            prices = {(o.price.input_per_m, o.price.output_per_m) for o in offers if o.price is not None}
            if len(prices) == 1:
                return PriceLookup(offers[0].price, offers[0])
            return PriceLookup(
                None,
                reason=f"the gateway {target.provider!r} did not say which provider served this call "
                "and its providers' prices differ",
            )
        offer = data.offers.get((provider, target.model))
        if offer is None:
            return PriceLookup(None, reason=f"{target.model!r} at {provider!r} is not in the catalog ({data.url})")
        if offer.price is None:
            reason = f"the catalog ({data.url}) lists no price for {target.model!r} at {provider!r}"
            return PriceLookup(None, offer, reason=reason)
        return PriceLookup(offer.price, offer)

    def candidates_in(self, data: SourceData | None, target: Target) -> list[PriceLookup]:
        """Every price the call could be charged at (one unless a gateway picks the sub-provider)."""
        override = self._override(target, target.subprovider)
        if override is not None:
            offer = Offer(target.label, target.model, target.provider, override.price)
            offer.context_length, offer.max_output_tokens = override.context_length, override.max_output_tokens
            return [PriceLookup(override.price, offer)]
        if target.spec.gateway and target.subprovider is None and data is not None:
            live = [o for o in data.by_model(target.model) if o.status == "live"]
            if live:
                out = []
                for o in live:
                    # A per-provider override prices that provider for the reservation as for the bill.
                    special = self._overrides.get((target.provider, o.provider, target.model))
                    price = special.price if special is not None else o.price
                    reason = None if price else f"the catalog lists no price at {o.provider!r}"
                    out.append(PriceLookup(price, o, reason))
                return out
            return [PriceLookup(None, reason=f"no live provider of {target.model!r} in the catalog ({data.url})")]
        return [self.lookup_in(data, target, target.subprovider)]

    def candidates(self, target: Target) -> list[PriceLookup]:
        """:meth:`candidates_in` with the catalog loaded on first need."""
        family = self.family_of(target)
        needs_data = family is not None and self._override(target, target.subprovider) is None
        return self.candidates_in(self.source(family) if needs_data and family else None, target)

    async def acandidates(self, target: Target) -> list[PriceLookup]:
        family = self.family_of(target)
        needs_data = family is not None and self._override(target, target.subprovider) is None
        return self.candidates_in(await self.asource(family) if needs_data and family else None, target)

    def lookup(self, target: Target, served: str | None = None) -> PriceLookup:
        """Price for one call (sync; may fetch the catalog on first need)."""
        family = self.family_of(target)
        if family is None or self._override(target, served) is not None:
            return self.lookup_in(None, target, served)
        return self.lookup_in(self.source(family), target, served)

    def resolve(self, model: str) -> Target:
        """The target of a model string named only to price it (one that needs an ``api_base`` gets a placeholder).

        Example: ``catalog.resolve("huggingface/tgi").spec.self_hosted  # True``
        """
        try:
            return self.registry.resolve(model)
        except InvalidRequestArgumentError as first:
            try:
                return self.registry.resolve(model, _PLACEHOLDER_BASE)
            except InvalidRequestArgumentError:
                raise first from None

    def loaded(self, target: Target) -> SourceData | None:
        """The catalog data already in memory for this target's family; never fetches."""
        family = self.family_of(target)
        state = self._states.get(source_url(family, self.registry, self.sources)) if family else None
        return state.data if state is not None else None

    def lookup_cached(self, target: Target, served: str | None = None) -> PriceLookup:
        """Price from what is already loaded; never fetches (for mock responses)."""
        family = self.family_of(target)
        data = self.loaded(target)
        if data is None and family is not None and self._override(target, served) is None:
            return PriceLookup(None, reason="the price catalog is not loaded and a mock response fetches nothing")
        return self.lookup_in(data, target, served)

    async def alookup(self, target: Target, served: str | None = None) -> PriceLookup:
        """Price for one call, fetching off the event loop on first need."""
        family = self.family_of(target)
        if family is None or self._override(target, served) is not None:
            return self.lookup_in(None, target, served)
        data = self.loaded(target)
        return self.lookup_in(data if self._fresh(data) else await self.asource(family), target, served)


def _per_million(model: str, side: str, per_million: Any, per_token: Any) -> Decimal:
    if per_million is not None and per_token is not None:
        raise InvalidRequestArgumentError(
            f"price of {model!r}: give {side}_per_million or {side}_cost_per_token, not both"
        )
    if per_million is not None:
        value = to_decimal(per_million)
    elif per_token is not None:
        token_price = to_decimal(per_token)
        value = None if token_price is None else token_price * 1_000_000
    else:
        raise InvalidRequestArgumentError(
            f"price of {model!r}: {side}_per_million (USD per 1M tokens) or {side}_cost_per_token is required"
        )
    if value is None:
        given = per_million if per_million is not None else per_token
        raise InvalidRequestArgumentError(
            f"price of {model!r}: {side} price must be a non-negative number, got {given!r}"
        )
    return value.normalize()


_CATALOG = ProcessDefault(Catalog)


def default_catalog() -> Catalog:
    """The process-wide catalog used by ``completion()`` when no other is given."""
    return _CATALOG.get()
