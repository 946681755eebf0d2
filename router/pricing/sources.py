"""The catalog parsers of the built-in families, registered by the provider layer (:mod:`providers.catalogs`).

Example::

    from router.pricing.sources import CATALOG_SOURCES
    sorted(CATALOG_SOURCES)  # the families whose catalogs price calls
"""

from __future__ import annotations

from providers.catalogs import CATALOG_SOURCES, CatalogSource, parse_deepinfra, parse_hf_router

__all__ = ["CATALOG_SOURCES", "CatalogSource", "parse_deepinfra", "parse_hf_router"]
