"""Shared pieces of the benchmarks: the fake upstream process, interleaved rounds, tables, verdicts.

Every number a benchmark reports is a ratio against a baseline measured in the same run, because
absolute timings on a shared 2-core box drift. Variants run round-robin (the order rotates each
round) so drift hits all of them alike, and medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODEL = "openai/bench-model"  # polyroute / LiteLLM model string
UPSTREAM_MODEL = "bench-model"  # what the SDK and raw clients send
API_KEY = "sk-bench"
MSGS: list[dict[str, Any]] = [{"role": "user", "content": "Say hi"}]
MAX_TOKENS = 16
# The headers polyroute sends; the raw clients send the same.
HEADERS = {"content-type": "application/json", "accept": "application/json", "authorization": f"Bearer {API_KEY}"}


def body(**extra: Any) -> dict[str, Any]:
    """The JSON body every variant sends (raw clients build it themselves)."""
    return {"model": UPSTREAM_MODEL, "messages": MSGS, "max_tokens": MAX_TOKENS, **extra}


def call_kwargs(url: str) -> dict[str, Any]:
    """The keyword arguments of a polyroute / LiteLLM call of the fake upstream at ``url``."""
    return {"model": MODEL, "api_base": f"{url}/v1", "api_key": API_KEY, "messages": MSGS, "max_tokens": MAX_TOKENS}


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run with fewer repetitions")
    return parser.parse_args()


# ------------------------------------------------------------------ the upstream process


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def upstream(ready_timeout: float = 30.0) -> Iterator[str]:
    """Start ``python -m tests.upstreams --kind openai --port 0``; yield its base URL; always stop it.

    The server is stopped on normal exit, on an exception, on Ctrl-C, and on SIGTERM to us.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams", "--kind", "openai", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_timeout
        line = ""
        while not line.startswith("READY "):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the fake upstream printed no READY line within {ready_timeout:.0f}s")
            if select.select([proc.stdout], [], [], left)[0]:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"the fake upstream exited before READY (exit code {proc.wait()})")
        yield line.split()[1].rstrip("/")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------ clients and loops


def import_litellm() -> Any:
    """Import LiteLLM offline (local cost map, no telemetry).

    The fake upstream streams the same ``"tok "`` over and over, which LiteLLM's loop guard would
    abort after 100 chunks; the guard still runs on every chunk, only its limit is raised.
    """
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.REPEATED_STREAMING_CHUNK_LIMIT = 1_000_000_000
    return litellm


def event_loop_runner() -> tuple[asyncio.Runner, str]:
    """One event loop (uvloop when importable) for every async variant, and its name."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner(), "asyncio"
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), f"uvloop {uvloop.__version__}"


# ------------------------------------------------------------------ measuring


def interleave(variants: Mapping[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Run every variant once per round, rotating the order each round; collect each one's samples."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].extend(variants[name]())
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ printing


def latency_table(samples: Mapping[str, Sequence[float]], base_name: str, headers: Sequence[str]) -> float:
    """Print a row per variant: samples, median ms, p90 ms, median minus the base variant's (ms), and the
    ratio of the medians; return the base variant's median (seconds)."""
    base = median(samples[base_name])
    rows = [
        [
            name,
            len(s),
            f"{median(s) * 1e3:.3f}",
            f"{percentile(s, 0.9) * 1e3:.3f}",
            f"{(median(s) - base) * 1e3:+.3f}",
            f"{median(s) / base:.2f}x",
        ]
        for name, s in samples.items()
    ]
    table(headers, rows)
    return base


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def verdict(ok: bool, target: str, measured: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} target {target}: measured {measured}"


def print_verdicts(verdicts: Sequence[str]) -> None:
    heading("verdicts")
    for line in verdicts:
        print(line)


def run(main: Callable[[], None]) -> None:
    """A benchmark's entry point: Ctrl-C (or SIGTERM) ends it with a short message."""
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted")


def environment_line(loop_name: str | None = None) -> str:
    import platform

    parts = [f"python {platform.python_version()}", f"{os.cpu_count()} cpus"]
    if loop_name:
        parts.append(f"loop {loop_name}")
    return "; ".join(parts)


def main_or_child(main: Callable[[], None], child_main: Callable[[list[str]], None]) -> None:
    """A benchmark's entry point: ``--child ARGS...`` runs one measured variant (in its own process),
    anything else the whole benchmark; Ctrl-C ends it with a short message."""
    try:
        if sys.argv[1:2] == ["--child"]:
            child_main(sys.argv[2:])
        else:
            main()
    except KeyboardInterrupt:
        sys.exit("interrupted")
