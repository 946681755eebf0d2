"""Prices and offers as the router's pricing sees them: the plain data of :mod:`providers.catalogs.offers`.

Example::

    from router.pricing.prices import Price
    Price(Decimal("0.7"), Decimal("2.5"), "snapshot").cost_pico(1000, 200)  # 1_200_000_000
"""

from __future__ import annotations

from providers.catalogs.offers import PICO_PER_USD, Offer, Price, pico_to_usd, to_decimal

__all__ = ["PICO_PER_USD", "Offer", "Price", "pico_to_usd", "to_decimal"]
