"""Batch jobs on Ray: rows run on a pool of Ray Data workers, the driver writes the output and the journal.

The same job as :func:`router.batch.run_batch` (input and output formats, journal, planning, budget,
exit codes, ``resume``/``retry_failed``), with the rows executed by Ray Data actors
(:class:`router.batch.ray_worker.RowWorker`, ``workers`` of them, each with its own Router and rows in
flight on its own event loop) and the budget ledger in Redis, so the cap holds across workers:

- the driver reads the input, records bad lines, and puts the pending rows into the object store in
  small blocks (``line``, ``raw``); a dataset of them goes through ``map_batches`` on the actor pool;
- each worker reserves a row's worst case in Redis (:class:`router.shared.RedisLedger`, a ledger id
  per run, seeded like the local engine: the limit is the budget minus the journal's spend, so
  reservations orphaned by a killed run never block the next), sends it, settles or releases;
- results stream back to the driver (``iter_batches``), the only writer of the output and the journal,
  which records each row once (a row is recorded after its output line, as in the local engine): after
  ``kill -9`` of the driver, ``resume=True`` sends only rows that were not recorded;
- a row that no longer fits, once rows in flight settle, sets the run's stop flag in Redis: no worker
  sends a new row, rows in flight finish, the rest come back unsent with what they would cost.

Example::

    from router.batch import load_batch_config, run_batch_ray
    result = run_batch_ray("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"),
                           budget_usd=5, redis_url="redis://127.0.0.1:6379/0", ray_address="auto")
    result.exit_code, result.spent_usd, result.workers
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import queue
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from providers.errors import InvalidRequestArgumentError, redact

from ..pricing.prices import pico_to_usd
from . import results
from .config import BatchConfig
from .job import JobBudget, check_job_args, open_job, tell
from .journal import JobState, JobWriteError, Journal
from .progress import Progress
from .rows import INVALID_LINE, BadRow, SeenIds, invalid_line_message, iter_lines, parse_row
from .runner import EXIT_BUDGET, EXIT_DONE, EXIT_FAILED_ROWS, EXIT_INTERRUPTED, BatchResult, build_router

if TYPE_CHECKING:
    from ..shared import RedisLink

DEFAULT_WORKERS = 2
CALLS_PER_WORKER = 4  # blocks a worker runs at once (its rows share the worker's concurrency)
QUEUED = 2  # result blocks waiting for the driver: finished rows a kill -9 of the driver would lose
ACTORS_START_S = 300  # how long the pool may take to start (a cluster without the CPUs for it: an error)
KEYS_TTL_S = 7 * 86400  # a run's keys outlive a killed driver this long (a new run of the job drops them)
INSTALL = "pip install 'polyroute[ray]'"
log = logging.getLogger("polyroute.batch")


@dataclass
class RayBatchResult(BatchResult):
    """A :class:`BatchResult` with what the Ray workers did in this run."""

    workers: dict[str, int] = field(default_factory=dict)  # rows recorded in this run, by worker (host:pid)
    redis_lost: bool = False  # Redis became unreachable: rows were left unsent (resume when it is back)
    worker_error: str | None = None  # a worker failed: the run stopped (resume continues)


# ---------------------------------------------------------------- environment checks
def require_ray() -> ModuleType:
    """``ray`` with Ray Data, or an error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise InvalidRequestArgumentError(
            f"--engine ray needs Ray with Ray Data ({err.name or 'ray'} is not installed): {INSTALL}"
        ) from None
    return ray


def open_link(url: str, prefix: str) -> RedisLink:
    """A link to the job's Redis, checked now: an error (never showing a password) when it is unreachable."""
    try:
        from ..shared import RedisLink
    except ImportError:
        raise InvalidRequestArgumentError(f"--engine ray needs the redis client: {INSTALL}") from None
    try:
        link = RedisLink(url, prefix=prefix, socket_timeout=2.0)
    except (ImportError, ValueError) as err:
        raise InvalidRequestArgumentError(f"redis_url: {err}") from None
    if not link.ping():
        link.close()
        raise InvalidRequestArgumentError(
            f"Redis at {link.where} is unreachable ({link.last_error}); --engine ray keeps the job's budget there. "
            "Start it, or pass another --redis-url"
        )
    return link


def check_ray_job(config: BatchConfig, redis_url: str | None, workers: int = DEFAULT_WORKERS) -> str:
    """What a Ray job needs before anything starts: Ray, a sound config, a reachable Redis; its URL."""
    if workers < 1:
        raise InvalidRequestArgumentError(f"--ray-workers must be at least 1, got {workers}")
    url = redis_url or config.redis_url
    if not url:
        raise InvalidRequestArgumentError(
            "--engine ray keeps the job's budget in Redis: pass --redis-url redis://host:6379/0 or set redis_url: "
            "in the batch config"
        )
    require_ray()
    build_router(config)  # every config mistake surfaces before the job exists
    open_link(url, config.redis_prefix).close()
    return url


def connect_ray(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379"; None: start a local
    one). Returns whether this call connected (then the caller calls ``ray.shutdown()``): a process
    already connected keeps its cluster."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as err:  # ConnectionError, ValueError, RuntimeError, ... all mean the same here
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        if address and "@" in address:  # an address with credentials is never shown
            message, address = redact(message, (address,)), "the given address"
        where = f"Ray at {address}" if address else "a new local Ray"
        raise InvalidRequestArgumentError(f"could not join {where}: {message}") from None
    return True


def check_cpus(ray: ModuleType, workers: int, *, local: bool) -> None:
    """Each worker takes a CPU: a Ray started for the job with fewer would wait for them for ever, so say
    it now. A joined cluster may be autoscaling (its nodes come when asked for): only a warning there."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus >= workers:
        return
    message = f"--ray-workers {workers} needs {workers} CPUs (one per worker) but the Ray cluster has {cpus}"
    if local:
        raise InvalidRequestArgumentError(f"{message}: pass a smaller --ray-workers")
    log.warning(
        "%s now; the job waits up to %d s for more (an autoscaling cluster adds nodes)", message, ACTORS_START_S
    )


# ---------------------------------------------------------------- the run's keys in Redis
class _RunKeys:
    """The run's stop flag and budget, the job's current run (the fence) and its runs (to clean up)."""

    def __init__(self, link: RedisLink, facts_sha: str, output: Path) -> None:
        self.link = link
        job = hashlib.blake2b(f"{facts_sha}:{output.resolve()}".encode(), digest_size=8).hexdigest()
        self.run = os.urandom(8).hex()  # unique across processes and machines
        self.ledger_id = f"batch-{facts_sha[:16]}-{self.run}"
        self.job = link.key("batch", job)
        self.stop = f"{self.job}:{self.run}:stop"
        self.fence = f"{self.job}:run"
        self.runs = f"{self.job}:runs"

    def _run_keys(self, run: str, ledger_id: str) -> list[str]:
        from ..shared import RedisLedger

        return [f"{self.job}:{run}:stop", *RedisLedger.keys_of(self.link, ledger_id)]

    def _drop(self, client: Any, run: str, ledger_id: str) -> None:
        client.delete(*self._run_keys(run, ledger_id))
        client.srem(self.runs, f"{run} {ledger_id}")

    def begin(self, limit: int | None) -> None:
        """Drop what earlier (killed) runs of the job left, fence them out, seed this run's budget."""

        def go(client: Any) -> None:
            for entry in client.smembers(self.runs):
                run, ledger_id = entry.decode().split(" ", 1)
                self._drop(client, run, ledger_id)
            pipe = client.pipeline(transaction=True)
            pipe.set(self.fence, self.run, ex=KEYS_TTL_S)
            pipe.sadd(self.runs, f"{self.run} {self.ledger_id}")
            pipe.expire(self.runs, KEYS_TTL_S)
            pipe.execute()

        self.link.run(go)
        if limit is not None:
            from ..shared import RedisLedger

            RedisLedger(self.link).reset(self.ledger_id, 0, ttl_s=KEYS_TTL_S)

    def set_stop(self, reason: str) -> None:
        self.link.run(lambda c: c.set(self.stop, reason, nx=True, ex=KEYS_TTL_S))

    def end(self) -> None:
        """Drop the run's keys: only once no worker can reserve any more (every block came back)."""

        def go(client: Any) -> None:
            self._drop(client, self.run, self.ledger_id)
            if client.get(self.fence) == self.run.encode():
                client.delete(self.fence)

        self.link.run(go)

    def abandon(self) -> None:
        """The run ended with workers possibly still running: stop them (they exit once idle), and keep
        the ledger (a reserve against a dropped budget would start from zero) until it expires or the next
        run drops it."""
        from .ray_worker import ABANDONED

        def go(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.set(self.stop, ABANDONED, ex=KEYS_TTL_S)
            for key in self._run_keys(self.run, self.ledger_id):
                pipe.expire(key, KEYS_TTL_S)
            pipe.execute()

        self.link.run(go)


# ---------------------------------------------------------------- the driver
class _Driver:
    def __init__(self, journal: Journal, keys: _RunKeys, progress: Progress | None) -> None:
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


def _pending_blocks(
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
def _quiet_ray_data(ray: ModuleType) -> Iterator[Any]:
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


def _dataset(ray: ModuleType, refs: list[Any], spec: Any, workers: int) -> Any:
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


async def _stream(ds: Any, driver: _Driver, stop: asyncio.Event | None) -> str | None:
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


async def arun_batch_ray(
    input_path: str | Path,
    output: str | Path,
    config: BatchConfig,
    *,
    budget_usd: float | None = None,
    concurrency: int | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    ray_address: str | None = None,
    redis_url: str | None = None,
    workers: int = DEFAULT_WORKERS,
    notice: Callable[[str], None] | None = None,
) -> RayBatchResult:
    """Run (or resume) a batch job on Ray; see :func:`run_batch_ray`."""
    from .ray_worker import WorkerSpec

    input_path, output = Path(input_path), Path(output)
    concurrency = config.concurrency if concurrency is None else concurrency
    check_job_args(input_path, budget_usd, concurrency)
    url = check_ray_job(config, redis_url, workers)
    ray = require_ray()
    link = open_link(url, config.redis_prefix)
    started = connect_ray(ray_address)
    journal: Journal | None = None
    try:
        check_cpus(ray, workers, local=ray_address is None)
        journal, budget = await open_job(
            input_path,
            output,
            budget_usd=budget_usd,
            config_budget_usd=config.budget_usd,
            resume=resume,
            retry_failed=retry_failed,
        )
        tell(budget, notice)
        return await _run(
            ray, journal, link, input_path, output, config, budget, concurrency, workers, progress, stop, WorkerSpec
        )
    finally:
        if journal is not None:
            journal.close()
        link.close()
        if started:
            ray.shutdown()


async def _run(
    ray: ModuleType,
    journal: Journal,
    link: RedisLink,
    input_path: Path,
    output: Path,
    config: BatchConfig,
    budget: JobBudget,
    concurrency: int,
    workers: int,
    progress: Progress | None,
    stop: asyncio.Event | None,
    spec_class: Any,
) -> RayBatchResult:
    state = journal.state
    budget_pico = budget.cap_pico
    limit = budget.limit_pico(state.spent_pico)  # this run's share of the job's cap
    keys = _RunKeys(link, str(state.header.get("input_sha256", "")), output)
    from ..shared import SharedStateUnavailable

    try:
        keys.begin(limit)
    except SharedStateUnavailable as down:  # names no password
        raise InvalidRequestArgumentError(
            f"{down}; --engine ray keeps the job's budget there: try again once it is back"
        ) from None
    driver = _Driver(journal, keys, progress)
    runs = len([r for r in state.runs if "run" in r]) + 1
    journal.note(
        {
            "run": runs,
            "t": round(time.time(), 3),
            "budget_pico": budget_pico,
            "concurrency": concurrency,
            "engine": "ray",
            "workers": workers,
        }
    )
    if progress is not None:
        progress.begin(state, budget_pico)
    drawing = asyncio.create_task(progress.run()) if progress is not None else None
    per_worker = math.ceil(concurrency / workers)
    block_rows = max(1, min(256, per_worker))  # a block fills a worker's slots; its rows return together
    worker_error: str | None = None
    started = False
    try:
        bad: list[tuple[int, bytes, dict[str, Any]]] = []
        refs = await asyncio.to_thread(_pending_blocks, ray, input_path, state, block_rows, bad)
        driver.record(bad)
        if refs and driver.write_error is None and not (stop is not None and stop.is_set()):
            spec = spec_class(
                config=config,
                redis_url=link.url,
                redis_prefix=config.redis_prefix,
                run=keys.run,
                ledger_id=keys.ledger_id,
                stop_key=keys.stop,
                fence_key=keys.fence,
                limit_pico=limit,
                concurrency=per_worker,
                observed_output=state.observed_output(),
            )
            with _quiet_ray_data(ray):
                ds = _dataset(ray, refs, spec, workers)
                started = True
                worker_error = await _stream(ds, driver, stop)
        elif stop is not None and stop.is_set():
            driver.interrupted = True
    finally:
        if drawing is not None:
            drawing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drawing
        with contextlib.suppress(Exception):  # Redis away: the keys expire, the next run drops them
            if started and not driver.complete:
                keys.abandon()
            else:
                keys.end()
    if driver.write_error is not None:
        err = driver.write_error
        raise JobWriteError(
            f"writing {output} failed ({err.strerror or err}); the rows finished after that were not recorded "
            "and go again on --resume (make room first)"
        )
    # Decided from what came back, not from Redis (which may be gone): rows left unsent are never "done".
    if driver.interrupted or driver.redis_lost or worker_error is not None or (started and not driver.complete):
        code, reason = EXIT_INTERRUPTED, "interrupted"
    elif driver.budget_left:
        code, reason = EXIT_BUDGET, "budget"
    elif driver.rows_left:  # stopped by something other than the budget (e.g. a newer run of the job)
        code, reason = EXIT_INTERRUPTED, "interrupted"
    elif state.failed:
        code, reason = EXIT_FAILED_ROWS, "failed_rows"
    else:
        code, reason = EXIT_DONE, "done"
    end: dict[str, Any] = {"end": runs, "t": round(time.time(), 3), "reason": reason}
    if reason == "budget":
        end |= {
            "needed_expected_pico": driver.needed_expected,
            "needed_max_pico": driver.needed_max,
            "rows_left": driver.rows_left,
        }
    journal.note(end)
    budget_stop = reason == "budget"
    return RayBatchResult(
        code,
        reason,
        state,
        output,
        needed_expected_usd=pico_to_usd(driver.needed_expected) if budget_stop else None,
        needed_max_usd=pico_to_usd(driver.needed_max) if budget_stop else None,
        rows_left=driver.rows_left,
        unknown_models=dict(driver.unknown_models),
        workers=dict(driver.workers),
        redis_lost=driver.redis_lost,
        worker_error=worker_error,
        budget_pico=budget_pico,
        budget_note=budget.note,
    )


def run_batch_ray(input_path: str | Path, output: str | Path, config: BatchConfig, **kwargs: Any) -> RayBatchResult:
    """Run a batch job on Ray to its end (or its budget); the arguments of :func:`router.batch.run_batch`
    plus ``ray_address`` (None: start a local Ray, unless this process is connected already), ``redis_url``
    (else the config's ``redis_url:``) and ``workers`` (actors, default 2).

    Example::

        result = run_batch_ray("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"),
                               budget_usd=5, redis_url="redis://127.0.0.1:6379/0", workers=4)
        if result.exit_code == EXIT_BUDGET:
            print(f"needs ~${result.needed_expected_usd:.2f} more")
    """
    return asyncio.run(arun_batch_ray(input_path, output, config, **kwargs))
