"""``polyroute batch run|status``.

Exit codes of ``run``: 0 every row done; 4 every row has a result but some are errors
(``--retry-failed`` re-runs them); 3 the budget cannot cover the next row (resume with a larger
``--budget-usd``); 130 interrupted (resume continues); 2 bad arguments, config or input; 1 the
output could not be written.

``--engine ray`` runs the rows on Ray Data workers with the budget in Redis (see
:mod:`router.batch.ray_engine`): ``--ray-address`` (``auto``, ``ray://host:10001``; default: a local
Ray started for the job), ``--redis-url`` (else the config's ``redis_url:``), ``--ray-workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from pathlib import Path
from typing import Any

from providers.errors import InvalidRequestArgumentError

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
    run.add_argument("--budget-usd", type=float, help="hard cap on the whole job's spend (all runs)")
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
    run.add_argument("--ray-workers", type=int, help="--engine ray: worker actors (default 2); --concurrency is "
                     "shared among them")  # fmt: skip
    run.add_argument("--progress", choices=("auto", "live", "plain", "none"), default="auto",
                     help="live bar on a terminal, a plain line every 10 s otherwise (auto)")  # fmt: skip
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
        ray_only = [f"--{k.replace('_', '-')}" for k in ("ray_address", "redis_url", "ray_workers")
                    if getattr(args, k) is not None]  # fmt: skip
        if ray_only and args.engine != "ray":
            raise InvalidRequestArgumentError(f"{', '.join(ray_only)} only apply with --engine ray")
        config = _config(args)
        if args.dry_run:
            from .dryrun import adry_run, format_dry_run

            report = asyncio.run(adry_run(args.input, config, budget_usd=args.budget_usd))
            print(format_dry_run(report))
            return 0
        return asyncio.run(_arun(args, config))
    except JobWriteError as err:
        print(f"polyroute batch: {err.message}", file=sys.stderr)
        return 1
    except InvalidRequestArgumentError as err:
        print(f"polyroute batch: {err.message}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"polyroute batch: {err.strerror}: {err.filename}", file=sys.stderr)
        return 2


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
    from .progress import summary_table
    from .runner import BatchResult, arun_batch

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:  # first: finish rows in flight and stop; second: stop now
        nonlocal signals
        signals += 1
        if signals == 1:
            print("\npolyroute batch: stopping — rows in flight finish (signal again to stop at once)",
                  file=sys.stderr)  # fmt: skip
            stop.set()
        elif main is not None:
            main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    common: dict[str, Any] = {"budget_usd": args.budget_usd, "concurrency": args.concurrency, "resume": args.resume,
                              "retry_failed": args.retry_failed, "progress": progress, "stop": stop}  # fmt: skip
    result: BatchResult
    try:
        if args.engine == "ray":
            from .ray_engine import DEFAULT_WORKERS, arun_batch_ray

            workers = DEFAULT_WORKERS if args.ray_workers is None else args.ray_workers
            result = await arun_batch_ray(args.input, output, config, ray_address=args.ray_address,
                                          redis_url=args.redis_url, workers=workers, **common)  # fmt: skip
        else:
            result = await arun_batch(args.input, output, config, **common)
    except asyncio.CancelledError:
        print("polyroute batch: stopped; rows in flight were not recorded and will be sent on --resume",
              file=sys.stderr)  # fmt: skip
        return 130
    state = result.state
    print(summary_table(state), file=sys.stderr)
    pending = state.rows_total - state.ok - state.failed
    print(f"\n{state.ok:,} rows done, {state.failed:,} failed, {pending:,} pending · spent ${result.spent_usd:.6f} "
          f"· output {output}", file=sys.stderr)  # fmt: skip
    if result.unknown_models:
        names = ", ".join(f"{m!r} ({n})" for m, n in sorted(result.unknown_models.items()))
        print(f"note: rows name models that are not candidates; they were routed by cost: {names}", file=sys.stderr)
    if result.reason == "budget":
        budget = args.budget_usd if args.budget_usd is not None else config.budget_usd
        need = result.needed_max_usd or 0.0
        suggestion = math.ceil(((budget or 0.0) + need) * 100) / 100
        print(f"budget reached: {result.rows_left:,} rows left are expected to need ${result.needed_expected_usd:.4f} "
              f"more (at most ${need:.4f}). Continue with: --resume --budget-usd {suggestion:.2f}",
              file=sys.stderr)  # fmt: skip
    elif result.reason == "failed_rows":
        print(f"{state.failed:,} rows failed (their output lines carry the error); send them again with "
              "--resume --retry-failed", file=sys.stderr)  # fmt: skip
    elif result.reason == "interrupted":
        why = ""
        if getattr(result, "redis_lost", False):
            why = " (Redis became unreachable: rows not reserved were not sent)"
        elif getattr(result, "worker_error", None):
            why = f" (a Ray worker failed: {getattr(result, 'worker_error', '')})"
        print(f"interrupted{why}: continue with --resume", file=sys.stderr)
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


def _status(args: argparse.Namespace) -> int:
    from ..pricing.prices import pico_to_usd
    from .journal import JobError, is_running, journal_path, read_state
    from .progress import summary_table

    path = journal_path(args.output)
    if not path.exists():
        print(f"polyroute batch: {args.output} has no journal ({path.name}): no job ran there", file=sys.stderr)
        return 2
    try:
        state = read_state(path)
    except JobError as err:
        print(f"polyroute batch: {err.message}", file=sys.stderr)
        return 2
    running = is_running(args.output)
    total = state.rows_total
    pending = total - state.ok - state.failed
    budgets = [r.get("budget_pico") for r in state.runs if "run" in r]
    budget = budgets[-1] if budgets else None
    if running:
        phase = "running"
    elif state.last_end is not None:
        phase = f"stopped: {state.last_end.get('reason')}"
    else:
        phase = "stopped without finishing (killed?): continue with --resume"
    print(f"job {args.output}: {phase}")
    print(f"input {state.header.get('input')} · {total:,} rows")
    share = f" ({100 * (state.ok + state.failed) / total:.1f}%)" if total else ""
    print(f"done {state.ok:,} · failed {state.failed:,} · pending {pending:,}{share}")
    spend = f"spent ${pico_to_usd(state.spent_pico):.6f}"
    if budget is not None:
        spend += f" of ${pico_to_usd(budget):.2f}"
    print(spend)
    if state.last_end is not None and state.last_end.get("reason") == "budget":
        need = pico_to_usd(state.last_end.get("needed_max_pico") or 0)
        print(f"the rest needs ~${pico_to_usd(state.last_end.get('needed_expected_pico') or 0):.4f} more "
              f"(at most ${need:.4f})")  # fmt: skip
    print()
    print(summary_table(state))
    if args.report:
        from .report import write_report

        write_report(path, args.report)
        print(f"report: {args.report}")
    return 0
