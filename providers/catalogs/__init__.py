"""Which provider families publish a model/price catalog, where it is, and how to read it.

A :class:`CatalogSource` says where a family's catalog lives relative to the family's resolved
base URL (so it follows the same base-URL overrides as calls) and which parser turns its JSON into
plain :class:`Offer` values. The router's pricing iterates :data:`CATALOG_SOURCES`; it never names a
family. Adding the catalog of a new family is one registration, no router code.

Example::

    from providers.catalogs import CatalogSource, register_catalog_source

    def parse_acme(payload, source, fetched_at):
        return [Offer("acme", m["id"], "acme", Price(Decimal(m["in"]), Decimal(m["out"]), source, fetched_at))
                for m in payload["data"]]

    register_catalog_source("acme", CatalogSource(parse_acme, path="/models"))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..spec import ProviderSpec
from .offers import PICO_PER_USD, Offer, Price, pico_to_usd, to_decimal
from .parsers import parse_deepinfra, parse_hf_router

CatalogParser = Callable[[Any, str, float], list[Offer]]
"""``parse(payload, source_url, fetched_at) -> offers``; entries it cannot read are skipped."""


@dataclass(frozen=True, slots=True)
class CatalogSource:
    """Where one family's catalog is and how to read it.

    ``path`` is appended to the family's resolved base URL after removing ``base_suffix`` from
    it when present (the HF router's base is configured with or without ``/v1``).

    Example::

        CatalogSource(parse_deepinfra, path="/models?filter=with_meta").url(spec)
        # 'https://api.deepinfra.com/v1/openai/models?filter=with_meta'
    """

    parse: CatalogParser
    path: str = "/models"
    base_suffix: str = ""

    def url(self, spec: ProviderSpec) -> str:
        """The catalog URL for ``spec``, following its base-URL environment override."""
        base = spec.resolved_base_url()
        if self.base_suffix:
            base = base.removesuffix(self.base_suffix)
        return base + self.path


CATALOG_SOURCES: dict[str, CatalogSource] = {
    "huggingface": CatalogSource(parse_hf_router, path="/v1/models", base_suffix="/v1"),
    "deepinfra": CatalogSource(parse_deepinfra, path="/models?filter=with_meta"),
}
"""Catalog sources by provider family (``ProviderSpec.name``); read live by the router's pricing."""

_lock = threading.Lock()


def register_catalog_source(family: str, source: CatalogSource) -> CatalogSource | None:
    """Register (or replace) the catalog of ``family``; returns the source it replaced, if any.

    Example: ``register_catalog_source("acme", CatalogSource(parse_acme, path="/models"))``
    """
    with _lock:
        previous = CATALOG_SOURCES.get(family)
        CATALOG_SOURCES[family] = source
    return previous


def unregister_catalog_source(family: str) -> CatalogSource | None:
    """Forget the catalog of ``family`` (its calls are then priced by configured prices only)."""
    with _lock:
        return CATALOG_SOURCES.pop(family, None)


__all__ = [
    "CATALOG_SOURCES",
    "PICO_PER_USD",
    "CatalogParser",
    "CatalogSource",
    "Offer",
    "Price",
    "parse_deepinfra",
    "parse_hf_router",
    "pico_to_usd",
    "register_catalog_source",
    "to_decimal",
    "unregister_catalog_source",
]
