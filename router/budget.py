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
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from providers.errors import InvalidRequestArgumentError, PolyrouteError
from providers.spec import Target
from providers.tasks import chat_helper

from .calibration import PromptCounts, with_margin
from .errors import BudgetExceededError, UnpricedCallError
from .ledger import InMemoryLedger, Ledger
from .pricing.catalog import PriceLookup
from .pricing.prices import PICO_PER_USD, pico_to_usd, to_decimal
from .tokens import count_messages, count_text

_ORPHANS: set[asyncio.Future[None]] = set()
log = logging.getLogger("polyroute.budget")
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


class Overshoots:
    """Settlements above their reservation: the upstream billed more than the worst case allowed for.

    Each one is a bug in a worst case (counted and exported as ``polyroute_budget_overshoot_usd_total``);
    the adversarial tests assert there are none. One instance per process is the default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.pico = 0

    def add(self, pico: int, budget_name: str) -> None:
        with self._lock:
            self.count += 1
            self.pico += pico
        log.warning("budget %r: a call settled $%.6f above its reservation", budget_name, pico_to_usd(pico))

    @property
    def usd(self) -> float:
        return pico_to_usd(self.pico)


OVERSHOOTS = Overshoots()


@dataclass(slots=True)
class PromptFacts:
    """What a reservation knows of its prompt, to learn the deployment's overhead from the reported usage."""

    counts: PromptCounts
    target: Target
    local: int  # our count of the prompt
    margin: float
    bound: int  # the upper bound reserved for it
    completion_cap: int = 0  # the most answer tokens reserved (the upstream stops there)

    def learn(self, usage: Any, served: str | None) -> None:
        reported = _prompt_tokens(usage)
        if reported is not None:
            self.counts.observe(self.counts.key_of(self.target, served), self.local, reported, self.margin)


def _prompt_tokens(usage: Any) -> int | None:
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else getattr(usage, "prompt_tokens", None)
    return value if type(value) is int and value >= 0 else None


class Reservation:
    """One reserved amount; settle or release it exactly once (repeats are no-ops).

    ``usage`` given to :meth:`settle` is the upstream's own count (never a local estimate): it teaches
    the deployment's prompt overhead. A settlement above the reserved amount is counted in
    :data:`OVERSHOOTS`."""

    __slots__ = ("amount", "budget", "closed", "gate", "id", "prompt")

    def __init__(self, budget: Budget, reservation_id: str, amount: int) -> None:
        self.budget = budget
        self.id = reservation_id
        self.amount = amount
        self.closed = False
        self.prompt: PromptFacts | None = None
        self.gate: threading.Lock | asyncio.Lock | None = None  # held while a deployment is unlearned

    def settle(self, actual_pico: int | None, usage: Any = None, served: str | None = None) -> None:
        """Close with the real cost (None: unknown, the reserved amount is kept as spent)."""
        if not self.closed:  # the ledger settles a reservation once, so a retry after a failed write is safe
            amount = self.amount if actual_pico is None else actual_pico
            self.budget.ledger.settle(self.budget.name, self.id, amount)
            self.closed = True
            self._closed(amount, usage, served)

    def release(self) -> None:
        if not self.closed:
            self.budget.ledger.release(self.budget.name, self.id)
            self.closed = True
            self._closed(0, None, None)

    async def asettle(self, actual_pico: int | None, usage: Any = None, served: str | None = None) -> None:
        if not self.closed:
            amount = self.amount if actual_pico is None else actual_pico
            await self.budget.ledger.asettle(self.budget.name, self.id, amount)
            self.closed = True
            self._closed(amount, usage, served)

    async def arelease(self) -> None:
        if not self.closed:
            await self.budget.ledger.arelease(self.budget.name, self.id)
            self.closed = True
            self._closed(0, None, None)

    def _closed(self, settled: int, usage: Any, served: str | None) -> None:
        if settled > self.amount:
            self.budget.overshoots.add(settled - self.amount, self.budget.name)
        if usage is not None and self.prompt is not None:
            self.prompt.learn(usage, served)
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.release()


@dataclass(frozen=True, slots=True)
class WorstCase:
    amount_pico: int
    prompt_tokens: int  # the bound reserved for the prompt
    completion_tokens: int
    local_prompt_tokens: int = 0  # our own count of it
    calibrated: bool = True  # False: some candidate has not reported usage yet (calls go one at a time)


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

    overshoots: Overshoots = OVERSHOOTS  # where settlements above their reservation are counted

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

    # A per-request view (see for_request) tags its reservations and reports each one as it is made.
    tag: str | None = None
    on_reserved: Callable[[str, int], None] | None = None

    def for_request(self, tag: str, on_reserved: Callable[[str, int], None] | None = None) -> Budget:
        """This budget (same ledger, name and limit) for one request: its reservations carry ``tag`` (the
        request id) in the ledger, and ``on_reserved(reservation_id, amount)`` is called as soon as one is
        made, before the upstream call (the proxy journals it)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.tag = tag
        view.on_reserved = on_reserved
        return view

    def reserve(self, amount_pico: int, what: str = "this call") -> Reservation:
        if self.tag is None:  # untagged: ledgers written before tags existed keep working
            rid = self.ledger.reserve(self.name, amount_pico, self.limit_pico)
        else:
            rid = self.ledger.reserve(self.name, amount_pico, self.limit_pico, tag=self.tag)
        if rid is None:
            raise self._refusal(amount_pico, what)
        if self.on_reserved is not None:
            self.on_reserved(rid, amount_pico)
        return Reservation(self, rid, amount_pico)

    async def areserve(self, amount_pico: int, what: str = "this call") -> Reservation:
        # The ledger write may finish after our caller was cancelled (it runs in a thread): shield
        # it, and if we are cancelled, release whatever it reserved as soon as it lands.
        if self.tag is None:
            task = asyncio.ensure_future(self.ledger.areserve(self.name, amount_pico, self.limit_pico))
        else:
            task = asyncio.ensure_future(self.ledger.areserve(self.name, amount_pico, self.limit_pico, tag=self.tag))
        try:
            rid = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_orphan)
            raise
        if rid is None:  # the numbers for the message are read off the event loop too
            raise await asyncio.to_thread(self._refusal, amount_pico, what)
        if self.on_reserved is not None:
            self.on_reserved(rid, amount_pico)
        return Reservation(self, rid, amount_pico)

    def _release_orphan(self, task: asyncio.Future[str | None]) -> None:
        if task.cancelled() or task.exception() is not None or task.result() is None:
            return
        rid = task.result()
        assert rid is not None
        orphan = asyncio.ensure_future(self.ledger.arelease(self.name, rid))
        _ORPHANS.add(orphan)
        orphan.add_done_callback(_ORPHANS.discard)

    # ---------------------------------------------------------------- reserving one call
    def reserve_worst(
        self, target: Target, worst: Callable[[], WorstCase], counts: PromptCounts | None = None
    ) -> Reservation:
        """Reserve a call's worst case. A deployment that has not reported usage yet takes one budgeted
        call at a time: the next one waits for its usage and is then bounded by it."""
        found = worst()
        gate = None
        if counts is not None and not found.calibrated:
            gate = counts.sync_gate(counts.gate_of(target))
            if gate.acquire(timeout=GATE_WAIT_S):
                found = worst()  # learned meanwhile?
            else:
                gate = None
        try:
            reservation = self.reserve(found.amount_pico, repr(target.model_string))
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        return _admitted(reservation, gate, self, target, found, counts)

    async def areserve_worst(
        self, target: Target, worst: Callable[[], Awaitable[WorstCase]], counts: PromptCounts | None = None
    ) -> Reservation:
        """Async :meth:`reserve_worst`."""
        found = await worst()
        gate = None
        if counts is not None and not found.calibrated:
            gate = counts.async_gate(counts.gate_of(target))
            try:
                await asyncio.wait_for(gate.acquire(), GATE_WAIT_S)
                found = await worst()
            except asyncio.TimeoutError:
                gate = None
        try:
            reservation = await self.areserve(found.amount_pico, repr(target.model_string))
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        return _admitted(reservation, gate, self, target, found, counts)

    # ---------------------------------------------------------------- worst cases
    def priced(self, target: Target, candidates: list[PriceLookup], what: str = "call") -> list[PriceLookup]:
        """The candidates with a price; refuses the call when one has none (unless ``allow_unpriced``)."""
        priced = [c for c in candidates if c.price is not None]
        if len(priced) < len(candidates) and not self.allow_unpriced:
            reason = next((c.reason for c in candidates if c.price is None), None) or "no price"
            raise UnpricedCallError(
                f"{what} to {target.model_string!r} refused under budget {self.name!r}: {reason}. Set a price "
                "(Catalog.set_price) or use Budget(..., allow_unpriced=True)"
            )
        return priced

    def worst_case(
        self,
        target: Target,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        candidates: list[PriceLookup],
        counts: PromptCounts | None = None,
    ) -> WorstCase:
        """The most this call can cost, from every price it could be charged at.

        The prompt is bounded per candidate deployment: our count with the budget's margin, plus the
        overhead ``counts`` learned for it (a generous first-call overhead while it has reported none)."""
        priced = self.priced(target, candidates)
        local = count_request(body, messages)
        n = body.get("n") or 1
        worst = 0
        completion_max = 0
        prompt_max = with_margin(local, self.prompt_margin) + 1
        known = True
        for candidate in priced or candidates:
            prompt = prompt_max
            if counts is not None:
                served = candidate.offer.provider if len(candidates) > 1 and candidate.offer else None
                bound, learned = counts.bound(
                    counts.key_of(target, served or chat_helper(target).served_by(target, {})),
                    local,
                    self.prompt_margin,
                )
                prompt, known = max(prompt, bound), known and learned
                prompt_max = max(prompt_max, prompt)
            if candidate.price is None:
                continue
            completion = _max_completion_tokens(target, body, candidate, prompt) * n
            worst = max(worst, candidate.price.cost_pico(prompt, completion))
            completion_max = max(completion_max, completion)
        return WorstCase(worst, prompt_max, completion_max, local, known)


OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")


def max_completion_tokens(body: dict[str, Any], max_output: int | None, context: int | None, prompt: int) -> int | None:
    """The longest answer a call may get: its max_tokens, else the model's max output, else the rest of its
    context window (None: nothing says)."""
    # Upstreams honour different fields (TGI takes max_tokens over max_completion_tokens): the largest bounds all.
    caps = [int(v) for k in OUTPUT_CAPS if isinstance(v := body.get(k), int | float) and not isinstance(v, bool)]
    explicit = max(caps, default=0)
    if explicit > 0:
        return explicit
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


# ---------------------------------------------------------------- reserving one call
GATE_WAIT_S = 120.0  # a first call that never ends must not stall its deployment for ever


def _admitted(
    reservation: Reservation, gate: Any, budget: Budget, target: Target, worst: WorstCase, counts: PromptCounts | None
) -> Reservation:
    """Attach what settlement learns from, and keep the gate held until it settles while still unlearned."""
    if counts is not None:
        local, margin = worst.local_prompt_tokens, budget.prompt_margin
        reservation.prompt = PromptFacts(counts, target, local, margin, worst.prompt_tokens, worst.completion_tokens)
    if gate is not None:
        if worst.calibrated:
            gate.release()
        else:
            reservation.gate = gate
    return reservation


class Hold:
    """One call's reservation as a context: settled on success, released on error — unless the upstream
    had answered (or its response had started), when it may bill the call: then the reserved worst case
    is settled, in doubt, and the error says so (``charged_pico``).

    Example::

        with Hold(budget.reserve(amount)) as hold:
            response = send(...)
            hold.answered = True
            hold.settle(cost_pico, usage, served)
    """

    __slots__ = ("answered", "reservation")

    def __init__(self, reservation: Reservation | None) -> None:
        self.reservation = reservation
        self.answered = False

    def hand_over(self) -> Reservation | None:
        """Give the reservation to what settles it later (a stream); the hold lets it be."""
        reservation, self.reservation = self.reservation, None
        return reservation

    def settle(self, actual_pico: int | None, usage: Any = None, served: str | None = None) -> None:
        if self.reservation is not None:
            self.reservation.settle(actual_pico, usage, served)

    async def asettle(self, actual_pico: int | None, usage: Any = None, served: str | None = None) -> None:
        if self.reservation is not None:
            await self.reservation.asettle(actual_pico, usage, served)

    def _in_doubt(self, err: BaseException | None) -> bool:
        return err is not None and (self.answered or bool(getattr(err, "response_started", False)))

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        reservation = self.reservation
        if reservation is None or reservation.closed:
            return
        if self._in_doubt(err):
            reservation.settle(None)
            charged(err, reservation.amount)
        else:
            reservation.release()

    async def __aenter__(self) -> Hold:
        return self

    async def __aexit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        reservation = self.reservation
        if reservation is None or reservation.closed:
            return
        if self._in_doubt(err):
            await reservation.asettle(None)
            charged(err, reservation.amount)
        else:
            await reservation.arelease()


def charged(err: BaseException | None, amount: int) -> None:
    """Say on the error (and so on its attempt) what the budget was charged for it; spend records add it."""
    if isinstance(err, PolyrouteError):
        err.charged_pico = amount
        if err.attempts:
            err.attempts[-1].charged_pico = amount
