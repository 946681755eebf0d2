"""``polyroute models``: models x providers with prices, limits and speed, and where the data came from.

The families listed are those with a registered catalog source (:mod:`providers.catalogs`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from .pricing.catalog import Catalog, SourceData, default_catalog


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _rows(family: str, data: SourceData, provider: str | None, model: str | None) -> list[dict[str, Any]]:
    rows = []
    for offer in data.offers.values():
        if provider and provider not in (offer.provider, family):
            continue
        if model and model.lower() not in offer.model.lower():
            continue
        price = offer.price
        rows.append(
            {
                "model": offer.model,
                "family": family,
                "provider": offer.provider,
                "input_per_million": None if price is None else float(price.input_per_m),
                "output_per_million": None if price is None else float(price.output_per_m),
                "context_length": offer.context_length,
                "status": offer.status,
                "throughput": offer.throughput,
                "first_token_latency_ms": offer.first_token_latency_ms,
            }
        )
    return rows


def _credentials_hint(catalog: Catalog, family: str, error: str) -> str:
    """What to do when the catalog refused us (HTTP 401/403): set, or check, the provider's key variable."""
    if not re.search(r"\bHTTP 40[13]\b", error):
        return ""
    spec = catalog.registry.get(family)
    if not spec.key_env:
        return ""
    names = spec.key_env[0] if len(spec.key_env) == 1 else "one of " + ", ".join(spec.key_env)
    if spec.find_api_key(None):
        return f" (the key in {names} was refused: check it)"
    return f" (set {names} to your {family} API key)"


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def run(args: argparse.Namespace, catalog: Catalog | None = None) -> int:
    catalog = catalog or default_catalog()
    now = catalog.clock()
    sources: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    gateways = {family for family in catalog.families() if catalog.registry.get(family).gateway}
    for family in catalog.families():
        data = catalog.refresh(family) if args.refresh else catalog.source(family)
        sources.append(
            {
                "family": family,
                "url": data.url,
                "origin": data.origin,
                "fetched_at": data.fetched_at,
                "age_seconds": max(0.0, now - data.fetched_at),
                "error": data.error,
            }
        )
        rows.extend(_rows(family, data, args.provider, args.model))
    rows.sort(key=lambda r: (r["model"].lower(), r["input_per_million"] is None, r["input_per_million"] or 0))
    if args.json:
        json.dump({"sources": sources, "models": rows}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for src in sources:
        where = "bundled snapshot" if src["origin"] == "snapshot" else src["url"]
        line = f"{src['family']}: {where}, fetched {_age(src['age_seconds'])} ago ({src['origin']})"
        if src["origin"] == "none":
            line = f"{src['family']}: {src['url']}: not available (no live catalog, no disk copy, no snapshot)"
        if src["error"]:
            line += f" — live fetch failed: {src['error']}{_credentials_hint(catalog, src['family'], src['error'])}"
        print(line)
    if not rows:
        print("no models match", file=sys.stderr)
        return 1
    header = ("model", "provider", "via", "in $/M", "out $/M", "context", "status", "tok/s", "ttft ms")
    table = [header] + [
        (
            r["model"],
            r["provider"],
            f"{r['family']} gateway" if r["family"] in gateways else "direct",
            _cell(r["input_per_million"], "{:g}"),
            _cell(r["output_per_million"], "{:g}"),
            _cell(r["context_length"]),
            r["status"],
            _cell(r["throughput"], "{:.0f}"),
            _cell(r["first_token_latency_ms"], "{:.0f}"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for n, row in enumerate(table):
        print(
            "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n{len(rows)} offers · generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(now))}")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("models", help="list models x providers with prices, context, speed")
    parser.add_argument("--provider", "-p", help="only this provider (e.g. together, deepinfra)")
    parser.add_argument("--model", "-m", help="only models whose id contains this (case-insensitive)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--refresh", action="store_true", help="fetch the catalogs now, ignoring caches")
    parser.set_defaults(func=run)
