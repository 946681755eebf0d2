"""What a model costs at one provider, where that number came from, and exact cost arithmetic.

Plain data the catalog parsers produce (:mod:`providers.catalogs`) and the router's pricing reads.
Money is counted in integer pico-dollars (1e-12 USD) so that sums over millions of calls are exact;
prices are USD per million tokens, kept as ``Decimal`` parsed from the catalog's text.

Example::

    p = Price(input_per_m=Decimal("0.7"), output_per_m=Decimal("2.5"), source="snapshot")
    p.cost_pico(prompt_tokens=1000, completion_tokens=200)  # 1_200_000_000 pico = $0.0012
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

PICO_PER_USD = 10**12
_PICO_PER_TOKEN_PER_USD_PER_M = Decimal(10**6)  # USD per 1M tokens -> pico-USD per token


def to_decimal(value: Any) -> Decimal | None:
    """A price from JSON/YAML (number or string) as an exact Decimal, or None if absent or invalid."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() and result >= 0 else None


def pico_to_usd(pico: int) -> float:
    """Pico-USD as a float of USD (for display and results; sums stay in integers)."""
    return pico / PICO_PER_USD


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for input, output and (when known) cached input reads."""

    input_per_m: Decimal
    output_per_m: Decimal
    source: str  # catalog URL, "config" or "snapshot"
    fetched_at: float | None = None  # unix time the source was fetched (None for config)
    cache_read_per_m: Decimal | None = None

    def cost_pico(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """Exact cost in pico-USD; cached prompt tokens at the cache-read price when there is one."""
        cached = min(max(cached_tokens, 0), prompt_tokens) if self.cache_read_per_m is not None else 0
        total = (
            (prompt_tokens - cached) * self.input_per_m
            + cached * (self.cache_read_per_m or Decimal(0))
            + completion_tokens * self.output_per_m
        ) * _PICO_PER_TOKEN_PER_USD_PER_M
        return int(total.to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(slots=True)
class Offer:
    """One model at one provider, as a catalog lists it."""

    provider: str  # "together" behind the HF router, "deepinfra", ...
    model: str  # the HF / provider model id
    family: str  # "huggingface" | "deepinfra" | "tgi" | ...
    price: Price | None
    status: str = "live"  # "live" | "error" | "staging"
    context_length: int | None = None
    max_output_tokens: int | None = None
    supports_tools: bool | None = None
    supports_structured_output: bool | None = None
    throughput: float | None = None  # tokens/s
    first_token_latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
