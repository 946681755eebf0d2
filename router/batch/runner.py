"""Run a batch job: read rows, plan each, reserve its worst case, send it through the Router, record it.

Rows stream from the input (never loaded whole). Each row's worst case is reserved against the job's
budget before it is sent; a row that does not fit waits for rows in flight to settle, and when it
still does not fit, no new row is sent, rows in flight finish and the job stops with
:data:`EXIT_BUDGET`, saying how much more the rest needs. Finished rows go to the output and the
journal as they finish (see :mod:`router.batch.journal`), so ``resume=True`` continues a killed or
stopped job with every row exactly once. The budget is the whole job's and the journal keeps it: a
resumed run keeps it unless ``budget_usd`` changes it (see :mod:`router.batch.job`).

Example::

    from router.batch import load_batch_config, run_batch
    result = run_batch("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"), budget_usd=5)
    result.exit_code, result.spent_usd, result.failed
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..budget import OVERSHOOTS
from ..ledger import InMemoryLedger, Ledger
from ..routing.router import Router
from ..tokens import aload_encoding
from . import results
from .config import BatchConfig
from .job import (
    BatchResult,
    begin_run,
    check_job_args,
    end_run,
    open_job,
    stop_tasks,
    tell,
    tell_missing_credentials,
    write_failed,
)
from .journal import Journal
from .plan import Planner, RowPlan, request_body
from .progress import Progress
from .rows import INVALID_LINE, BadRow, Row, SeenIds, invalid_line_message, iter_lines, parse_row
from .sender import Reservation, RowSender

log = logging.getLogger("polyroute.batch")


def build_router(config: BatchConfig) -> Router:
    from ..proxy.server import build_router as from_proxy_config

    return from_proxy_config(config.proxy)


class LoopLedger(InMemoryLedger):
    """The budget ledger of one job on one event loop: :class:`InMemoryLedger` without a lock (every call comes
    from the loop's thread), counting settlements above their reservation in :data:`router.budget.OVERSHOOTS`
    (the job's ledger is not behind a :class:`router.budget.Budget`, which counts them elsewhere). The journal,
    not the ledger, says what the job spent."""

    def __init__(self) -> None:
        super().__init__(one_thread=True, on_overshoot=OVERSHOOTS.add)


class _Job:
    def __init__(
        self,
        config: BatchConfig,
        router: Router,
        journal: Journal,
        planner: Planner,
        *,
        budget_pico: int | None,
        concurrency: int,
        progress: Progress | None,
        client: Any,
        ledger: Ledger,
    ) -> None:
        self.config, self.router, self.journal, self.planner = config, router, journal, planner
        self.concurrency = concurrency
        self.progress = progress
        ledger_id = f"batch-{journal.state.header.get('input_sha256', '')[:16]}-{id(self)}"
        self.sender = RowSender(router, planner, ledger, ledger_id, client)
        spent = journal.state.spent_pico
        self.limit = None if budget_pico is None else budget_pico - spent  # this run's share of the job's cap
        self.in_flight: set[asyncio.Task[None]] = set()
        self.seen_ids = SeenIds()
        self.stop: str | None = None  # "budget" | "interrupted" | "write_error"
        self.write_error: OSError | None = None
        self.needed_expected = 0
        self.needed_max = 0
        self.rows_left = 0
        self.pending: list[tuple[int, bytes, dict[str, Any]]] = []  # finished rows not yet written
        self.slots = asyncio.Semaphore(concurrency)

    # ---------------------------------------------------------------- rows
    def _record(self, line: int, out: bytes, rec: dict[str, Any]) -> None:
        """Queue a finished row; the rows that finish in one turn of the event loop are written together
        at the start of the next (two writes in all, instead of two per row)."""
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append((line, out, rec))

    def flush(self) -> None:
        """Write the queued rows to the output and the journal (see :meth:`Journal.record_many`)."""
        rows, self.pending = self.pending, []
        if not rows or self.write_error is not None:
            return
        committed = self.journal.record_many(rows)
        if self.progress is not None:
            for _, _, rec in rows[:committed]:
                self.progress.row(rec["ok"], rec.get("c"))
        if self.journal.broken is not None:  # nothing more can be recorded: stop sending
            self.write_error = self.journal.broken
            self.stop = "write_error"

    def _fail(self, row: Row | BadRow, code: str, message: str) -> None:
        out, rec = results.failure(row.line, row.custom_id, None, code, message)
        self._record(row.line, out, rec)

    async def _reserve(self, plan: RowPlan) -> Reservation | None:
        """Reserve a row's worst case (see :meth:`RowSender.reserve`), waiting for rows in flight to settle;
        None: the budget is spent. A row that goes with fewer fallbacks has its plan cut to them."""
        while True:
            reservation = await self.sender.reserve(plan, self.limit)
            if reservation is not None:
                if reservation.rid:
                    plan.order, plan.reserve_pico, plan.steps = reservation.order, reservation.amount, None
                return reservation
            if not self.in_flight:
                return None
            await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)

    async def feed(self, input_path: Path) -> None:
        lines = iter_lines(input_path)
        slots = self.slots
        while True:
            chunk = await asyncio.to_thread(lambda: list(itertools.islice(lines, 256)))
            if not chunk:
                return
            for line, raw in chunk:
                row = parse_row(raw, line)
                if self.stop in ("interrupted", "write_error"):
                    return
                if isinstance(row, BadRow) or self.seen_ids.repeated(row.custom_id):
                    if self.stop is not None and not self.journal.state.is_done(line):
                        self.rows_left += 1
                    elif not self.journal.state.is_done(line):
                        self._fail(row, INVALID_LINE, invalid_line_message(row))
                    continue
                if self.journal.state.is_done(line):
                    continue
                body = request_body(self.config, row)
                try:
                    plan = self.planner.plan(row, body)
                except Exception as err:  # one odd row must not stop the job (nor every resume of it)
                    log.exception("planning the row at line %d failed", line)
                    self._fail(row, "internal_error", f"line {line}: planning failed: {type(err).__name__}: {err}")
                    continue
                if self.stop is not None:
                    self._count_left(plan)
                    continue
                if plan.problem is not None:
                    self._fail(row, "no_candidate", f"line {line}: {plan.problem}")
                    continue
                if self.limit is not None:
                    plan = await self._learned_plan(row, body, plan)
                await slots.acquire()
                if self.stop is not None:  # interrupted while waiting for a slot
                    slots.release()
                    self._count_left(plan)
                    continue
                reservation = await self._reserve(plan)
                if reservation is None or self.stop is not None:
                    slots.release()
                    if reservation is not None:
                        await self.sender.release(reservation)
                    self.stop = self.stop or "budget"
                    self._count_left(plan)
                    continue
                task = asyncio.create_task(self._send(row, body, plan, reservation))
                self.in_flight.add(task)
                task.add_done_callback(self._sent)

    async def _learned_plan(self, row: Row, body: dict[str, Any], plan: RowPlan) -> RowPlan:
        """A row for a deployment that has not reported prompt usage yet goes alone: its reservation holds a
        generous first-call allowance, and once a row reports, the rows after it are planned with the real count."""
        while plan.order and plan.order[0].unlearned and self.in_flight:
            await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
            plan = self.planner.plan(row, body)
        return plan

    def _sent(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.slots.release()

    def _count_left(self, plan: RowPlan) -> None:
        self.rows_left += 1
        chosen = plan.chosen
        if chosen is not None:
            self.needed_expected += chosen.expected_pico or 0
            self.needed_max += plan.reserve_pico

    async def _send(self, row: Row, body: dict[str, Any], plan: RowPlan, reservation: Reservation) -> None:
        out, rec = await self.sender.send(row, body, reservation, plan.prompt_tokens)
        self._record(row.line, out, rec)


async def arun_batch(
    input_path: str | Path,
    output: str | Path,
    config: BatchConfig,
    *,
    budget_usd: float | None = None,
    concurrency: int | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    progress: Progress | None = None,
    router: Router | None = None,
    client: Any = None,
    stop: asyncio.Event | None = None,
    notice: Callable[[str], None] | None = None,
) -> BatchResult:
    """Run (or resume) a batch job; see :func:`run_batch`."""
    input_path, output = Path(input_path), Path(output)
    concurrency = config.concurrency if concurrency is None else concurrency
    check_job_args(input_path, budget_usd, concurrency)
    router = router or build_router(config)  # every config mistake surfaces before the job exists
    tell_missing_credentials(router, notice)
    await load_facts(router)
    journal, budget = await open_job(
        input_path,
        output,
        budget_usd=budget_usd,
        config_budget_usd=config.budget_usd,
        resume=resume,
        retry_failed=retry_failed,
    )
    budget_pico = budget.cap_pico
    try:
        tell(budget, notice)
        planner = Planner(
            config, router, budgeted=budget_pico is not None, observed_output=journal.state.observed_output()
        )
        job = _Job(
            config,
            router,
            journal,
            planner,
            budget_pico=budget_pico,
            concurrency=concurrency,
            progress=progress,
            client=client,
            ledger=LoopLedger(),
        )
        run, drawing = begin_run(journal, budget_pico, concurrency, progress)
        watcher = asyncio.create_task(_watch(stop, job)) if stop is not None else None
        try:
            await job.feed(input_path)
            while job.in_flight:
                await asyncio.wait(set(job.in_flight))
        finally:
            await stop_tasks(drawing, watcher)
            if job.in_flight:  # cancelled: rows in flight stay pending
                for task in job.in_flight:
                    task.cancel()
                await asyncio.gather(*job.in_flight, return_exceptions=True)
            job.flush()  # rows that finished are recorded, however the job ends
        if job.write_error is not None:
            raise write_failed(output, job.write_error)
        return end_run(
            journal,
            run,
            output,
            budget,
            job.stop,
            needed_expected=job.needed_expected,
            needed_max=job.needed_max,
            rows_left=job.rows_left,
            unknown_models=planner.unknown_models,
            result_class=BatchResult,
        )
    finally:
        journal.close()


async def _watch(stop: asyncio.Event, job: _Job) -> None:
    await stop.wait()
    job.stop = job.stop or "interrupted"


async def load_facts(router: Router) -> None:
    """Catalogs and the tokenizer, once, before the first row (rows are planned from them)."""
    await aload_encoding()
    for family in sorted(router.catalog_families):
        await router.catalog.asource(family)


def run_batch(input_path: str | Path, output: str | Path, config: BatchConfig, **kwargs: Any) -> BatchResult:
    """Run a batch job to its end (or its budget); see :func:`arun_batch` for the arguments.

    Example::

        result = run_batch("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"),
                           budget_usd=5, concurrency=32)
        if result.exit_code == EXIT_BUDGET:
            print(f"needs ~${result.needed_expected_usd:.2f} more")
    """
    return asyncio.run(arun_batch(input_path, output, config, **kwargs))
