"""Per-row plans: which candidates fit a row, in which order, and what it may cost.

A candidate fits a row when one of its ways of serving (deployments; for HF ``:cheapest`` each live
provider) has room for the prompt and supports what the row uses (tools, structured output), as the
catalog says. Rows go to the fitting candidate with the lowest expected cost (prompt x input price +
expected answer length x output price); the other fitting candidates follow as fallbacks, then the
``fallback_only`` ones. A row whose body names a candidate in ``model`` is pinned to it.

Example::

    planner = Planner(config, router, budgeted=True)
    plan = planner.plan(row)      # plan.order[0] is where the row goes; plan.reserve_pico its worst case
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from providers.tasks import chat_helper

from ..budget import OUTPUT_CAPS, count_request, max_completion_tokens
from ..calibration import PromptCounts
from ..pricing.prices import Price
from ..routing.offers import needs_of
from ..routing.router import Router
from ..tokens import count_text
from .config import BatchConfig, Candidate
from .rows import Row

PROMPT_MARGIN = 0.25  # our tokenizer (cl100k) vs the provider's: the same margin budgets use


@dataclass(slots=True)
class Way:
    """One way a candidate may serve a row, with the catalog's facts about it."""

    price: Price | None
    context: int | None
    max_output: int | None
    tools: bool | None
    structured: bool | None
    unpriced_reason: str | None
    counts_key: str = ""  # the deployment's key in the catalog's learned prompt overheads


@dataclass(slots=True)
class Quote:
    candidate: Candidate
    expected_pico: int | None  # None: unpriced
    minimum_pico: int | None
    worst_pico: int | None
    output_tokens: int | None  # max answer length assumed for the worst case
    unlearned: bool = False  # a way of it has not reported prompt usage yet (rows go one at a time)


@dataclass(slots=True)
class RowPlan:
    order: list[Quote]  # order[0] gets the row; the rest are its fallbacks
    prompt_tokens: int
    reserve_pico: int  # the most the row can cost, over every candidate it may reach
    problem: str | None = None  # no candidate can take the row: why
    pinned: bool = False
    steps: tuple[tuple[int, int], ...] | None = field(default=None, repr=False)  # reserve_steps(), once

    @property
    def chosen(self) -> Quote | None:
        return self.order[0] if self.order else None

    def reserve_steps(self) -> tuple[tuple[int, int], ...]:
        """(candidates kept, amount to reserve): all of them first, then fewer fallbacks, down to the chosen one."""
        if self.steps is None:
            steps: list[tuple[int, int]] = []
            for keep in range(len(self.order), 0, -1):
                amount = max((q.worst_pico or 0 for q in self.order[:keep]), default=0)
                if not steps or amount < steps[-1][1]:
                    steps.append((keep, amount))
            self.steps = tuple(steps)
        return self.steps


def request_body(config: BatchConfig, row: Row) -> dict[str, Any]:
    """The body a row is sent with: the config's defaults fill what a chat row does not set."""
    if not config.defaults or row.endpoint != "chat":
        return row.body
    return {**config.defaults, **row.body}


class Planner:
    """Plans rows against the catalog as loaded when the job started (see :meth:`Router.offers`)."""

    def __init__(
        self, config: BatchConfig, router: Router, *, budgeted: bool, observed_output: dict[str, float] | None = None
    ) -> None:
        self.config = config
        self.budgeted = budgeted  # worst cases must be known (max_tokens or the catalog's limits)
        self.strict_prices = budgeted and not config.allow_unpriced  # and every way priced
        self.observed_output = observed_output or {}
        self.ways = {c.name: self._ways(router, c.group) for c in config.candidates}
        # The router's own fallbacks of a candidate's group may serve the row too: their prices bound it.
        self.chain_ways = {
            c.name: [w for g in _chain(router, c.group) for w in self._ways(router, g)] for c in config.candidates
        }
        self.server_picks = {c.name: any(_server_picks(d) for d in router.groups[c.group]) for c in config.candidates}
        self.lowest_wins = {c.name: self._lowest_wins(router, c, self.ways[c.name]) for c in config.candidates}
        self.unknown_models: dict[str, int] = {}  # row "model" values that name no candidate: count
        self.counts = router.catalog.prompt_counts  # prompt overheads learned from usage bound the prompts
        # Plans by everything a plan depends on besides the catalog and the config (fixed for the job):
        # rows alike in those are planned alike, so each shape of row is planned once.
        self._plans: dict[tuple[Any, ...], RowPlan] = {}

    @staticmethod
    def _ways(router: Router, group: str) -> list[Way]:
        ways = []
        catalog = router.catalog
        for d in router.groups[group]:
            target = d.target if d.target.policy is None else dataclasses.replace(d.target, policy=None)
            lookups = catalog.candidates_in(catalog.loaded(d.target), target)
            for lookup in lookups:
                offer = lookup.offer
                context = d.context_length or (offer.context_length if offer else None)
                served = offer.provider if len(lookups) > 1 and offer else chat_helper(target).served_by(target, {})
                ways.append(
                    Way(
                        lookup.price,
                        context,
                        offer.max_output_tokens if offer else None,
                        offer.supports_tools if offer else None,
                        offer.supports_structured_output if offer else None,
                        lookup.reason,
                        PromptCounts.key_of(d.target, served),
                    )
                )
        return ways

    @staticmethod
    def _lowest_wins(router: Router, candidate: Candidate, ways: list[Way]) -> bool:
        """Whether the router will serve at the candidate's cheapest way (else expect the dearest)."""
        members = router.groups[candidate.group]
        if len(members) == 1:
            return members[0].target.policy == "cheapest" or len(ways) == 1
        return router.strategy == "cheapest"

    def typical_output(self, candidate: Candidate, max_out: int | None) -> int:
        """The answer length a row is expected to have (observed in this job, configured, or half the max)."""
        observed = self.observed_output.get(candidate.name)
        if observed is not None:
            typical = round(observed)
        elif candidate.expected_output_tokens or self.config.expected_output_tokens:
            typical = candidate.expected_output_tokens or self.config.expected_output_tokens or 0
        else:
            typical = (max_out or 512) // 2
        return min(typical, max_out) if max_out else typical

    # ---------------------------------------------------------------- one row
    def prompt_tokens(self, row: Row) -> int:
        if row.endpoint == "embeddings":
            value = row.body["input"]
            return sum(count_text(t) for t in ([value] if isinstance(value, str) else value))
        return count_request(row.body, row.body["messages"])

    def plan(self, row: Row, body: dict[str, Any]) -> RowPlan:
        """Plan ``row`` whose request body (defaults applied) is ``body``."""
        prompt = self.prompt_tokens(row)
        needs = needs_of(body) if row.endpoint == "chat" else frozenset()
        pinned = self._pinned(row, body)
        # What _quote reads of the body: the answer limit and n (checked ints for rows and defaults).
        caps = tuple(body.get(k) for k in OUTPUT_CAPS)
        n = body.get("n")
        if not (all(_plain_int(c) for c in caps) and _plain_int(n)):
            return self._plan(row, body, prompt, needs, pinned)
        key = (row.endpoint, pinned.name if pinned else None, prompt, caps, n, needs, self.counts.version)
        known = self._plans.get(key)
        if known is None:
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            known = self._plans[key] = self._plan(row, body, prompt, needs, pinned)
            known.reserve_steps()
        return RowPlan(list(known.order), prompt, known.reserve_pico, known.problem, known.pinned, known.steps)

    def _plan(
        self, row: Row, body: dict[str, Any], prompt: int, needs: frozenset[str], pinned: Candidate | None
    ) -> RowPlan:
        quotes: list[Quote] = []
        refusals: list[str] = []
        for candidate in [pinned] if pinned else self.config.candidates:
            if candidate.endpoint != row.endpoint:
                continue
            quote, why = self._quote(candidate, row, body, prompt, needs)
            if quote is None:
                refusals.append(f"{candidate.name}: {why}")
            else:
                quotes.append(quote)
        quotes.sort(key=lambda q: (q.candidate.fallback_only, q.expected_pico is None, q.expected_pico or 0))
        reserve = max((q.worst_pico or 0 for q in quotes), default=0)
        if not quotes:
            kind = "embedding" if row.endpoint == "embeddings" else "chat"
            why = "; ".join(refusals) or f"no {kind} candidate is configured"
            return RowPlan([], prompt, 0, f"no candidate can take this row ({why})", pinned is not None)
        return RowPlan(quotes, prompt, reserve, None, pinned is not None)

    def _pinned(self, row: Row, body: dict[str, Any]) -> Candidate | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return None
        found = self.config.candidate(model)
        if found is None:
            self.unknown_models[model] = self.unknown_models.get(model, 0) + 1
        return found

    def _quote(
        self, candidate: Candidate, row: Row, body: dict[str, Any], prompt: int, needs: frozenset[str]
    ) -> tuple[Quote | None, str]:
        ways = self.ways[candidate.name]
        fitting = [w for w in ways if w.context is None or prompt <= w.context]
        if not fitting and ways:
            limit = max(w.context or 0 for w in ways)
            return None, f"the prompt (~{prompt} tokens) exceeds its context window ({limit})"
        if "tools" in needs:
            fitting = [w for w in fitting if w.tools is not False]
        if "structured_output" in needs:
            fitting = [w for w in fitting if w.structured is not False]
        if not fitting and ways:
            return None, f"the catalog says it does not support {' and '.join(sorted(needs))}"
        priced = [w for w in fitting if w.price is not None]
        if self.strict_prices and self.server_picks[candidate.name] and any(w.price is None for w in ways):
            return None, (
                "the HF router picks its provider and some have no price, so the bill is unknown; "
                "pin a provider (huggingface/<provider>/...) or use :cheapest"
            )
        if self.strict_prices and not priced and fitting:  # unpriced ways are skipped (the router is told so)
            reason = next(w.unpriced_reason for w in fitting if w.price is None) or "no price"
            return None, f"unpriced ({reason}); set a price under pricing: or allow_unpriced: true"
        if not priced:
            return Quote(candidate, None, None, None, None), ""
        n = int(body.get("n") or 1) if row.endpoint == "chat" else 1
        worst_prompt = int(prompt * (1 + PROMPT_MARGIN)) + 1
        unlearned = False
        if row.endpoint == "chat":  # upstreams bill their own prompt count: bound it by what each way reported
            for way in [*fitting, *self.chain_ways[candidate.name]]:
                bound, known = self.counts.bound(way.counts_key, prompt, PROMPT_MARGIN)
                worst_prompt, unlearned = max(worst_prompt, bound), unlearned or not known
        low_prompt = int(prompt * (1 - PROMPT_MARGIN))
        expected: list[int] = []
        worst: list[int] = []
        lowest: list[int] = []
        outputs: list[int] = []
        for way in priced:
            assert way.price is not None
            if row.endpoint == "embeddings":
                out = 0
            else:
                out = max_completion_tokens(body, way.max_output, way.context, worst_prompt) or 0
                if not out and self.budgeted:
                    return None, "set max_tokens (defaults: {max_tokens: ...}): the catalog gives no limit for it"
                if not out:  # no budget: the worst case is unknown, the estimate assumes a typical answer
                    expected.append(way.price.cost_pico(prompt, self.typical_output(candidate, None) * n))
                    lowest.append(way.price.cost_pico(low_prompt, 0))
                    continue
            expected.append(way.price.cost_pico(prompt, self.typical_output(candidate, out) * n if out else 0))
            worst.append(way.price.cost_pico(worst_prompt, out * n))
            lowest.append(way.price.cost_pico(low_prompt, 0))
            outputs.append(out)
        for way in self.chain_ways[candidate.name]:  # the router's own fallbacks of this group
            if way.price is not None and row.endpoint == "chat":
                out = max_completion_tokens(body, way.max_output, way.context, worst_prompt) or 0
                worst.append(way.price.cost_pico(worst_prompt, out * n))
            elif way.price is not None:
                worst.append(way.price.cost_pico(worst_prompt, 0))
        pick = min if self.lowest_wins[candidate.name] else max
        worst_pico = max(worst, default=None)
        return Quote(candidate, pick(expected), min(lowest), worst_pico, max(outputs, default=None), unlearned), ""


_PLANS_KEPT = 4096  # row shapes remembered at once (a job with more starts over: it only costs time)


def _plain_int(value: Any) -> bool:
    return value is None or type(value) is int


def _chain(router: Router, group: str) -> list[str]:
    """Groups the router may move a request for ``group`` to by itself (fallbacks, context-window fallbacks)."""
    chain = [g for g in router.groups_for(group) if g != group]
    for g in [group, *chain]:
        chain += [f for f in router.context_window_fallbacks.get(g, []) if f not in chain and f != group]
    return chain


def _server_picks(d: Any) -> bool:
    """True when the HF router, not we, chooses which provider serves (and so what it costs)."""
    return bool(d.target.gateway_chooses)


def learn_prompt(counts: PromptCounts, row: Row, result: Any, prompt_tokens: int) -> None:
    """Teach the catalog's prompt overheads the upstream's own count of a chat row's prompt."""
    meta = result.meta
    if row.endpoint != "chat" or meta.usage_estimated or result.usage is None:
        return
    key = PromptCounts.key_from(meta.api_base, meta.model_string, meta.provider)
    counts.observe(key, prompt_tokens, result.usage.prompt_tokens, PROMPT_MARGIN)
