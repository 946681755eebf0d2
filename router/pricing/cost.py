"""Cost of one call: usage x the price of the provider that served it, and where the price came from.

Example::

    info = cost_of(lookup, usage={"prompt_tokens": 48, "completion_tokens": 200}, estimated=False)
    info.cost_usd, info.price_source
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .catalog import PriceLookup
from .prices import pico_to_usd


@dataclass(slots=True)
class CostInfo:
    """What a call cost. ``cost_usd`` is None (never a silent 0) when no price exists."""

    cost_usd: float | None
    cost_pico: int | None  # exact, in 1e-12 USD
    cost_estimated: bool  # tokens were counted locally (the upstream sent no usage)
    price_source: str | None  # catalog URL, "config" or "snapshot"
    price_fetched_at: float | None
    unpriced_reason: str | None = None
    upstream_cost_usd: float | None = None  # the provider's own figure (DeepInfra's estimated_cost)


def _get(usage: Any, key: str) -> Any:
    return usage.get(key) if isinstance(usage, dict) else getattr(usage, key, None)


def cached_tokens(usage: Any) -> int:
    details = _get(usage, "prompt_tokens_details")
    value = _get(details, "cached_tokens") if details is not None else None
    return value if isinstance(value, int) else 0


def cost_of(lookup: PriceLookup, usage: Any, *, estimated: bool) -> CostInfo:
    """Price ``usage`` (a dict or CompletionUsage) with ``lookup``'s price."""
    upstream = _get(usage, "estimated_cost")
    upstream_cost = float(upstream) if isinstance(upstream, (int, float)) and not isinstance(upstream, bool) else None
    price = lookup.price
    if price is None:
        return CostInfo(None, None, estimated, None, None, lookup.reason or "no price", upstream_cost)
    prompt = int(_get(usage, "prompt_tokens") or 0)
    completion = int(_get(usage, "completion_tokens") or 0)
    pico = price.cost_pico(prompt, completion, cached_tokens(usage))
    return CostInfo(pico_to_usd(pico), pico, estimated, price.source, price.fetched_at, None, upstream_cost)
