"""Core benchmarks: sync per-call latency, async throughput at 64 concurrent, import cost.

Run from the repo root: ``python -m benchmarks.core`` (about 2 minutes) or ``--quick`` (smoke run).
All figures are ratios against baselines measured in the same run; see benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import openai

from . import _harness as h

EXPECTED = "Echo: Say hi"  # what the fake upstream answers to MSGS
CONCURRENCY = 64


def _check(name: str, content: Any) -> None:
    if content != EXPECTED:
        raise RuntimeError(f"{name} returned {content!r}, expected {EXPECTED!r}")


# ------------------------------------------------------------------ 1. sync per-call latency


def sync_latency(url: str, litellm: Any, quick: bool) -> list[str]:
    h.heading("2. sync per-call latency (one call at a time, pooled clients)")
    endpoint = f"{url}/v1/chat/completions"
    raw = httpx.Client()
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=h.API_KEY, max_retries=0)
    from router import completion

    calls: dict[str, Callable[[], Any]] = {
        "raw httpx": lambda: json.loads(raw.post(endpoint, json=h.body(), headers=h.HEADERS).content)["choices"][0][
            "message"
        ]["content"],
        "polyroute": lambda: completion(**h.call_kwargs(url)).choices[0].message.content,
        "openai SDK": lambda: (
            sdk.chat.completions.create(model=h.UPSTREAM_MODEL, messages=h.MSGS, max_tokens=h.MAX_TOKENS)
            .choices[0]
            .message.content
        ),
        "litellm": lambda: litellm.completion(**h.call_kwargs(url)).choices[0].message.content,
    }
    for name, call in calls.items():  # warm-up: connections, lazy imports, caches
        for _ in range(20):
            _check(name, call())

    def batch(call: Callable[[], Any], size: int = 10) -> Callable[[], list[float]]:
        def run() -> list[float]:
            out = []
            for _ in range(size):
                start = time.perf_counter()
                call()
                out.append(time.perf_counter() - start)
            return out

        return run

    rounds = 10 if quick else 40
    samples = h.interleave({name: batch(call) for name, call in calls.items()}, rounds)
    raw.close()
    sdk.close()

    base = h.latency_table(
        samples, "raw httpx", ["variant", "calls", "median ms", "p90 ms", "vs raw ms", "ratio vs raw httpx"]
    )
    ratio = h.median(samples["polyroute"]) / base
    return [
        h.verdict(ratio <= 1.3, "sync latency polyroute <= 1.3x raw httpx", f"{ratio:.2f}x"),
        f"INFO openai SDK {h.median(samples['openai SDK']) / base:.2f}x raw httpx, "
        f"litellm {h.median(samples['litellm']) / base:.2f}x raw httpx "
        f"(litellm / polyroute: {h.median(samples['litellm']) / h.median(samples['polyroute']):.1f}x)",
    ]


# ------------------------------------------------------------------ 2. async throughput


async def _drive(call: Callable[[], Awaitable[Any]], requests: int) -> float:
    """Requests per second for ``requests`` calls made by CONCURRENCY tasks."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - start)


def async_throughput(url: str, litellm: Any, quick: bool) -> list[str]:
    total, rounds = (600, 2) if quick else (3000, 5)
    runner, loop_name = h.event_loop_runner()
    h.heading(
        f"3. async throughput: {total} requests per variant, {CONCURRENCY} concurrent tasks, "
        f"{rounds} interleaved rounds ({loop_name})"
    )
    endpoint = f"{url}/v1/chat/completions"
    from router import acompletion

    with runner:
        # httpx's default keeps only 20 idle connections; give it as many as the others keep.
        hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=h.API_KEY, max_retries=0)

        async def new_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession()

        session = runner.run(new_session())

        async def raw_httpx() -> Any:
            resp = await hx.post(endpoint, json=h.body(), headers=h.HEADERS)
            return json.loads(resp.content)["choices"][0]["message"]["content"]

        async def raw_aiohttp() -> Any:
            async with session.post(endpoint, json=h.body(), headers=h.HEADERS) as resp:
                return json.loads(await resp.read())["choices"][0]["message"]["content"]

        async def polyroute() -> Any:
            r = await acompletion(**h.call_kwargs(url))
            return r.choices[0].message.content

        async def openai_sdk() -> Any:
            r = await sdk.chat.completions.create(model=h.UPSTREAM_MODEL, messages=h.MSGS, max_tokens=h.MAX_TOKENS)
            return r.choices[0].message.content

        async def lite() -> Any:
            r = await litellm.acompletion(**h.call_kwargs(url))
            return r.choices[0].message.content

        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "raw aiohttp": raw_aiohttp,
            "raw httpx": raw_httpx,
            "polyroute": polyroute,
            "openai SDK": openai_sdk,
            "litellm": lite,
        }

        def one_round(call: Callable[[], Awaitable[Any]]) -> Callable[[], list[float]]:
            return lambda: [runner.run(_drive(call, total // rounds))]

        async def close() -> None:
            await hx.aclose()
            await sdk.close()
            await session.close()

        try:
            for name, call in calls.items():  # warm-up: open CONCURRENCY connections, check the answer
                _check(name, runner.run(call()))
                runner.run(_drive(call, 2 * CONCURRENCY))
            samples = h.interleave({name: one_round(call) for name, call in calls.items()}, rounds)
        finally:
            runner.run(close())

    rate = {name: h.median(s) for name, s in samples.items()}
    rows = [
        [
            name,
            f"{rate[name]:.0f}",
            f"{min(s):.0f}-{max(s):.0f}",
            f"{rate[name] / rate['raw aiohttp']:.2f}x",
            f"{rate[name] / rate['litellm']:.1f}x",
        ]
        for name, s in samples.items()
    ]
    h.table(["variant", "median req/s", "range over rounds", "vs raw aiohttp", "vs litellm"], rows)
    ratio = rate["polyroute"] / rate["litellm"]
    return [
        h.verdict(ratio >= 10, "async throughput polyroute >= 10x litellm", f"{ratio:.1f}x"),
        f"INFO polyroute {rate['polyroute'] / rate['raw aiohttp']:.2f}x raw aiohttp, "
        f"{rate['polyroute'] / rate['raw httpx']:.1f}x raw httpx, "
        f"{rate['polyroute'] / rate['openai SDK']:.1f}x openai SDK",
    ]


# ------------------------------------------------------------------ 3. import cost


# Printed by every child after its import: the peak RSS of its own address space. (ru_maxrss
# would not do: Linux carries the parent's RSS at fork over into the child's ru_maxrss.)
_PEAK_RSS = "\nfor line in open('/proc/self/status'):\n    if line.startswith('VmHWM:'): print(line.split()[1])"


def _child(code: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a fresh ``python -c code``."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code + _PEAK_RSS], cwd=h.REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    wall = time.perf_counter() - start
    return wall, int(out.split()[-1]) / 1024  # VmHWM is in kB


def import_cost(quick: bool) -> list[str]:
    rounds = 3 if quick else 7
    h.heading(f"1. import cost: fresh `python -c ...` subprocesses, {rounds} interleaved rounds")
    codes = {
        "pass": "pass",
        "import router": "import router",
        "from router import completion": "from router import completion",
        "import litellm": "import litellm",
    }
    for name, code in codes.items():  # warm-up: .pyc files, page cache
        if not (quick and name == "import litellm"):
            _child(code)
    rss: dict[str, list[float]] = {name: [] for name in codes}

    def sample(name: str) -> Callable[[], list[float]]:
        def run() -> list[float]:
            wall, peak = _child(codes[name])
            rss[name].append(peak)
            return [wall]

        return run

    # One import of litellm takes seconds: a smoke run times it once, outside the rounds.
    skip = {"import litellm"} if quick else set()
    walls = h.interleave({name: sample(name) for name in codes if name not in skip}, rounds)
    for name in skip:
        walls[name] = sample(name)()
    base_wall, base_rss = h.median(walls["pass"]), h.median(rss["pass"])
    rows = [
        [
            f"python -c {code!r}",
            len(walls[name]),
            f"{h.median(walls[name]):.3f}",
            f"{h.median(walls[name]) - base_wall:.3f}",
            f"{h.median(rss[name]):.1f}",
            f"{h.median(rss[name]) - base_rss:+.1f}",
        ]
        for name, code in codes.items()
    ]
    h.table(["command", "runs", "wall s", "minus `pass` s", "peak RSS MB", "vs `pass` MB"], rows)
    imp = h.median(walls["import router"]) - base_wall
    mem = h.median(rss["import router"])
    first = h.median(walls["from router import completion"]) - base_wall
    lite = h.median(walls["import litellm"]) - base_wall
    return [
        h.verdict(imp <= 0.3, "`import router` <= 0.3 s (minus bare python)", f"{imp:.3f} s"),
        h.verdict(mem <= 50, "`import router` peak RSS <= 50 MB", f"{mem:.1f} MB"),
        f"INFO `from router import completion` (first real use, no target): {first:.3f} s, "
        f"{h.median(rss['from router import completion']):.1f} MB; "
        f"`import litellm`: {lite:.3f} s, {h.median(rss['import litellm']):.1f} MB",
    ]


def main() -> None:
    args = h.parse_args(__doc__ or "")
    print(f"polyroute core benchmarks{' (--quick)' if args.quick else ''}: {h.environment_line()}")
    verdicts = import_cost(args.quick)
    start = time.perf_counter()
    litellm = h.import_litellm()
    print(f"\n(litellm imported in-process in {time.perf_counter() - start:.1f} s)")
    with h.upstream() as url:
        verdicts += sync_latency(url, litellm, args.quick)
        verdicts += async_throughput(url, litellm, args.quick)
    h.print_verdicts(verdicts)


if __name__ == "__main__":
    h.run(main)
