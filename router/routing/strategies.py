"""Routing strategies: which of the eligible deployments takes a request.

- ``weighted``: random, proportional to ``weight`` (LiteLLM's simple-shuffle).
- ``least-in-flight``: fewest requests in progress, ties broken at random.
- ``latency``: lowest EWMA latency (time to first token for streams); untried deployments first.
- ``cheapest``: lowest catalog cost of this request; unpriced deployments last.
- ``usage``: most rpm/tpm headroom left.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from providers.errors import InvalidRequestArgumentError

from .deployment import Deployment

STRATEGIES = ("weighted", "least-in-flight", "latency", "cheapest", "usage")
# LiteLLM's names for the same strategies.
ALIASES = {
    "simple-shuffle": "weighted",
    "shuffle": "weighted",
    "least-busy": "least-in-flight",
    "latency-based-routing": "latency",
    "cost-based-routing": "cheapest",
    "usage-based-routing": "usage",
    "usage-based-routing-v2": "usage",
}


def strategy_name(name: str) -> str:
    canonical = ALIASES.get(name, name)
    if canonical not in STRATEGIES:
        raise InvalidRequestArgumentError(
            f"unknown routing strategy {name!r}; use one of {', '.join(STRATEGIES)} (LiteLLM names accepted: "
            f"{', '.join(sorted(ALIASES))})"
        )
    return canonical


def _lowest(candidates: Sequence[Deployment], key: Callable[[Deployment], float], rng: random.Random) -> Deployment:
    best = min(key(d) for d in candidates)
    return rng.choice([d for d in candidates if key(d) == best])


def pick(
    strategy: str,
    candidates: Sequence[Deployment],
    rng: random.Random,
    *,
    stream: bool,
    cost: Callable[[Deployment], float | None],
    headroom: Callable[[Deployment], float | None],
) -> Deployment:
    """The deployment that takes the request (``candidates`` is non-empty and all eligible)."""
    if len(candidates) == 1:
        return candidates[0]
    if strategy == "weighted":
        return rng.choices(candidates, weights=[d.weight for d in candidates])[0]
    if strategy == "least-in-flight":
        return _lowest(candidates, lambda d: d.state.in_flight + d.state.remote_in_flight, rng)
    if strategy == "latency":

        def latency(d: Deployment) -> float:
            value = d.state.ttft_ewma_ms if stream and d.state.ttft_ewma_ms is not None else d.state.latency_ewma_ms
            return -1.0 if value is None else value  # untried first: it must be measured once

        return _lowest(candidates, latency, rng)
    if strategy == "cheapest":
        return _lowest(candidates, lambda d: c if (c := cost(d)) is not None else float("inf"), rng)
    if strategy == "usage":
        return _lowest(candidates, lambda d: -(h if (h := headroom(d)) is not None else 1.0), rng)
    raise InvalidRequestArgumentError(f"unknown routing strategy {strategy!r}")
