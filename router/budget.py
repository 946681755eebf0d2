"""Budgets as reservations: a call reserves its worst case before it is sent and settles after.

Before a call: the worst case — counted prompt tokens (plus a margin, since the provider's tokenizer
may count more than ours) and ``max_tokens`` (or the model's max output) at the highest price the
call could be charged — is reserved atomically in the ledger; if it does not fit, the call is
refused with :class:`BudgetExceededError` without reaching the upstream. After it: the reservation
is settled to the real cost; a failed call releases it. Concurrent calls can never push settled
spend past the limit.

Example::

    budget = Budget(5.00, ledger=SqliteLedger("spend.db"), name="eval-run")
    completion(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=msgs, max_tokens=500,
               budget=budget)
    budget.spent_usd, budget.remaining_usd
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from providers.errors import BudgetExceededError, InvalidRequestArgumentError, UnpricedCallError
from providers.spec import Target

from .ledger import InMemoryLedger, Ledger
from .pricing.catalog import PriceLookup
from .pricing.prices import PICO_PER_USD, pico_to_usd, to_decimal
from .tokens import count_messages, count_text

_ORPHANS: set[asyncio.Future[None]] = set()
IMAGE_TOKENS = 2048  # per image part: a generous allowance, vision models count 256 to ~1,800


def count_request(body: dict[str, Any], messages: list[dict[str, Any]]) -> int:
    """Prompt tokens of a request: messages, plus tool and response-format definitions and images."""
    import orjson

    total = count_messages(messages)
    for key in ("tools", "response_format"):
        if body.get(key):
            total += count_text(orjson.dumps(body[key]).decode())
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            total += IMAGE_TOKENS * sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return total


class Reservation:
    """One reserved amount; settle or release it exactly once (repeats are no-ops)."""

    __slots__ = ("amount", "budget", "closed", "id")

    def __init__(self, budget: Budget, reservation_id: str, amount: int) -> None:
        self.budget = budget
        self.id = reservation_id
        self.amount = amount
        self.closed = False

    def settle(self, actual_pico: int | None) -> None:
        """Close with the real cost (None: unknown, the reserved amount is kept as spent)."""
        if not self.closed:  # the ledger settles a reservation once, so a retry after a failed write is safe
            self.budget.ledger.settle(self.budget.name, self.id, self.amount if actual_pico is None else actual_pico)
            self.closed = True

    def release(self) -> None:
        if not self.closed:
            self.budget.ledger.release(self.budget.name, self.id)
            self.closed = True

    async def asettle(self, actual_pico: int | None) -> None:
        if not self.closed:
            amount = self.amount if actual_pico is None else actual_pico
            await self.budget.ledger.asettle(self.budget.name, self.id, amount)
            self.closed = True

    async def arelease(self) -> None:
        if not self.closed:
            await self.budget.ledger.arelease(self.budget.name, self.id)
            self.closed = True


@dataclass(frozen=True, slots=True)
class WorstCase:
    amount_pico: int
    prompt_tokens: int
    completion_tokens: int


class Budget:
    """A spending limit in USD backed by a ledger (in memory by default).

    ``name`` identifies the budget in a shared ledger (SQLite file, Redis): two ``Budget`` objects
    with the same name and ledger draw on the same money. ``allow_unpriced`` lets calls with no
    known price through (they reserve and settle 0 and are flagged on their results).
    """

    def __init__(
        self,
        limit_usd: float | str | Decimal,
        ledger: Ledger | None = None,
        *,
        name: str | None = None,
        allow_unpriced: bool = False,
        prompt_margin: float = 0.25,
    ) -> None:
        limit = to_decimal(limit_usd)
        if limit is None:
            raise InvalidRequestArgumentError(f"Budget limit must be a non-negative number of USD, got {limit_usd!r}")
        if prompt_margin < 0:
            raise InvalidRequestArgumentError(f"prompt_margin must be >= 0, got {prompt_margin}")
        self.limit_pico = int(limit * PICO_PER_USD)
        self.ledger: Ledger = ledger or InMemoryLedger()
        self.name = name or f"budget-{os.urandom(6).hex()}"
        self.allow_unpriced = allow_unpriced
        self.prompt_margin = prompt_margin

    def __repr__(self) -> str:
        return f"Budget(name={self.name!r}, limit_usd={self.limit_usd}, spent_usd={self.spent_usd})"

    @property
    def limit_usd(self) -> float:
        return pico_to_usd(self.limit_pico)

    @property
    def spent_usd(self) -> float:
        return pico_to_usd(self.ledger.totals(self.name)[0])

    @property
    def reserved_usd(self) -> float:
        return pico_to_usd(self.ledger.totals(self.name)[1])

    @property
    def remaining_usd(self) -> float:
        spent, reserved = self.ledger.totals(self.name)
        return pico_to_usd(self.limit_pico - spent - reserved)

    def _refusal(self, amount: int, what: str) -> BudgetExceededError:
        spent, reserved = self.ledger.totals(self.name)
        return BudgetExceededError(
            f"budget {self.name!r} cannot cover {what}: worst case ${pico_to_usd(amount):.6f}, "
            f"${pico_to_usd(self.limit_pico - spent - reserved):.6f} left of ${self.limit_usd:.6f} "
            f"(${pico_to_usd(spent):.6f} spent, ${pico_to_usd(reserved):.6f} reserved by calls in flight); "
            "raise the limit or lower max_tokens",
            limit_usd=self.limit_usd,
            spent_usd=pico_to_usd(spent),
            reserved_usd=pico_to_usd(reserved),
            needed_usd=pico_to_usd(amount),
        )

    def reserve(self, amount_pico: int, what: str = "this call") -> Reservation:
        rid = self.ledger.reserve(self.name, amount_pico, self.limit_pico)
        if rid is None:
            raise self._refusal(amount_pico, what)
        return Reservation(self, rid, amount_pico)

    async def areserve(self, amount_pico: int, what: str = "this call") -> Reservation:
        # The ledger write may finish after our caller was cancelled (it runs in a thread): shield
        # it, and if we are cancelled, release whatever it reserved as soon as it lands.
        task = asyncio.ensure_future(self.ledger.areserve(self.name, amount_pico, self.limit_pico))
        try:
            rid = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_orphan)
            raise
        if rid is None:  # the numbers for the message are read off the event loop too
            raise await asyncio.to_thread(self._refusal, amount_pico, what)
        return Reservation(self, rid, amount_pico)

    def _release_orphan(self, task: asyncio.Future[str | None]) -> None:
        if task.cancelled() or task.exception() is not None or task.result() is None:
            return
        rid = task.result()
        assert rid is not None
        orphan = asyncio.ensure_future(self.ledger.arelease(self.name, rid))
        _ORPHANS.add(orphan)
        orphan.add_done_callback(_ORPHANS.discard)

    # ---------------------------------------------------------------- worst case of a chat call
    def worst_case(
        self, target: Target, body: dict[str, Any], messages: list[dict[str, Any]], candidates: list[PriceLookup]
    ) -> WorstCase:
        """The most this call can cost, from every price it could be charged at."""
        priced = [c for c in candidates if c.price is not None]
        if len(priced) < len(candidates) and not self.allow_unpriced:
            reason = next((c.reason for c in candidates if c.price is None), None) or "no price"
            raise UnpricedCallError(
                f"call to {target.model_string!r} refused under budget {self.name!r}: {reason}. Set a price "
                "(Catalog.set_price) or use Budget(..., allow_unpriced=True)"
            )
        prompt = int(count_request(body, messages) * (1 + self.prompt_margin)) + 1
        n = body.get("n") or 1
        worst = 0
        completion_max = 0
        for candidate in priced:
            completion = _max_completion_tokens(target, body, candidate, prompt) * n
            assert candidate.price is not None
            worst = max(worst, candidate.price.cost_pico(prompt, completion))
            completion_max = max(completion_max, completion)
        return WorstCase(worst, prompt, completion_max)


def max_completion_tokens(body: dict[str, Any], max_output: int | None, context: int | None, prompt: int) -> int | None:
    """The longest answer a call may get: its max_tokens, else the model's max output, else the rest of its
    context window (None: nothing says)."""
    explicit = body.get("max_completion_tokens") or body.get("max_tokens")
    if explicit:
        return int(explicit)
    if max_output:
        return max_output
    if context:
        return max(context - prompt, 1)
    return None


def _max_completion_tokens(target: Target, body: dict[str, Any], candidate: PriceLookup, prompt: int) -> int:
    offer = candidate.offer
    found = max_completion_tokens(
        body, offer.max_output_tokens if offer else None, offer.context_length if offer else None, prompt
    )
    if found is not None:
        return found
    raise InvalidRequestArgumentError(
        f"set max_tokens for {target.model_string!r}: under a budget the worst case must be known, and the catalog "
        "gives no max output or context length for it"
    )
