"""Batch jobs on Ray vs the local engine: rows/s of the same 2,000-row input on this machine.

Run from the repo root (Redis at ``POLYROUTE_BENCH_REDIS``, default redis://127.0.0.1:6379/0):
``python -m benchmarks.batch_ray`` (about 2.5 minutes) or ``--quick`` (one round, about 50 s).

Each run is a fresh ``python -m benchmarks.batch_ray --child <variant> ...`` process against the fake
upstream (concurrency 64, a budget so every row is reserved and settled, the journal on):

- ``local``: ``run_batch`` (one process);
- ``ray``: ``run_batch_ray`` with 2 workers, starting its own local Ray (what ``--engine ray`` without
  ``--ray-address`` does): Ray's start and the workers' start are in the time;
- ``ray, cluster up``: the same on a Ray started before the timer (``--ray-address`` to a running
  cluster): the workers' start is in the time.

Two rates per run: end to end (rows / the whole call) and while rows flow (rows / the time between
the journal's first and last row record). Variants run in interleaved rounds; medians are printed,
and the ratio of each to the local engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ._harness import REPO, environment_line, heading, interleave, main_or_child, median, parse_args, table, upstream
from .batch import BUDGET_USD, CONCURRENCY, batch_config, check_output, write_input

ROWS = 2_000
WORKERS = 2
REDIS_URL = os.environ.get("POLYROUTE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
VARIANTS = ("local", "ray", "ray, cluster up")


def _flowing_seconds(output: str) -> float:
    """Seconds between the journal's first and last row records."""
    stamps = [rec["t"] for rec in map(json.loads, Path(f"{output}.journal").read_text().splitlines()) if "i" in rec]
    return max(stamps) - min(stamps)


def child_main(argv: list[str]) -> None:
    variant, input_path, output, url, prefix = argv
    from router.batch import parse_batch_config, run_batch, run_batch_ray

    config = parse_batch_config({**batch_config(url), "redis_url": REDIS_URL, "redis_prefix": prefix})
    if variant == "ray, cluster up":
        import logging

        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    start = time.perf_counter()
    if variant == "local":
        result = run_batch(input_path, output, config, budget_usd=BUDGET_USD, concurrency=CONCURRENCY)
    else:
        result = run_batch_ray(
            input_path, output, config, budget_usd=BUDGET_USD, concurrency=CONCURRENCY, workers=WORKERS
        )
    wall = time.perf_counter() - start
    out = {
        "wall": wall,
        "flowing": _flowing_seconds(output),
        "exit_code": result.exit_code,
        "ok": result.ok,
        "workers": len(getattr(result, "workers", {}) or {}) or 1,
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_child(variant: str, input_path: Path, output: Path, url: str, prefix: str) -> dict[str, Any]:
    for path in (output, Path(f"{output}.journal")):
        path.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_ray", "--child", variant, str(input_path), str(output), url, prefix],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the {variant} child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    if res["exit_code"] != 0 or res["ok"] != ROWS:
        raise RuntimeError(f"{variant}: exit code {res['exit_code']}, {res['ok']} of {ROWS} rows")
    check_output(output, ROWS)
    return res


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds = 1 if args.quick else 3
    print(f"polyroute batch on Ray vs local{' (--quick)' if args.quick else ''}: {environment_line('asyncio')}")
    prefix = f"polyroute-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="polyroute-ray-bench-") as tmp, upstream() as url:
        d = Path(tmp)
        write_input(d / "in.jsonl", ROWS)
        out = d / "out.jsonl"
        run_child("local", d / "in.jsonl", out, url, prefix)  # warm-up: .pyc files, page cache, connections
        info: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}

        def variant(name: str) -> Any:
            def run() -> list[float]:
                res = run_child(name, d / "in.jsonl", out, url, prefix)
                info[name].append(res)
                return [ROWS / res["wall"]]

            return run

        heading(
            f"rows/s of {ROWS:,} rows at concurrency {CONCURRENCY} ({WORKERS} Ray workers), {rounds} interleaved "
            f"round{'s' * (rounds > 1)}, a fresh process per run"
        )
        samples = interleave({name: variant(name) for name in VARIANTS}, rounds)
    e2e = {name: median(s) for name, s in samples.items()}
    flowing = {name: median([ROWS / r["flowing"] for r in info[name]]) for name in VARIANTS}
    table(
        ["variant", "rows/s end to end", "vs local", "wall s", "rows/s while rows flow", "vs local"],
        [
            [
                name,
                f"{e2e[name]:,.0f}",
                f"{e2e[name] / e2e['local']:.2f}x",
                f"{median([r['wall'] for r in info[name]]):.1f}",
                f"{flowing[name]:,.0f}",
                f"{flowing[name] / flowing['local']:.2f}x",
            ]
            for name in VARIANTS
        ],
    )
    print(
        f"\nratio ray / local, end to end: {e2e['ray'] / e2e['local']:.2f}x "
        f"(cluster up: {e2e['ray, cluster up'] / e2e['local']:.2f}x); "
        f"while rows flow: {flowing['ray'] / flowing['local']:.2f}x"
    )


if __name__ == "__main__":
    main_or_child(main, child_main)
