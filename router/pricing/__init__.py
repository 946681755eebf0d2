"""Pricing catalog and exact cost accounting (see :mod:`router.pricing.catalog`)."""

from __future__ import annotations

from .catalog import Catalog, PriceLookup, SourceData, default_catalog
from .cost import CostInfo, cost_of
from .prices import Offer, Price

__all__ = ["Catalog", "CostInfo", "Offer", "Price", "PriceLookup", "SourceData", "cost_of", "default_catalog"]
