"""A new family's price catalog is one registration in the provider layer, no router code.

``acme`` is a plain OpenAI-compatible family whose ``/v1/models`` lists prices per token as strings
(OpenRouter's shape). Registering the provider and its catalog source is all it takes for a
completion's ``meta.cost`` to come from that catalog, fetched over real HTTP from a local server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from providers.catalogs import (
    CatalogSource,
    Offer,
    Price,
    register_catalog_source,
    to_decimal,
    unregister_catalog_source,
)
from providers.registry import Registry
from router import acompletion, completion
from router.pricing import Catalog
from router.types import ChatCompletion
from tests.upstreams import OpenAICompatUpstream
from tests.upstreams.base import Route

USER = [{"role": "user", "content": "what does this cost"}]
KEY = "sk-acme-0123456789"


class AcmeUpstream(OpenAICompatUpstream):
    """An OpenAI-compatible server whose ``/models`` lists per-token prices and context lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.catalog: list[dict[str, Any]] = [
            {
                "id": "acme-large",
                "context_length": 65536,
                "pricing": {"prompt": "0.0000012", "completion": "0.0000036"},
            },
            {"id": "acme-free", "context_length": 8192, "pricing": {"prompt": "0", "completion": "0"}},
            {"id": "acme-unlisted-price", "context_length": 8192},
        ]

    def routes(self) -> list[Route]:
        """Chat and embeddings as OpenAI's; the model list with prices."""
        return [route for route in super().routes() if route[1] != "/models"] + [
            ("GET", "/models", self.priced_models, True)
        ]

    async def priced_models(self, request: web.Request) -> web.StreamResponse:
        """``{"data": [{id, context_length, pricing: {prompt, completion}}]}`` (USD per token)."""
        return self.respond({"object": "list", "data": self.catalog})


def parse_acme(payload: Any, source: str, fetched_at: float) -> list[Offer]:
    """Offers from acme's ``/models``: per-token prices become USD per million tokens."""
    offers = []
    for model in payload.get("data", []) if isinstance(payload, dict) else []:
        pricing = model.get("pricing") or {}
        per_token_in, per_token_out = to_decimal(pricing.get("prompt")), to_decimal(pricing.get("completion"))
        price = None
        if per_token_in is not None and per_token_out is not None:
            price = Price(per_token_in * 1_000_000, per_token_out * 1_000_000, source, fetched_at)
        offers.append(Offer("acme", model["id"], "acme", price, context_length=model.get("context_length")))
    return offers


@pytest.fixture(scope="module")
def acme_server() -> Iterator[AcmeUpstream]:
    server = AcmeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def acme(acme_server: AcmeUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Registry, Catalog]]:
    """The two registrations a new family needs: the provider, and its catalog source."""
    acme_server.reset()
    monkeypatch.setenv("ACME_API_KEY", KEY)
    registry = Registry()
    registry.register("acme", base_url=acme_server.url + "/v1", key_env="ACME_API_KEY")
    previous = register_catalog_source("acme", CatalogSource(parse_acme, path="/models"))
    assert previous is None
    try:
        yield registry, Catalog(cache_dir=False, registry=registry)
    finally:
        unregister_catalog_source("acme")


def _usd(r: ChatCompletion, input_per_m: str, output_per_m: str) -> float:
    assert r.usage is not None
    return float(
        (r.usage.prompt_tokens * Decimal(input_per_m) + r.usage.completion_tokens * Decimal(output_per_m)) / 1_000_000
    )


def _catalog_fetches(server: AcmeUpstream) -> int:
    return sum(1 for q in server.requests if q.method == "GET" and q.path == "/v1/models")


def test_a_registered_catalog_prices_a_new_familys_completion(
    acme: tuple[Registry, Catalog], acme_server: AcmeUpstream
) -> None:
    registry, catalog = acme
    r = completion(model="acme/acme-large", messages=USER, registry=registry, catalog=catalog)
    assert isinstance(r, ChatCompletion) and r.usage is not None and r.usage.total_tokens > 0
    assert r.meta.cost_usd == pytest.approx(_usd(r, "1.2", "3.6"))
    assert r.meta.cost_pico == r.usage.prompt_tokens * 1_200_000 + r.usage.completion_tokens * 3_600_000
    assert r.meta.price_source == f"{acme_server.url}/v1/models" and r.meta.price_fetched_at is not None
    assert r.meta.unpriced_reason is None
    fetch = next(q for q in acme_server.requests if q.path == "/v1/models")
    assert fetch.token == KEY  # the catalog is read with the family's own key
    assert catalog.families()[-1] == "acme" and catalog.fetch_count == 1


def test_async_calls_share_the_one_fetch_and_the_catalogs_facts(
    acme: tuple[Registry, Catalog], acme_server: AcmeUpstream
) -> None:
    registry, catalog = acme

    async def main() -> list[object]:
        calls = [
            acompletion(model=model, messages=USER, registry=registry, catalog=catalog)
            for model in ("acme/acme-large", "acme/acme-free", "acme/acme-unlisted-price") * 4
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert all(isinstance(r, ChatCompletion) for r in results)
    by_model = {r.model: r for r in results if isinstance(r, ChatCompletion)}
    assert by_model["acme-large"].meta.cost_usd == pytest.approx(_usd(by_model["acme-large"], "1.2", "3.6"))
    assert by_model["acme-free"].meta.cost_usd == 0.0
    unlisted = by_model["acme-unlisted-price"].meta
    assert unlisted.cost_usd is None and "lists no price" in (unlisted.unpriced_reason or "")
    assert _catalog_fetches(acme_server) == 1
    data = catalog.loaded(catalog.resolve("acme/acme-large"))
    assert data is not None and data.offers[("acme", "acme-large")].context_length == 65536


def test_without_its_catalog_source_the_family_is_priced_by_config_only(
    acme: tuple[Registry, Catalog], acme_server: AcmeUpstream
) -> None:
    registry, _ = acme
    unregister_catalog_source("acme")
    catalog = Catalog(cache_dir=False, registry=registry)
    r = completion(model="acme/acme-large", messages=USER, registry=registry, catalog=catalog)
    assert isinstance(r, ChatCompletion) and r.meta.cost_usd is None and "set_price" in (r.meta.unpriced_reason or "")
    assert _catalog_fetches(acme_server) == 0 and catalog.family_of(catalog.resolve("acme/acme-large")) is None
