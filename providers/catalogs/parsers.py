"""Parsers for the providers' own catalogs: realistic payloads, missing fields tolerated.

- HF router ``GET /v1/models``: per model, per provider ``pricing {input, output}`` (USD/M),
  ``context_length``, ``status``, ``supports_tools``, ``supports_structured_output``, ``throughput``,
  ``first_token_latency_ms``. Only ``provider`` and ``status`` are always there.
- DeepInfra ``GET /models?filter=with_meta``: ``metadata.pricing.{input_tokens, output_tokens,
  cache_read_tokens}`` (USD/M), ``metadata.context_length`` and ``max_tokens``; ``metadata`` may be null.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .offers import Offer, Price, to_decimal


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def parse_hf_router(payload: Any, source: str, fetched_at: float) -> list[Offer]:
    """Offers from the HF router's ``/v1/models`` body; entries it cannot read are skipped."""
    offers: list[Offer] = []
    data = payload.get("data") if isinstance(payload, dict) else None
    for model in data if isinstance(data, list) else ():
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            continue
        for entry in model.get("providers") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("provider"), str):
                continue
            pricing = _dict(entry.get("pricing"))
            input_price, output_price = to_decimal(pricing.get("input")), to_decimal(pricing.get("output"))
            price = None
            if input_price is not None and output_price is not None:
                price = Price(input_price, output_price, source, fetched_at)
            elif entry.get("is_free") is True:
                price = Price(Decimal(0), Decimal(0), source, fetched_at)
            offers.append(
                Offer(
                    provider=entry["provider"],
                    model=model["id"],
                    family="huggingface",
                    price=price,
                    status=str(entry.get("status") or "live"),
                    context_length=_int(entry.get("context_length")),
                    supports_tools=_bool(entry.get("supports_tools")),
                    supports_structured_output=_bool(entry.get("supports_structured_output")),
                    throughput=_float(entry.get("throughput")),
                    first_token_latency_ms=_float(entry.get("first_token_latency_ms")),
                )
            )
    return offers


def parse_deepinfra(payload: Any, source: str, fetched_at: float) -> list[Offer]:
    """Offers from DeepInfra's ``/models?filter=with_meta`` (a list, or OpenAI's ``{"data": [...]}``)."""
    data = payload.get("data") if isinstance(payload, dict) else payload
    offers: list[Offer] = []
    for model in data if isinstance(data, list) else ():
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            continue
        meta = _dict(model.get("metadata"))
        pricing = _dict(meta.get("pricing"))
        input_price, output_price = to_decimal(pricing.get("input_tokens")), to_decimal(pricing.get("output_tokens"))
        price = None
        if input_price is not None and output_price is not None:
            price = Price(input_price, output_price, source, fetched_at, to_decimal(pricing.get("cache_read_tokens")))
        offers.append(
            Offer(
                provider="deepinfra",
                model=model["id"],
                family="deepinfra",
                price=price,
                context_length=_int(meta.get("context_length")),
                max_output_tokens=_int(meta.get("max_tokens")),
                extra={"tags": meta.get("tags")} if meta.get("tags") else {},
            )
        )
    return offers
