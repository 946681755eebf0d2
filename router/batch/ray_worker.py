"""A Ray worker of a batch job: rows through its own Router, under the job's budget in Redis.

:class:`RowWorker` is the callable class of the Ray Data actor pool that
:func:`router.batch.ray_engine.arun_batch_ray` runs. Each actor builds its own Router and Planner
from the batch config (the same planning as the local engine: cheapest fitting candidate, fallbacks),
runs an event loop of its own, and takes blocks of pending rows ``(line, raw)``. Each row is planned,
its worst case is reserved in the shared :class:`router.shared.RedisLedger` (so the cap holds across
every worker), it is sent, and the reservation is settled or released. The row's output line and
journal record go back to the driver, which alone writes the output and the journal.

Before a row is reserved the worker reads the run's flags in Redis: a stop flag (``budget``, set by the
first worker whose row no longer fits once rows in flight settle; ``interrupted`` or ``write_error``,
set by the driver) and the job's current run (a newer run supersedes this one). A stopped worker sends
nothing more; rows in flight finish, the rest come back as "left" (with what they would cost, so the
driver can say what the rest of the job needs).

Example (what the engine does; rows are ``line`` and ``raw`` columns of a pyarrow table)::

    worker = RowWorker(spec)                 # spec: WorkerSpec(config, redis_url, ...)
    results = worker(pa.table({"line": [1], "raw": [b'{"messages": [...]}']}))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from ..errors import BudgetUnavailableError
from ..shared import SharedStateUnavailable
from . import results
from .config import BatchConfig
from .plan import Planner, RowPlan, request_body
from .ray_keys import ABANDONED, KEYS_TTL_S
from .rows import INVALID_LINE, BadRow, Row, invalid_line_message, parse_row
from .sender import Reservation, RowSender

log = logging.getLogger("polyroute.batch")

# Kinds of result rows: recorded (goes to the journal), or not sent because the run stopped: for the
# budget (with what the row would cost), for another reason (interrupted, write error, superseded),
# or because Redis could not be reached (nothing may be reserved).
RECORDED, LEFT_BUDGET, LEFT_STOPPED, LEFT_REDIS = 0, 1, 2, 3
RESULT_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("kind", pa.int8()),
        ("out", pa.binary()),
        ("rec", pa.binary()),
        ("need_expected", pa.int64()),
        ("need_max", pa.int64()),
        ("unknown", pa.string()),
    ]
)
ORPHAN_CHECK_S = 1.0
FLAGS_FRESH_S = 0.02  # a stop flag set by another worker is seen within this (plus a Redis round trip)
SETTLE_WAIT_S = 60.0  # how long a row that does not fit waits for other workers' rows (no progress) to settle


@dataclass
class WorkerSpec:
    """What every worker of a run gets (pickled once by Ray Data)."""

    config: BatchConfig
    redis_url: str = field(repr=False)
    redis_prefix: str
    run: str  # this run's id (random hex): the fence value
    ledger_id: str  # the run's budget in the Redis ledger
    stop_key: str
    fence_key: str
    limit_pico: int | None  # this run's share of the job's cap (budget - journal spend); None: no budget
    concurrency: int  # rows in flight in one worker
    observed_output: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Result:
    line: int
    kind: int
    out: bytes = b""
    rec: bytes = b""
    need_expected: int = 0
    need_max: int = 0
    unknown: str | None = None


class RowWorker:
    """One worker of the pool: ``worker(table)`` runs the table's rows and returns their results."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="polyroute-batch-worker", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> None:
        from ..shared import RedisLedger, RedisLink
        from .runner import build_router, load_facts

        spec = self.spec
        self.router = build_router(spec.config)
        await load_facts(self.router)
        self.planner = Planner(
            spec.config, self.router, budgeted=spec.limit_pico is not None, observed_output=spec.observed_output
        )
        self.link = RedisLink(spec.redis_url, prefix=spec.redis_prefix)
        self.link.bind_loop()  # this loop lives as long as the actor: scripts go over an async client
        self.ledger = RedisLedger(self.link, on_unavailable="refuse")
        self.sender = RowSender(self.router, self.planner, self.ledger, spec.ledger_id)
        self.slots = asyncio.Semaphore(spec.concurrency)
        self.sending = 0  # rows of this worker between their reservation and its settlement
        self.settled = asyncio.Event()
        self.stop: str | None = None  # "budget" | "interrupted" | "write_error" | "superseded" | "redis"
        self._flags: asyncio.Task[None] | None = None
        self._flags_at = -1.0
        self.blocks = 0  # blocks being run
        self._watch: asyncio.Future[None] | None = None
        if _in_ray_actor():  # never in a process that merely built a RowWorker (it would end that process)
            self._watch = asyncio.ensure_future(self._exit_when_orphaned())

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The results of a block of rows (called from Ray Data's threads; rows run on the worker's loop)."""
        found = asyncio.run_coroutine_threadsafe(self._block(batch), self.loop).result()
        return pa.Table.from_pylist([_as_dict(r) for r in found], schema=RESULT_SCHEMA)

    async def _block(self, batch: pa.Table) -> list[_Result]:
        lines: list[int] = batch.column("line").to_pylist()
        raws: list[bytes] = batch.column("raw").to_pylist()
        self.blocks += 1
        try:
            return await asyncio.gather(*(self._safe_row(line, raw) for line, raw in zip(lines, raws, strict=True)))
        finally:
            self.blocks -= 1

    async def _exit_when_orphaned(self) -> None:
        """End this process once no driver reads its run any more (the driver gave the run up, or a newer
        run of the job started) and it runs no block. Ray Data lets go of the actors of a run that failed
        only lazily: they would keep their CPUs from the next run."""
        spec = self.spec
        while True:
            await asyncio.sleep(ORPHAN_CHECK_S)
            if self.blocks:
                continue
            try:  # the raw client: a failure here must not mark the link down for the rows' own calls
                found: list[Any] = await asyncio.to_thread(self.link.sync.mget, spec.stop_key, spec.fence_key)
            except Exception:  # Redis away: it says nothing either way
                continue
            stop, run = found
            given_up = stop == ABANDONED.encode() or (run is not None and run != spec.run.encode())
            if given_up and not self.blocks:  # a missing fence (Redis restarted empty) is not a verdict
                log.info("the run was given up by its driver: worker %s exits", self.name)
                os._exit(0)

    async def _safe_row(self, line: int, raw: bytes) -> _Result:
        try:
            return await self._row(line, raw)
        except Exception as err:  # a bug must not take the block's other rows down; it is recorded and logged
            log.exception("row at line %d failed inside polyroute", line)
            return self._failure(parse_row(raw, line), "internal_error", f"{type(err).__name__}: {err}")

    # ---------------------------------------------------------------- shared flags
    async def _stopped(self) -> str | None:
        """Why this run sends nothing more (None: go on); Redis is read at most every FLAGS_FRESH_S."""
        if self.stop is None:
            now = self.loop.time()
            if self._flags is None or (self._flags.done() and now - self._flags_at > FLAGS_FRESH_S):
                self._flags, self._flags_at = asyncio.ensure_future(self._read_flags()), now
            await asyncio.shield(self._flags)
        return self.stop

    async def _read_flags(self) -> None:
        spec = self.spec
        try:
            stop, run = await self.link.arun(lambda c: c.mget(spec.stop_key, spec.fence_key))
        except Exception as err:  # unreachable (or refusing): nothing more may be reserved
            if not isinstance(err, SharedStateUnavailable):
                log.error("reading the run's flags in Redis failed: %s", type(err).__name__)
            self.stop = "redis"
            return
        if stop:
            self.stop = self.stop or stop.decode()
        elif run is None or run.decode() != spec.run:
            self.stop = self.stop or "superseded"  # a newer run of this job started: this one is dead

    async def _set_stop(self, reason: str) -> None:
        self.stop = self.stop or reason
        try:
            await self.link.arun(lambda c: c.set(self.spec.stop_key, reason, nx=True, ex=KEYS_TTL_S))
        except SharedStateUnavailable:
            self.stop = "redis"

    # ---------------------------------------------------------------- one row
    async def _row(self, line: int, raw: bytes) -> _Result:
        row = parse_row(raw, line)
        if isinstance(row, BadRow):  # the driver records bad lines itself; an input changed under us lands here
            return self._failure(row, INVALID_LINE, invalid_line_message(row))
        stop = await self._stopped()
        if stop is not None and stop != "budget":
            return self._not_sent(line, None, None)
        body = request_body(self.spec.config, row)
        model = body.get("model")
        unknown = model if isinstance(model, str) and model and self.spec.config.candidate(model) is None else None
        try:
            plan = self.planner.plan(row, body)
        except Exception as err:  # one odd row must not stop the job (nor every resume of it)
            log.exception("planning the row at line %d failed", line)
            return self._failure(row, "internal_error", f"line {line}: planning failed: {type(err).__name__}: {err}")
        if stop is not None:
            return self._not_sent(line, plan, unknown)
        if plan.problem is not None:
            return self._failure(row, "no_candidate", f"line {line}: {plan.problem}", unknown=unknown)
        if self.spec.limit_pico is None or not (plan.order and plan.order[0].unlearned):
            return await self._planned(row, body, plan, unknown)
        # The deployment has not reported prompt usage yet: its rows go one at a time (on this worker)
        # until one does, and the next is planned with the real count.
        async with self.planner.counts.async_gate("batch"):
            return await self._planned(row, body, self.planner.plan(row, body), unknown)

    async def _planned(self, row: Row, body: dict[str, Any], plan: RowPlan, unknown: str | None) -> _Result:
        line = row.line
        async with self.slots:
            if await self._stopped() is not None:
                return self._not_sent(line, plan, unknown)
            try:
                reserved = await self._reserve(plan)
            except (BudgetUnavailableError, SharedStateUnavailable):  # the ledger is unreachable: spend nothing
                self.stop = "redis"
                reserved = None
            if reserved is None:
                return self._not_sent(line, plan, unknown)
            if await self._stopped() is not None:  # stopped while this row waited for room: it is not sent
                await self.sender.release(reserved)
                return self._not_sent(line, plan, unknown)
            self.sending += 1
            try:
                done = self._recorded(line, *await self.sender.send(row, body, reserved, plan.prompt_tokens))
            finally:
                self.sending -= 1
                self.settled.set()
                self.settled = asyncio.Event()
        done.unknown = unknown
        return done

    async def _reserve(self, plan: RowPlan) -> Reservation | None:
        """Reserve the row's worst case (see :meth:`RowSender.reserve`), or None when it does not fit.

        When it does not fit, the row waits for this worker's rows in flight, then for
        the other workers' (their reservations in Redis), to settle; when it still does not fit, the
        run stops (the stop flag tells every worker).
        """
        spec = self.spec
        if spec.limit_pico is None:
            return await self.sender.reserve(plan, None)
        seen: tuple[int, int] | None = None
        waiting_since = self.loop.time()
        while True:
            if self.ledger.pending():  # settlements owed since a Redis blip: they free room
                await self.link.arun(lambda _c: self.ledger.flush())
            reservation = await self.sender.reserve(plan, spec.limit_pico)
            if reservation is not None:
                return reservation
            if await self._stopped() is not None:  # any stop, another worker's budget stop included
                return None
            if self.sending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.settled.wait(), 1.0)
                continue
            totals = await self.link.arun(lambda _c: self.ledger.totals(spec.ledger_id))
            if totals[1] > 0:  # other workers' rows are in flight: their settlements may make room
                if totals != seen:
                    seen, waiting_since = totals, self.loop.time()
                if self.loop.time() - waiting_since < SETTLE_WAIT_S:
                    await asyncio.sleep(0.05)
                    continue
            await self._set_stop("budget")
            return None

    def _not_sent(self, line: int, plan: RowPlan | None, unknown: str | None) -> _Result:
        """A row the stopped run does not send; after a budget stop, with what it is expected to need."""
        if self.stop == "redis":
            return _Result(line, LEFT_REDIS, unknown=unknown)
        if self.stop != "budget":
            return _Result(line, LEFT_STOPPED, unknown=unknown)
        chosen = plan.chosen if plan is not None else None
        if plan is None or chosen is None:
            return _Result(line, LEFT_BUDGET, unknown=unknown)
        return _Result(
            line, LEFT_BUDGET, need_expected=chosen.expected_pico or 0, need_max=plan.reserve_pico, unknown=unknown
        )

    def _recorded(self, line: int, out: bytes, rec: dict[str, Any]) -> _Result:
        rec["w"] = self.name  # which worker ran the row (journal readers ignore keys they do not know)
        return _Result(line, RECORDED, out, orjson.dumps(rec))

    def _failure(
        self, row: Row | BadRow, code: str, message: str, candidate: str | None = None, unknown: str | None = None
    ) -> _Result:
        out, rec = results.failure(row.line, row.custom_id, candidate, code, message)
        done = self._recorded(row.line, out, rec)
        done.unknown = unknown
        return done


def _in_ray_actor() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:
        return False


def _as_dict(r: _Result) -> dict[str, Any]:
    return {
        "line": r.line,
        "kind": r.kind,
        "out": r.out,
        "rec": r.rec,
        "need_expected": r.need_expected,
        "need_max": r.need_max,
        "unknown": r.unknown,
    }
