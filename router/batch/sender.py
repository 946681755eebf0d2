"""Send one planned row through the Router under its reservation: what both batch engines do per row.

The local engine (:mod:`router.batch.runner`) and each Ray worker (:mod:`router.batch.ray_worker`) plan
rows, decide when a row may go and where its result is written; in between, a :class:`RowSender` does
the same for both: reserve the row's worst case in the engine's ledger, send it (with its fallbacks),
settle what it cost or release the reservation, and build the row's output line and journal record,
naming the candidate that served it.

Example::

    sender = RowSender(router, planner, ledger, "batch-job-1")
    reservation = await sender.reserve(plan, limit_pico)   # None: the row does not fit now
    out, rec = await sender.send(row, body, reservation, plan.prompt_tokens)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from providers.errors import PolyrouteError

from ..ledger import Ledger
from ..routing.router import Router
from . import results
from .plan import Planner, Quote, RowPlan, learn_prompt
from .rows import Row

log = logging.getLogger("polyroute.batch")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a row holds in the ledger while it is sent."""

    rid: str  # the ledger's reservation id; "" when the job has no budget (nothing is reserved)
    order: list[Quote]  # the candidates it covers: order[0] gets the row, the rest are its fallbacks
    amount: int  # pico-USD reserved (the row's worst case over ``order``)


class RowSender:
    """Reserves, sends and settles rows of one job in one ledger (``ledger_id`` is the job's budget there)."""

    def __init__(self, router: Router, planner: Planner, ledger: Ledger, ledger_id: str, client: Any = None) -> None:
        self.router, self.planner, self.ledger, self.ledger_id = router, planner, ledger, ledger_id
        self.client = client
        self.extra: dict[str, Any] = {"priced_only": True} if planner.strict_prices else {}

    async def reserve(self, plan: RowPlan, limit: int | None) -> Reservation | None:
        """Reserve the row's worst case now, or None when it does not fit (``limit`` None: no budget).

        When the worst case over all the row's fallbacks does not fit, the row may still go with only the
        fallbacks that do: a pricey last resort never stops a job by itself. Waiting for room is the
        engine's part (it knows what is in flight).
        """
        if limit is None:
            return Reservation("", plan.order, plan.reserve_pico)
        for keep, amount in plan.reserve_steps():
            rid = await self.ledger.areserve(self.ledger_id, amount, limit)
            if rid is not None:
                return Reservation(rid, plan.order[:keep], amount)
        return None

    async def release(self, reservation: Reservation) -> None:
        if reservation.rid:
            await self.ledger.arelease(self.ledger_id, reservation.rid)

    async def send(
        self, row: Row, body: dict[str, Any], reservation: Reservation, prompt_tokens: int
    ) -> tuple[bytes, dict[str, Any]]:
        """Send the row and close its reservation; its output line and journal record, success or not."""
        order = reservation.order
        chosen = order[0].candidate
        fallbacks = [q.candidate.group for q in order[1:]] or None
        extra = self.extra
        started = time.perf_counter()
        try:
            result: Any
            if row.endpoint == "chat":
                params = {k: v for k, v in body.items() if k not in ("model", "messages")}
                result = await self.router.acompletion(
                    chosen.group, body["messages"], fallbacks=fallbacks, client=self.client, **params, **extra
                )
            else:
                params = {k: v for k, v in body.items() if k not in ("model", "input")}
                result = await self.router.aembedding(
                    chosen.group, body["input"], fallbacks=fallbacks, client=self.client, **params, **extra
                )
        except asyncio.CancelledError:
            await self.release(reservation)
            raise
        except PolyrouteError as err:
            await self.release(reservation)
            served = candidate_of(getattr(err, "attempts", None), order) or chosen.name
            elapsed_ms = (time.perf_counter() - started) * 1000
            return results.failure(
                row.line, row.custom_id, served, results.error_code(err), err.message, err, elapsed_ms
            )
        except Exception as err:  # a bug must not take the other rows down; it is recorded and logged
            await self.release(reservation)
            log.exception("row at line %d failed inside polyroute", row.line)
            return results.failure(
                row.line, row.custom_id, chosen.name, "internal_error", f"{type(err).__name__}: {err}"
            )
        meta = result.meta
        if reservation.rid:  # an unpriced answer counts as its whole reservation: the cap must hold
            cost = reservation.amount if meta.cost_pico is None else meta.cost_pico
            await self.ledger.asettle(self.ledger_id, reservation.rid, cost)
            learn_prompt(self.planner.counts, row, result, prompt_tokens)
        served = candidate_of(meta.attempts, order) or chosen.name
        return results.success(row.line, row.custom_id, served, result, meta)


def candidate_of(attempts: list[Any] | None, order: list[Quote]) -> str | None:
    """The candidate whose group made the last attempt."""
    deployment = attempts[-1].deployment if attempts else None
    if not deployment:
        return None
    group = deployment.partition("[")[0]  # "group[i]:model"
    return next((q.candidate.name for q in order if q.candidate.group == group), None)
