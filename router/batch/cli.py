"""``polyroute batch run|status``.

Exit codes of ``run``: 0 every row done; 4 every row has a result but some are errors
(``--retry-failed`` re-runs those that may succeed; invalid input lines need a fixed input); 3 the
budget cannot cover the next row (resume with a larger ``--budget-usd``); 130 interrupted (resume
continues); 2 bad arguments, config or input (``--dry-run``: no row can be sent); 1 the output could
not be written. The job's budget is in its journal: ``--resume`` and ``--retry-failed`` keep it unless
``--budget-usd`` changes it, so every "continue with" hint keeps it too.

``--engine ray`` runs the rows on Ray Data workers with the budget in Redis (see
:mod:`router.batch.ray_engine`): ``--ray-address`` (``auto``, ``ray://host:10001``; default: a local
Ray started for the job), ``--redis-url`` (else the config's ``redis_url:``), ``--ray-workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from providers.errors import InvalidRequestArgumentError

from ..cli import complain

RUN_HELP = "run (or resume) a job over a JSONL file of requests"


def add_parser(sub: Any) -> None:
    batch = sub.add_parser("batch", help="cost-aware batch jobs over JSONL files (run, status)")
    commands = batch.add_subparsers(dest="batch_command", required=True)
    run = commands.add_parser("run", help=RUN_HELP, description=RUN_HELP)
    run.add_argument("input", help="requests: OpenAI Batch lines or bare chat/embedding bodies, one per line")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", "-c", help="batch YAML: candidates, defaults, router settings")
    source.add_argument("--model", "-m", help="one candidate model string instead of a config file")
    run.add_argument("--output", "-o", help="results JSONL (default: <input>.results.jsonl)")
    run.add_argument(
        "--budget-usd",
        type=float,
        help="hard cap on the whole job's spend (all runs); a resumed job keeps the one it has unless this changes it",
    )
    run.add_argument("--concurrency", type=int, help="rows in flight (default: the config's, else 32)")
    run.add_argument("--dry-run", action="store_true", help="estimate the cost and spend nothing")
    run.add_argument("--resume", action="store_true", help="continue the job already in --output")
    run.add_argument("--retry-failed", action="store_true", help="resume, sending failed rows again")
    run.add_argument("--report", help="write a self-contained HTML report here at the end")
    run.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run rows in this process (local) or on Ray Data workers (ray; pip install 'polyroute[ray]')",
    )
    run.add_argument(
        "--ray-address",
        help="--engine ray: the cluster (auto, ray://host:10001, host:port); default: start a local Ray for the job",
    )
    run.add_argument(
        "--redis-url", help="--engine ray: the Redis of the job's shared budget (default: the config's redis_url)"
    )
    run.add_argument(
        "--ray-workers", type=int, help="--engine ray: worker actors (default 2); --concurrency is shared among them"
    )
    run.add_argument(
        "--progress",
        choices=("auto", "live", "plain", "none"),
        default="auto",
        help="live bar on a terminal, a plain line every 10 s otherwise (auto)",
    )
    run.set_defaults(func=_run)
    status = commands.add_parser("status", help="progress, spend and failures of a job (running or finished)")
    status.add_argument("output", help="the job's results JSONL")
    status.add_argument("--report", help="also write the HTML report here")
    status.set_defaults(func=_status)


def _config(args: argparse.Namespace) -> Any:
    from .config import load_batch_config, single_model_config

    return load_batch_config(args.config) if args.config else single_model_config(args.model)


def _run(args: argparse.Namespace) -> int:
    from .journal import JobWriteError

    try:
        ray_only = [
            f"--{k.replace('_', '-')}"
            for k in ("ray_address", "redis_url", "ray_workers")
            if getattr(args, k) is not None
        ]
        if ray_only and args.engine != "ray":
            raise InvalidRequestArgumentError(f"{', '.join(ray_only)} only apply with --engine ray")
        config = _config(args)
        if args.dry_run:
            from .dryrun import adry_run, format_dry_run, nothing_to_send

            report = asyncio.run(adry_run(args.input, config, budget_usd=args.budget_usd))
            print(format_dry_run(report))
            nothing = nothing_to_send(report)
            if nothing is not None:
                return complain(f"polyroute batch: {nothing}", 2)
            return 0
        return asyncio.run(_arun(args, config))
    except JobWriteError as err:
        return complain(f"polyroute batch: {err.message}", 1)
    except InvalidRequestArgumentError as err:
        return complain(f"polyroute batch: {err.message}", 2)
    except FileNotFoundError as err:
        return complain(f"polyroute batch: {err.strerror}: {err.filename}", 2)


async def _arun(args: argparse.Namespace, config: Any) -> int:
    from .progress import Progress

    output = Path(args.output or f"{args.input}.results.jsonl")
    progress = None
    if args.progress != "none":
        progress = Progress(live=None if args.progress == "auto" else args.progress == "live")
    started_ray = False
    if args.engine == "ray":  # joined before the signal handlers are set: ray.init sets its own
        from .ray_engine import DEFAULT_WORKERS, check_ray_job, connect_ray

        workers = DEFAULT_WORKERS if args.ray_workers is None else args.ray_workers
        check_ray_job(config, args.redis_url, workers)  # Ray installed, config, Redis: before Ray starts
        started_ray = connect_ray(args.ray_address)
    try:
        return await _arun_job(args, config, output, progress)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


async def _arun_job(args: argparse.Namespace, config: Any, output: Path, progress: Any) -> int:
    from .job import BatchResult
    from .progress import summary_table
    from .runner import arun_batch

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:  # first: finish rows in flight and stop; second: stop now
        nonlocal signals
        signals += 1
        if signals == 1:
            print("\npolyroute batch: stopping — rows in flight finish (signal again to stop at once)", file=sys.stderr)
            stop.set()
        elif main is not None:
            main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)

    def notice(text: str) -> None:
        print(f"polyroute batch: {text}", file=sys.stderr)

    common: dict[str, Any] = {
        "budget_usd": args.budget_usd,
        "concurrency": args.concurrency,
        "resume": args.resume,
        "retry_failed": args.retry_failed,
        "progress": progress,
        "stop": stop,
        "notice": notice,
    }
    result: BatchResult
    try:
        if args.engine == "ray":
            from .ray_engine import DEFAULT_WORKERS, arun_batch_ray

            workers = DEFAULT_WORKERS if args.ray_workers is None else args.ray_workers
            result = await arun_batch_ray(
                args.input,
                output,
                config,
                ray_address=args.ray_address,
                redis_url=args.redis_url,
                workers=workers,
                **common,
            )
        else:
            result = await arun_batch(args.input, output, config, **common)
    except asyncio.CancelledError:
        print(
            "polyroute batch: stopped; rows in flight were not recorded and will be sent on --resume (which keeps "
            "the job's budget)",
            file=sys.stderr,
        )
        return 130
    state = result.state
    print(summary_table(state), file=sys.stderr)
    pending = state.rows_total - state.ok - state.failed
    invalid = f" ({state.invalid:,} of them invalid input lines)" if state.invalid else ""
    cap = f" of the job's {usd(result.budget_pico)}" if result.budget_pico is not None else ""
    print(
        f"\n{state.ok:,} rows done, {state.failed:,} failed{invalid}, {pending:,} pending · spent "
        f"${result.spent_usd:.6f}{cap} · output {output}",
        file=sys.stderr,
    )
    if result.unknown_models:
        names = ", ".join(f"{m!r} ({n})" for m, n in sorted(result.unknown_models.items()))
        print(f"note: rows name models that are not candidates; they were routed by cost: {names}", file=sys.stderr)
    if result.reason == "budget":
        print(
            budget_hint(
                state,
                result.rows_left,
                result.budget_pico,
                pico(result.needed_expected_usd),
                pico(result.needed_max_usd),
            ),
            file=sys.stderr,
        )
    elif result.reason == "interrupted":
        why = ""
        if getattr(result, "redis_lost", False):
            why = " (Redis became unreachable: rows not reserved were not sent)"
        elif getattr(result, "worker_error", None):
            why = f" (a Ray worker failed: {getattr(result, 'worker_error', '')})"
        keeps = f" (it keeps the job's budget of {usd(result.budget_pico)})" if result.budget_pico is not None else ""
        print(f"interrupted{why}: continue with --resume{keeps}", file=sys.stderr)
    if result.reason in ("failed_rows", "budget", "interrupted"):
        for line in failed_hints(state):
            print(line, file=sys.stderr)
    workers = getattr(result, "workers", None)
    if workers:
        share = ", ".join(f"{name} {rows:,}" for name, rows in sorted(workers.items()))
        print(f"rows by Ray worker this run: {share}", file=sys.stderr)
    if args.report:
        from .journal import journal_path
        from .report import write_report

        try:
            write_report(journal_path(output), args.report)
        except OSError as err:  # the job's own outcome still decides the exit code
            print(f"polyroute batch: could not write the report {args.report}: {err.strerror or err}", file=sys.stderr)
        else:
            print(f"report: {args.report}", file=sys.stderr)
    return result.exit_code


def pico(usd_value: float | None) -> int:
    from .job import usd_to_pico

    return usd_to_pico(usd_value) or 0


def usd(pico_value: int | None) -> str:
    from .job import usd as text

    return text(pico_value or 0)


def budget_hint(state: Any, rows_left: int, cap: int | None, need_expected: int, need_max: int) -> str:
    """What a budget stop says: what the rest needs, and the command that continues (raising the kept budget)."""
    from .job import suggested_budget

    suggestion = suggested_budget(state.spent_pico, need_max, cap)
    kept = f"plain --resume keeps the job's {usd(cap)} and stops again" if cap is not None else ""
    return (
        f"budget reached: {rows_left:,} rows left are expected to need {usd(need_expected)} more (at most "
        f"{usd(need_max)}). Continue with: --resume --budget-usd {suggestion}" + (f" ({kept})" if kept else "")
    )


def failed_hints(state: Any) -> list[str]:
    """What to do about failed rows: send those that may succeed again; fix invalid input lines."""
    lines = []
    retry = state.retryable
    if retry:
        no_candidate = state.errors.get("no_candidate", 0)
        extra = (
            f"; {no_candidate:,} of them no candidate can take: add one that fits them to the config first"
            if no_candidate
            else ""
        )
        lines.append(
            f"{retry:,} rows failed (their output lines carry the error); send them again with --resume "
            f"--retry-failed{extra}"
        )
    if state.invalid:
        lines.append(
            f"{state.invalid:,} input lines are not valid requests (their output lines say what is wrong); "
            "they cannot succeed and --retry-failed does not send them again: fix those lines and run them "
            "as a new job (another --output)"
        )
    return lines


def _status(args: argparse.Namespace) -> int:
    from ..pricing.prices import pico_to_usd
    from .journal import JobError, is_running, journal_path, read_state, recorded_budget
    from .progress import summary_table

    path = journal_path(args.output)
    if not path.exists():
        return complain(f"polyroute batch: {args.output} has no journal ({path.name}): no job ran there", 2)
    try:
        state = read_state(path)
    except JobError as err:
        return complain(f"polyroute batch: {err.message}", 2)
    running = is_running(args.output)
    total = state.rows_total
    pending = total - state.ok - state.failed
    _, budget = recorded_budget(state)
    if running:
        phase = "running"
    elif state.last_end is not None:
        phase = f"stopped: {state.last_end.get('reason')}"
    else:
        phase = "stopped without finishing (killed?): continue with --resume"
    print(f"job {args.output}: {phase}")
    print(f"input {state.header.get('input')} · {total:,} rows")
    share = f" ({100 * (state.ok + state.failed) / total:.1f}%)" if total else ""
    invalid = f" ({state.invalid:,} invalid input lines)" if state.invalid else ""
    print(f"done {state.ok:,} · failed {state.failed:,}{invalid} · pending {pending:,}{share}")
    spend = f"spent ${pico_to_usd(state.spent_pico):.6f}"
    if budget is not None:
        spend += f" of the job's budget {usd(budget)}"
    print(spend)
    end = state.last_end
    if not running and end is not None and end.get("reason") == "budget":
        print(
            budget_hint(
                state,
                end.get("rows_left") or pending,
                budget,
                end.get("needed_expected_pico") or 0,
                end.get("needed_max_pico") or 0,
            )
        )
    if not running:
        for line in failed_hints(state):
            print(line)
    print()
    print(summary_table(state))
    if args.report:
        from .report import write_report

        write_report(path, args.report)
        print(f"report: {args.report}")
    return 0
