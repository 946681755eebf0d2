"""What the catalog says about a deployment's ways of being served: offers, context windows, prices,
features, and the order a routing policy (``:cheapest`` / ``:fastest``) puts a gateway's sub-providers in.

The Router answers these questions for its sessions; they are here so the retry and routing loop in
:mod:`router.routing.router` stays small.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..pricing.catalog import Catalog
from .deployment import Deployment, now
from .session import RequestInfo


class CatalogFacts:
    """Catalog facts per deployment, for :class:`~router.routing.session.Session` (mixed into the Router)."""

    catalog: Catalog
    provider_not_before: dict[tuple[int, str], float]

    def _offers(self, d: Deployment) -> list[Any]:
        data = self.catalog.loaded(d.target)
        if data is None:
            return []
        if d.target.spec.gateway:
            offers = [o for o in data.by_model(d.target.model) if o.status == "live"]
            if d.target.subprovider:
                offers = [o for o in offers if o.provider == d.target.subprovider]
            return offers
        offer = data.offers.get((d.target.provider, d.target.model))
        return [offer] if offer else []

    def _lacking(self, d: Deployment, needs: frozenset[str]) -> set[str]:
        """Providers of ``d`` that the catalog says cannot serve what the request needs (a price counts
        overrides too)."""
        offers = self._offers(d)
        lacking = {o.provider for o in offers if not supports(o, needs)}
        if "priced" in needs and offers:  # the price the bill would use: catalog or a configured override
            data = self.catalog.loaded(d.target)
            lacking |= {o.provider for o in offers if self.catalog.lookup_in(data, d.target, o.provider).price is None}
        return lacking

    def capable(self, d: Deployment, needs: frozenset[str]) -> bool:
        """False when the catalog says no way of serving ``d`` supports what the request needs."""
        if not needs:
            return True
        offers = self._offers(d)
        return not offers or len(self._lacking(d, needs)) < len({o.provider for o in offers})

    def fits_context(self, d: Deployment, prompt: int) -> bool:
        """Whether some way of serving ``d`` has room for ``prompt`` tokens (unknown windows fit)."""
        if d.context_length:
            return prompt <= d.context_length
        offers = self._offers(d)
        room = [o.context_length is None or prompt <= o.context_length for o in offers]
        t = d.target
        if t.gateway_chooses:
            return all(room)  # the gateway (HF router) picks the provider: every one must have room
        return not offers or any(room)

    def context_length(self, d: Deployment) -> int | None:
        """The largest context window the deployment may be served with (None: unknown); under
        ``:cheapest`` / ``:fastest`` a prompt goes only to providers whose window has room for it."""
        if d.context_length:
            return d.context_length
        known = [o.context_length for o in self._offers(d) if o.context_length]
        return max(known) if known else None

    def _priced(self, d: Deployment, request: RequestInfo) -> list[tuple[int, Any]]:
        """(expected cost in pico-USD, price lookup) for every way the deployment may be charged,
        overrides included, in one unit."""
        prompt, out_tokens = request.prompt_tokens or 0, request.max_tokens or 256
        target = d.target if d.target.policy is None else dataclasses.replace(d.target, policy=None)
        return [
            (c.price.cost_pico(prompt, out_tokens), c)
            for c in self.catalog.candidates_in(self.catalog.loaded(d.target), target)
            if c.price is not None
        ]

    def expected_cost(self, d: Deployment, request: RequestInfo) -> float | None:
        """Pico-USD this request is expected to cost at the deployment's cheapest price (None: unpriced)."""
        costs = [cost for cost, _ in self._priced(d, request)]
        return float(min(costs)) if costs else None

    def policy_order(self, d: Deployment, request: RequestInfo) -> list[str]:
        """HF ``:cheapest`` / ``:fastest`` resolved client-side: live providers, best first.

        Providers that asked this deployment to wait (Retry-After) go last until their wait is over.
        """
        if d.target.policy == "cheapest":
            ranked = sorted(self._priced(d, request), key=lambda pair: pair[0])
            providers = [c.offer.provider for _, c in ranked if c.offer is not None]
            providers += [o.provider for o in self._offers(d) if o.provider not in providers]  # unpriced last
        else:
            providers = [o.provider for o in sorted(self._offers(d), key=lambda o: -(o.throughput or 0.0))]
        lacking = self._lacking(d, request.needs) if request.needs else set()
        if request.prompt_tokens is not None and not d.context_length:  # too small a window for this prompt
            lacking |= {
                o.provider
                for o in self._offers(d)
                if (o.context_length or 0) and request.prompt_tokens > o.context_length
            }
        if lacking:
            providers = [p for p in providers if p not in lacking]
        t = now()
        waits = self.provider_not_before
        return sorted(providers, key=lambda p: waits.get((id(d), p), 0.0) > t)


def needs_of(kwargs: dict[str, Any]) -> frozenset[str]:
    """Features the request needs from a provider (checked against the catalog)."""
    needs = []
    if kwargs.get("tools") and kwargs.get("tool_choice") != "none":
        needs.append("tools")
    response_format = kwargs.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        needs.append("structured_output")
    return frozenset(needs)


def supports(offer: Any, needs: frozenset[str]) -> bool:
    if "tools" in needs and offer.supports_tools is False:
        return False
    return not ("structured_output" in needs and offer.supports_structured_output is False)
