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
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from providers.errors import InvalidRequestArgumentError, redact

from .config import BatchConfig
from .job import (
    BatchResult,
    JobBudget,
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
from .progress import Progress
from .ray_driver import ACTORS_START_S, Driver, pending_blocks, quiet_ray_data, row_dataset, stream_results
from .ray_keys import RunKeys
from .runner import build_router

if TYPE_CHECKING:
    from ..shared import RedisLink

DEFAULT_WORKERS = 2
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
    tell_missing_credentials(build_router(config), notice)  # the workers build their own routers from the config
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
    keys = RunKeys(link, str(state.header.get("input_sha256", "")), output)
    from ..shared import SharedStateUnavailable

    try:
        keys.begin(limit)
    except SharedStateUnavailable as down:  # names no password
        raise InvalidRequestArgumentError(
            f"{down}; --engine ray keeps the job's budget there: try again once it is back"
        ) from None
    driver = Driver(journal, keys, progress)
    run, drawing = begin_run(journal, budget_pico, concurrency, progress, engine="ray", workers=workers)
    per_worker = math.ceil(concurrency / workers)
    block_rows = max(1, min(256, per_worker))  # a block fills a worker's slots; its rows return together
    worker_error: str | None = None
    started = False
    try:
        bad: list[tuple[int, bytes, dict[str, Any]]] = []
        refs = await asyncio.to_thread(pending_blocks, ray, input_path, state, block_rows, bad)
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
            with quiet_ray_data(ray):
                ds = row_dataset(ray, refs, spec, workers)
                started = True
                worker_error = await stream_results(ds, driver, stop)
        elif stop is not None and stop.is_set():
            driver.interrupted = True
    finally:
        await stop_tasks(drawing)
        with contextlib.suppress(Exception):  # Redis away: the keys expire, the next run drops them
            if started and not driver.complete:
                keys.abandon()
            else:
                keys.end()
    if driver.write_error is not None:
        raise write_failed(output, driver.write_error)
    # Decided from what came back, not from Redis (which may be gone): rows left unsent are never "done".
    stopped: str | None = None
    if driver.interrupted or driver.redis_lost or worker_error is not None or (started and not driver.complete):
        stopped = "interrupted"
    elif driver.budget_left:
        stopped = "budget"
    elif driver.rows_left:  # stopped by something other than the budget (e.g. a newer run of the job)
        stopped = "interrupted"
    return end_run(
        journal,
        run,
        output,
        budget,
        stopped,
        needed_expected=driver.needed_expected,
        needed_max=driver.needed_max,
        rows_left=driver.rows_left,
        unknown_models=dict(driver.unknown_models),
        result_class=RayBatchResult,
        workers=dict(driver.workers),
        redis_lost=driver.redis_lost,
        worker_error=worker_error,
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
