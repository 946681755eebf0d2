"""The driver side of a Ray batch run: the pending rows as blocks, the dataset over the worker pool, and
the results streamed back and recorded (the driver alone writes the output and the journal).

See :mod:`router.batch.ray_engine` for the whole run; :mod:`router.batch.ray_worker` for what a worker does.

Example (what the engine does)::

    refs = pending_blocks(ray, input_path, journal.state, block_rows, bad)
    driver = Driver(journal, keys, progress)
    with quiet_ray_data(ray):
        worker_error = await stream_results(row_dataset(ray, refs, spec, workers), driver, stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from . import results
from .journal import JobState, Journal
from .progress import Progress
from .ray_keys import RunKeys
from .rows import INVALID_LINE, BadRow, SeenIds, invalid_line_message, iter_lines, parse_row

CALLS_PER_WORKER = 4  # blocks a worker runs at once (its rows share the worker's concurrency)
QUEUED = 2  # result blocks waiting for the driver: finished rows a kill -9 of the driver would lose
ACTORS_START_S = 300  # how long the pool may take to start (a cluster without the CPUs for it: an error)
log = logging.getLogger("polyroute.batch")


class Driver:
    def __init__(self, journal: Journal, keys: RunKeys, progress: Progress | None) -> None:
        self.journal, self.keys, self.progress = journal, keys, progress
        self.workers: Counter[str] = Counter()
        self.unknown_models: Counter[str] = Counter()
        self.rows_left = self.needed_expected = self.needed_max = 0
        self.budget_left = 0  # rows not sent because the budget could not cover them
        self.redis_lost = False
        self.write_error: OSError | None = None
        self.interrupted = False
        self.halt = threading.Event()  # the thread pulling results stops at the next block
        self.complete = False  # the dataset ran to its end (or there was nothing to run)

    def record(self, rows: list[tuple[int, bytes, dict[str, Any]]]) -> None:
        """Write finished rows: one write to the output and one to the journal (see :meth:`Journal.record_many`)."""
        if not rows or self.write_error is not None:
            return
        committed = self.journal.record_many(rows)
        for _, _, rec in rows[:committed]:
            if self.progress is not None:
                self.progress.row(rec["ok"], rec.get("c"))
            if rec.get("w"):
                self.workers[rec["w"]] += 1
        if self.journal.broken is not None:  # nothing more can be recorded: every worker stops
            self.write_error = self.journal.broken
            self.halt.set()
            with contextlib.suppress(Exception):
                self.keys.set_stop("write_error")

    def take(self, table: Any) -> None:
        """Record a block of results from the workers."""
        from .ray_worker import LEFT_BUDGET, LEFT_REDIS, RECORDED

        columns = table.to_pydict()
        done = self.journal.state.is_done
        finished: list[tuple[int, bytes, dict[str, Any]]] = []
        for line, kind, out, raw, expected, most, unknown in zip(
            columns["line"],
            columns["kind"],
            columns["out"],
            columns["rec"],
            columns["need_expected"],
            columns["need_max"],
            columns["unknown"],
            strict=True,
        ):
            if done(line):
                continue  # a row Ray ran twice (a block retried after a lost worker) is recorded once
            if unknown:
                self.unknown_models[unknown] += 1
            if kind == RECORDED:
                finished.append((line, out, orjson.loads(raw)))
                continue
            self.rows_left += 1
            if kind == LEFT_BUDGET:
                self.budget_left += 1
                self.needed_expected += expected
                self.needed_max += most
            elif kind == LEFT_REDIS:
                self.redis_lost = True
        self.record(finished)


def pending_blocks(
    ray: ModuleType, input_path: Path, state: JobState, block_rows: int, bad: list[tuple[int, bytes, dict[str, Any]]]
) -> list[Any]:
    """Object refs of pyarrow tables (``line``, ``raw``) of the rows still to run, ``block_rows`` each.

    Bad lines and repeated custom_ids are appended to ``bad`` (to be recorded as errors, as the local
    engine does); rows the journal has are skipped. The input is read once, a line at a time.
    """
    import pyarrow as pa

    seen = SeenIds()
    refs: list[Any] = []
    lines: list[int] = []
    raws: list[bytes] = []

    def flush() -> None:
        if lines:
            table = pa.table({"line": pa.array(lines, pa.int64()), "raw": pa.array(raws, pa.binary())})
            refs.append(ray.put(table))
            lines.clear()
            raws.clear()

    for line, raw in iter_lines(input_path):
        row = parse_row(raw, line)
        invalid = isinstance(row, BadRow) or seen.repeated(row.custom_id)
        if state.is_done(line):
            continue
        if invalid:
            out, rec = results.failure(line, row.custom_id, None, INVALID_LINE, invalid_line_message(row))
            bad.append((line, out, rec))
            continue
        lines.append(line)
        raws.append(raw)
        if len(lines) >= block_rows:
            flush()
    flush()
    return refs


@contextlib.contextmanager
def quiet_ray_data(ray: ModuleType) -> Iterator[Any]:
    """Ray Data's context without progress bars and its info logs, restored afterwards."""
    with warnings.catch_warnings():  # Ray's own deprecation notices about its context's fields
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.")
        ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    bars, wait, level = ctx.enable_progress_bars, ctx.wait_for_min_actors_s, logger.level
    ctx.enable_progress_bars = False
    ctx.wait_for_min_actors_s = ACTORS_START_S
    logger.setLevel(logging.ERROR)
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.wait_for_min_actors_s = bars, wait
        logger.setLevel(level)


def row_dataset(ray: ModuleType, refs: list[Any], spec: Any, workers: int) -> Any:
    from .ray_worker import RowWorker

    try:
        strategy = ray.data.ActorPoolStrategy(
            size=workers, max_concurrent_calls_per_actor=CALLS_PER_WORKER, enable_true_multi_threading=True
        )
    except TypeError:  # an older Ray: one block at a time per worker
        strategy = ray.data.ActorPoolStrategy(size=workers)
    # Ray Data restarts dead actors and retries their blocks without end by default: a row that kills
    # its worker would be paid for again and again. Here a dead worker stops the run (resume goes on).
    # (Only the generic remote arguments can say so, which Ray 2.60 marks as deprecated.)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ray.data.from_arrow_refs(refs).map_batches(
            RowWorker,
            fn_constructor_args=(spec,),
            batch_size=None,
            batch_format="pyarrow",
            zero_copy_batch=True,
            compute=strategy,
            num_cpus=1,
            max_restarts=0,
            max_task_retries=0,
        )


async def stream_results(ds: Any, driver: Driver, stop: asyncio.Event | None) -> str | None:
    """Record results as blocks arrive; returns a worker failure's message, if one stopped the run."""
    # A plain thread-safe queue between Ray Data's iterator (a thread) and the driver's loop: either side
    # may stop first (a worker failure, a write error, a second Ctrl-C), and neither waits on the other
    # longer than a poll once the run halts.
    handoff: queue.Queue[Any] = queue.Queue(QUEUED)
    done = object()

    def put(item: Any) -> None:
        """Hand a block to the driver; waits while it has QUEUED blocks unrecorded (back-pressure)."""
        while not driver.halt.is_set():
            try:
                handoff.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def take() -> Any:
        while True:
            try:
                return handoff.get(timeout=0.5)
            except queue.Empty:
                if driver.halt.is_set():
                    return done

    def pull() -> None:
        batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1))
        try:
            for table in batches:
                put(table)
                if driver.halt.is_set():
                    break
            else:
                driver.complete = True  # every block came back: no worker holds a row any more
        except BaseException as err:
            put(err)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # stops the streaming executor (and its actors) when we left early
                with contextlib.suppress(Exception):
                    close()
            put(done)

    async def watch() -> None:
        assert stop is not None
        await stop.wait()
        driver.interrupted = True
        with contextlib.suppress(Exception):
            await asyncio.to_thread(driver.keys.set_stop, "interrupted")

    watcher = asyncio.create_task(watch()) if stop is not None else None
    threading.Thread(target=pull, name="polyroute-batch-results", daemon=True).start()
    try:
        while True:
            item = await asyncio.to_thread(take)
            if item is done:
                return None
            if isinstance(item, BaseException):  # the dataset failed: rows not handed back go again on resume
                driver.halt.set()
                lines = str(item).strip().splitlines()
                log.error("a Ray worker failed: %s", lines[0] if lines else type(item).__name__)
                return f"{type(item).__name__}: {lines[-1] if lines else ''}"
            if driver.halt.is_set():
                continue  # nothing more can be recorded; the thread stops at its next block
            driver.take(item)
    except BaseException:  # cancelled (a second Ctrl-C): workers stop sending; rows in flight stay pending
        driver.halt.set()
        with contextlib.suppress(Exception):
            driver.keys.set_stop("interrupted")
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
