"""Proxy under load: `polyroute serve` vs a bare aiohttp pass-through and LiteLLM's proxy.

Run from the repo root: ``python -m benchmarks.proxy_load`` (about 4 minutes) or ``--quick`` (under
a minute). Every server is a subprocess in front of the same local fake upstream; the client is
this process (one aiohttp session per server, uvloop when installed). Targets:

1. requests/s at 32 concurrent connections: polyroute >= 50% of the pass-through, >= 20x LiteLLM;
2. p50 latency added at 1 connection (vs straight to the upstream): polyroute <= 1 ms;
3. RSS of the polyroute process under that load <= 120 MB;
4. RSS after 100,000 requests within 10% of RSS after 10,000 (a leak check; --quick: 2k vs 20k).

All figures are medians of interleaved rounds, ratios against baselines of the same run; see
benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import aiohttp

from . import _harness as h

CONCURRENCY = 32
ALIAS = "bench"  # the model alias polyroute and LiteLLM serve
MASTER_KEY = "sk-polyroute-bench-master"
EXPECTED = b"Echo: Say hi"  # in every answer of the fake upstream to MSGS

DIRECT, PASS, POLY, LITE = "direct (no proxy)", "aiohttp pass-through", "polyroute", "litellm proxy"


@dataclass(frozen=True)
class Sizes:
    rounds: int  # interleaved throughput rounds
    per_round: int  # requests per round and server
    lite_per_round: int  # LiteLLM answers ~80 req/s here: fewer requests, the rate is compared
    lat_rounds: int  # interleaved latency rounds ...
    lat_batch: int  # ... of this many sequential requests each
    leak_step: int  # the leak check samples RSS after every leak_step requests ...
    leak_steps: int  # ... this many times


FULL = Sizes(rounds=5, per_round=3000, lite_per_round=400, lat_rounds=12, lat_batch=50, leak_step=10_000, leak_steps=10)
QUICK = Sizes(rounds=3, per_round=600, lite_per_round=100, lat_rounds=5, lat_batch=40, leak_step=2_000, leak_steps=10)


# ------------------------------------------------------------------ server processes


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if this benchmark dies without cleaning up (SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM ends the run cleanly: the tasks of a running round are cancelled (so ``runner.run`` raises
    CancelledError and the sessions still close on a sane loop), between rounds KeyboardInterrupt."""

    def stop(signum: int, frame: FrameType | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KeyboardInterrupt from None
        loop.call_soon_threadsafe(_cancel_all, loop)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerFailed(RuntimeError):
    pass


class Server:
    """A server subprocess, started at once so that slow startups overlap; :meth:`stop` always runs."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        health: str,
        log_dir: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base = f"http://127.0.0.1:{port}"
        self.health = health
        self.log_path = log_dir / (name.split()[0] + f"-{port}.log")
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only us; we stop the servers in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float) -> float:
        """Seconds from the start until ``GET health`` answers 200; raises :class:`ServerFailed`."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP(S)_PROXY
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with code {self.proc.returncode}: {self.log_tail()}")
            # Refused, reset or an HTTP error while starting: try again.
            with contextlib.suppress(OSError), opener.open(self.base + self.health, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - self.started
            time.sleep(0.2)
        raise ServerFailed(f"{self.name} did not answer {self.health} within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(text) or "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def polyroute_server(url: str, tmp: Path, name: str) -> Server:
    slug = name.split()[-1].strip("()") if "(" in name else "main"
    config = {  # JSON is YAML
        "model_list": [
            {"model_name": ALIAS, "params": {"model": h.MODEL, "api_base": f"{url}/v1", "api_key": h.API_KEY}}
        ],
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{tmp}/bench-{slug}.db"},
    }
    path = tmp / f"polyroute-{slug}.yaml"
    path.write_text(json.dumps(config, indent=2))
    port = free_port()
    argv = [sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(port)]
    return Server(name, argv, port=port, health="/health", log_dir=tmp, cwd=h.REPO)


def passthrough_server(url: str, tmp: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks._passthrough", "--upstream", url, "--port", str(port)]
    return Server(PASS, argv, port=port, health="/health", log_dir=tmp, cwd=h.REPO)


def litellm_missing() -> str | None:
    """Why LiteLLM's proxy cannot run here, or None."""
    for module in ("litellm", "fastapi", "uvicorn", "backoff", "apscheduler"):
        if importlib.util.find_spec(module) is None:
            return f"`{module}` is not installed (pip install 'litellm[proxy]')"
    return None


def litellm_server(url: str, tmp: Path) -> Server:
    config = {
        "model_list": [
            {"model_name": ALIAS, "litellm_params": {"model": h.MODEL, "api_base": f"{url}/v1", "api_key": h.API_KEY}}
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2))
    port = free_port()
    # The `litellm` console script, without depending on where it was installed.
    argv = [
        sys.executable,
        "-c",
        "from litellm.proxy.proxy_cli import run_server; run_server()",
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    return Server(LITE, argv, port=port, health="/health/liveliness", log_dir=tmp, cwd=tmp, env=env)


# ------------------------------------------------------------------ memory


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (LiteLLM could fork workers; polyroute does not)."""
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pids[i]}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        i += 1
    return pids


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB of ``pid``'s process tree, from /proc/<pid>/status."""
    rss = hwm = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    return rss / 1024, hwm / 1024


# ------------------------------------------------------------------ the client


@dataclass
class Target:
    name: str
    url: str  # the chat completions endpoint
    body: bytes
    headers: dict[str, str]
    pid: int | None  # the server process; None when the client talks to the upstream itself


def make_target(name: str, base: str, pid: int | None) -> Target:
    behind_router = name in (POLY, LITE)  # they serve the alias; the others forward the body as it is
    body = {"model": ALIAS if behind_router else h.UPSTREAM_MODEL, "messages": h.MSGS, "max_tokens": h.MAX_TOKENS}
    key = MASTER_KEY if behind_router else h.API_KEY
    headers = {"content-type": "application/json", "accept": "application/json", "authorization": f"Bearer {key}"}
    return Target(name, f"{base}/v1/chat/completions", json.dumps(body).encode(), headers, pid)


async def new_session(limit: int) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), timeout=timeout)


async def call(session: aiohttp.ClientSession, target: Target) -> None:
    async with session.post(target.url, data=target.body, headers=target.headers) as resp:
        data = await resp.read()
        if resp.status != 200 or EXPECTED not in data:
            raise RuntimeError(f"{target.name} answered HTTP {resp.status}: {data[:300]!r}")


async def load(session: aiohttp.ClientSession, target: Target, requests: int) -> tuple[float, float]:
    """(requests/s, highest VmRSS MB seen) for ``requests`` calls made by CONCURRENCY workers."""
    left = requests
    peak = 0.0
    done = asyncio.Event()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(session, target)

    async def watch() -> None:
        nonlocal peak
        while not done.is_set() and target.pid is not None:
            peak = max(peak, memory_mb(target.pid)[0])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), 0.1)

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        await watcher
    return requests / elapsed, peak


async def sequential(session: aiohttp.ClientSession, target: Target, requests: int) -> list[float]:
    """Seconds per call, one call at a time."""
    out = []
    for _ in range(requests):
        start = time.perf_counter()
        await call(session, target)
        out.append(time.perf_counter() - start)
    return out


# ------------------------------------------------------------------ 1 + 3. throughput and memory


def throughput(runner: asyncio.Runner, targets: dict[str, Target], sizes: Sizes) -> tuple[list[str], dict[str, Any]]:
    counts = {name: sizes.lite_per_round if name == LITE else sizes.per_round for name in targets}
    h.heading(
        f"1. requests/s at {CONCURRENCY} concurrent connections: {sizes.rounds} interleaved rounds of "
        f"{sizes.per_round} requests per server ({counts.get(LITE, sizes.lite_per_round)} for LiteLLM)"
    )
    sessions = {name: runner.run(new_session(CONCURRENCY)) for name in targets}
    idle: dict[str, float] = {}
    peaks: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for name, target in targets.items():  # warm-up: open the connections, lazy imports, caches
            runner.run(load(sessions[name], target, 4 * CONCURRENCY))
            if target.pid is not None:
                idle[name] = memory_mb(target.pid)[0]

        def one_round(name: str) -> Callable[[], list[float]]:
            def run() -> list[float]:
                rate, peak = runner.run(load(sessions[name], targets[name], counts[name]))
                peaks[name].append(peak)
                return [rate]

            return run

        rates = h.interleave({name: one_round(name) for name in targets}, sizes.rounds)
    finally:
        for session in sessions.values():
            runner.run(session.close())

    rate = {name: h.median(r) for name, r in rates.items()}
    lite = rate.get(LITE)
    rows = [
        [
            name,
            counts[name] * sizes.rounds,
            f"{rate[name]:.0f}",
            f"{min(r):.0f}-{max(r):.0f}",
            f"{rate[name] / rate[PASS]:.2f}x",
            f"{rate[name] / lite:.1f}x" if lite else "-",
        ]
        for name, r in rates.items()
    ]
    h.table(["server", "requests", "median req/s", "range over rounds", "vs pass-through", "vs litellm"], rows)

    poly = rate[POLY]
    lines = [
        h.verdict(
            poly >= 0.5 * rate[PASS],
            f"polyroute req/s at {CONCURRENCY} connections >= 50% of the pass-through",
            f"{poly / rate[PASS]:.0%} ({poly:.0f} vs {rate[PASS]:.0f} req/s)",
        ),
    ]
    if lite:
        lines.append(
            h.verdict(
                poly >= 20 * lite,
                f"polyroute req/s at {CONCURRENCY} connections >= 20x LiteLLM's proxy",
                f"{poly / lite:.1f}x ({poly:.0f} vs {lite:.0f} req/s)",
            )
        )
    lines.append(
        f"INFO straight to the upstream (no proxy hop): {rate[DIRECT]:.0f} req/s; "
        f"polyroute keeps {poly / rate[DIRECT]:.0%} of it, the pass-through {rate[PASS] / rate[DIRECT]:.0%}"
    )
    return lines, {"idle": idle, "peaks": peaks}


def memory(targets: dict[str, Target], seen: dict[str, Any]) -> list[str]:
    h.heading(f"3. RSS of the server processes (/proc/<pid>/status) around the {CONCURRENCY}-connection load")
    rows, hwm = [], {}
    for name, target in targets.items():
        if target.pid is None:
            continue
        rss_now, hwm[name] = memory_mb(target.pid)
        rows.append(
            [
                name,
                f"{seen['started'][name]:.1f}",
                f"{seen['idle'][name]:.1f}",
                f"{max(seen['peaks'][name]):.1f}",
                f"{rss_now:.1f}",
                f"{hwm[name]:.1f}",
            ]
        )
    h.table(
        ["server", "RSS started MB", "after warm-up MB", "max under load MB", "RSS now MB", "peak (VmHWM) MB"], rows
    )
    peak = max(hwm[POLY], max(seen["peaks"][POLY]))
    other = f"; LiteLLM's proxy {hwm[LITE]:.1f} MB" if LITE in hwm else ""
    return [
        h.verdict(
            peak <= 120,
            "polyroute proxy RSS under load <= 120 MB",
            f"{peak:.1f} MB peak (VmHWM){other}; the pass-through {hwm[PASS]:.1f} MB",
        ),
    ]


# ------------------------------------------------------------------ 2. added latency


def latency(runner: asyncio.Runner, targets: dict[str, Target], sizes: Sizes) -> list[str]:
    n = sizes.lat_rounds * sizes.lat_batch
    h.heading(
        f"2. latency at 1 connection: {n} sequential requests per server in {sizes.lat_rounds} interleaved "
        f"rounds of {sizes.lat_batch}; added = p50 minus p50 straight to the upstream"
    )
    sessions = {name: runner.run(new_session(1)) for name in targets}
    try:
        for name, target in targets.items():  # warm-up
            runner.run(sequential(sessions[name], target, 50))

        def batch(name: str) -> Callable[[], list[float]]:
            return lambda: runner.run(sequential(sessions[name], targets[name], sizes.lat_batch))

        samples = h.interleave({name: batch(name) for name in targets}, sizes.lat_rounds)
    finally:
        for session in sessions.values():
            runner.run(session.close())

    p50 = {name: h.median(s) * 1e3 for name, s in samples.items()}
    base = p50[DIRECT]
    rows = [
        [
            name,
            len(s),
            f"{p50[name]:.3f}",
            f"{h.percentile(s, 0.9) * 1e3:.3f}",
            f"{h.percentile(s, 0.99) * 1e3:.3f}",
            f"{p50[name] - base:+.3f}",
        ]
        for name, s in samples.items()
    ]
    h.table(["server", "samples", "p50 ms", "p90 ms", "p99 ms", "added p50 ms"], rows)
    added = p50[POLY] - base
    others = f"pass-through {p50[PASS] - base:+.3f} ms"
    if LITE in p50:
        others += f", LiteLLM {p50[LITE] - base:+.3f} ms"
    return [h.verdict(added <= 1.0, "polyroute adds <= 1 ms p50 at 1 connection", f"{added:+.3f} ms ({others})")]


# ------------------------------------------------------------------ 4. leak check


def leak_check(runner: asyncio.Runner, target: Target, sizes: Sizes, quick: bool) -> list[str]:
    assert target.pid is not None
    first, total = sizes.leak_step, sizes.leak_step * sizes.leak_steps
    h.heading(
        f"4. leak check: a fresh polyroute process driven by {CONCURRENCY} connections, VmRSS after every "
        f"{first:,} requests up to {total:,}{' (--quick: 2k vs 20k instead of 10k vs 100k)' if quick else ''}"
    )
    session = runner.run(new_session(CONCURRENCY))
    served, rows, rss = 0, [], []
    try:
        for _ in range(sizes.leak_steps):
            rate, _peak = runner.run(load(session, target, first))
            served += first
            rss.append(memory_mb(target.pid)[0])
            rows.append(
                [
                    f"{served:,}",
                    f"{rss[-1]:.1f}",
                    f"{rss[-1] - rss[0]:+.1f}",
                    f"{(rss[-1] - rss[0]) / rss[0]:+.1%}",
                    f"{rate:.0f}",
                ]
            )
    finally:
        runner.run(session.close())
    h.table(["requests served", "VmRSS MB", "vs first MB", "vs first %", "req/s"], rows)
    growth = (rss[-1] - rss[0]) / rss[0]
    hwm = memory_mb(target.pid)[1]
    label = f"{total // 1000}k" if quick else f"{total:,}"
    base = f"{first // 1000}k" if quick else f"{first:,}"
    return [
        h.verdict(
            abs(growth) <= 0.10,
            f"polyroute RSS after {label} requests within 10% of RSS after {base}",
            f"{rss[0]:.1f} -> {rss[-1]:.1f} MB ({growth:+.1%}); peak {hwm:.1f} MB",
        ),
    ]


# ------------------------------------------------------------------ main


def main() -> None:
    args = h.parse_args(__doc__ or "")
    sizes = QUICK if args.quick else FULL
    runner, loop_name = h.event_loop_runner()
    print(f"polyroute proxy load benchmark{' (--quick)' if args.quick else ''}: {h.environment_line(loop_name)}")
    began = time.monotonic()
    verdicts: list[str] = []
    lite_missing = litellm_missing()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="polyroute-bench-")))
        url = stack.enter_context(h.upstream())
        stack.enter_context(sigterm_stops())

        def started(server: Server) -> Server:
            stack.callback(server.stop)
            return server

        # LiteLLM takes ~10 s to start: launch everything first, then wait for each.
        servers = {}
        if lite_missing is None:
            servers[LITE] = started(litellm_server(url, tmp))
        servers[POLY] = started(polyroute_server(url, tmp, POLY))
        servers[PASS] = started(passthrough_server(url, tmp))
        leaky = started(polyroute_server(url, tmp, "polyroute (leak)"))
        ready = []
        for name, server in [*servers.items(), ("leak", leaky)][::-1]:  # the slow LiteLLM last
            try:
                ready.append(f"{server.name} {server.wait_ready(180 if name == LITE else 30):.1f} s")
            except ServerFailed as e:
                if name != LITE:
                    raise
                lite_missing = f"its proxy did not start: {e}"
                server.stop()
                del servers[LITE]
        started_rss = {name: memory_mb(server.pid)[0] for name, server in servers.items()}
        print(
            f"servers ready after: {', '.join(ready)} (all on this box's {os.cpu_count()} cpus with the "
            "upstream and the client)"
        )
        if lite_missing is not None:
            print(f"INFO LiteLLM's proxy is not measured: {lite_missing}")

        targets = {DIRECT: make_target(DIRECT, url, None)}
        for name in (PASS, POLY, LITE):
            if name in servers:
                targets[name] = make_target(name, servers[name].base, servers[name].pid)
        with runner:
            lines, seen = throughput(runner, targets, sizes)
            seen["started"] = started_rss
            verdicts += lines
            verdicts += latency(runner, targets, sizes)
            verdicts += memory(targets, seen)
            verdicts += leak_check(runner, make_target(POLY, leaky.base, leaky.pid), sizes, args.quick)
    if lite_missing is not None:
        verdicts.append(f"INFO no verdict against LiteLLM's proxy: {lite_missing}")
    h.print_verdicts(verdicts)
    print(f"\n(total {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    h.run(main)
