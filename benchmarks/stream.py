"""Streaming benchmarks: chunks/s over a long stream, time to first chunk, async chunks/s.

Run from the repo root: ``python -m benchmarks.stream`` (about 1-2 minutes) or ``--quick`` (smoke run).
All figures are ratios against baselines measured in the same run; see benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import aiohttp
import httpx
import openai

from . import _harness as h


def _count(chunks: Any) -> int:
    """Content chunks in a stream of OpenAI-shaped chunk objects (polyroute, the SDK, LiteLLM)."""
    return sum(1 for c in chunks if c.choices and c.choices[0].delta.content)


def _raw_contents(lines: Iterator[str]) -> Iterator[str | None]:
    """The delta content of every ``data:`` event of an OpenAI SSE stream, parsed with json.loads."""
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                yield choice["delta"].get("content")


def _rates(
    counters: Mapping[str, Callable[[int], int]], n: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Interleaved repetitions of reading an n-chunk stream with each counter: the chunks/s of every
    repetition, and the chunk counts got, per variant."""
    received: dict[str, list[int]] = {name: [] for name in counters}

    def rep(name: str) -> Callable[[], list[float]]:
        def run() -> list[float]:
            start = time.perf_counter()
            got = counters[name](n)
            elapsed = time.perf_counter() - start
            received[name].append(got)
            return [got / elapsed]

        return run

    return h.interleave({name: rep(name) for name in counters}, rounds), received


def _rate_cells(name: str, rates: Mapping[str, list[float]], received: Mapping[str, list[int]]) -> list[str]:
    """A throughput row's first cells: variant, the chunk counts got, median chunks/s, range."""
    s = rates[name]
    return [
        name,
        "/".join(sorted({str(c) for c in received[name]})),
        f"{h.median(s):,.0f}",
        f"{min(s):,.0f}-{max(s):,.0f}",
    ]


def _blocking(runner: asyncio.Runner, count: Callable[[int], Awaitable[int]]) -> Callable[[int], int]:
    return lambda k: runner.run(count(k))


class Clients:
    """One pooled client per variant, reused for every call; ``open(name, n)`` starts an n-chunk stream."""

    def __init__(self, url: str, litellm: Any) -> None:
        from router import completion

        self.url = url
        self.endpoint = f"{url}/v1/chat/completions"
        self.raw = httpx.Client()
        self.sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=h.API_KEY, max_retries=0)
        self.completion = completion
        self.litellm = litellm

    def polyroute(self, n: int) -> Any:
        return self.completion(**h.call_kwargs(self.url), stream=True, extra_body={"fake_chunks": n})

    def openai_sdk(self, n: int) -> Any:
        return self.sdk.chat.completions.create(
            model=h.UPSTREAM_MODEL, messages=h.MSGS, max_tokens=h.MAX_TOKENS, stream=True, extra_body={"fake_chunks": n}
        )

    def lite(self, n: int) -> Any:
        return self.litellm.completion(**h.call_kwargs(self.url), stream=True, extra_body={"fake_chunks": n})

    def raw_httpx(self, n: int) -> Iterator[str | None]:
        with self.raw.stream("POST", self.endpoint, json=h.body(stream=True, fake_chunks=n), headers=h.HEADERS) as resp:
            yield from _raw_contents(resp.iter_lines())

    def close(self) -> None:
        self.raw.close()
        self.sdk.close()


# ------------------------------------------------------------------ 1. chunks/s, sync


def sync_throughput(clients: Clients, quick: bool) -> list[str]:
    n, rounds = (1000, 2) if quick else (5000, 5)
    h.heading(f"1. consuming a {n}-chunk stream, sync, {rounds} interleaved repetitions")
    counters: dict[str, Callable[[int], int]] = {
        "raw httpx": lambda k: sum(1 for c in clients.raw_httpx(k) if c),
        "polyroute": lambda k: _count(clients.polyroute(k)),
        "openai SDK": lambda k: _count(clients.openai_sdk(k)),
        "litellm": lambda k: _count(clients.lite(k)),
    }
    for count in counters.values():  # warm-up
        count(50)
    rates, received = _rates(counters, n, rounds)
    rate = {name: h.median(s) for name, s in rates.items()}
    rows = [
        [
            *_rate_cells(name, rates, received),
            f"{n / rate[name] * 1e3:.0f}",
            f"{rate[name] / rate['raw httpx']:.2f}x",
            f"{rate['polyroute'] / rate[name]:.1f}x",
        ]
        for name in rates
    ]
    h.table(
        ["variant", "chunks got", "median chunks/s", "range", "ms/stream", "vs raw httpx", "polyroute speed-up"], rows
    )
    short = [name for name, got in received.items() if any(abs(g - n) > n // 100 for g in got)]
    vs_lite = rate["polyroute"] / rate["litellm"]
    vs_sdk = rate["polyroute"] / rate["openai SDK"]
    out = [
        h.verdict(vs_lite >= 40, "stream chunks/s polyroute >= 40x litellm", f"{vs_lite:.1f}x"),
        h.verdict(vs_sdk >= 2, "stream chunks/s polyroute >= 2x openai SDK", f"{vs_sdk:.1f}x"),
    ]
    if short:
        out.append(f"WARNING chunk counts off by more than 1% for: {', '.join(short)} (ratios not comparable)")
    return out


# ------------------------------------------------------------------ 2. time to first chunk


def first_chunk(clients: Clients, quick: bool) -> list[str]:
    rounds, per_round = (5, 10) if quick else (20, 10)
    h.heading(f"2. time to first content chunk of a 1-chunk stream, {rounds * per_round} samples each, interleaved")

    def polyroute() -> Iterator[Any]:
        return (c.choices[0].delta.content if c.choices else None for c in clients.polyroute(1))

    openers: dict[str, Callable[[], Iterator[Any]]] = {
        "raw httpx": lambda: clients.raw_httpx(1),
        "polyroute": polyroute,
    }

    def ttfc(open_stream: Callable[[], Iterator[Any]]) -> float:
        start = time.perf_counter()
        first = None
        for content in open_stream():
            if content and first is None:
                first = time.perf_counter() - start
        # reading on to the end (outside the timing) returns the connection to the pool
        if first is None:
            raise RuntimeError("the stream had no content chunk")
        return first

    def batch(open_stream: Callable[[], Iterator[Any]]) -> Callable[[], list[float]]:
        return lambda: [ttfc(open_stream) for _ in range(per_round)]

    for open_stream in openers.values():  # warm-up
        batch(open_stream)()
    samples = h.interleave({name: batch(fn) for name, fn in openers.items()}, rounds)
    base = h.latency_table(
        samples, "raw httpx", ["variant", "samples", "median ms", "p90 ms", "added ms", "vs raw httpx"]
    )
    added = (h.median(samples["polyroute"]) - base) * 1e3
    return [h.verdict(added <= 1.0, "time to first chunk: polyroute adds <= 1 ms over raw httpx", f"{added:+.3f} ms")]


# ------------------------------------------------------------------ 3. chunks/s, async


def async_throughput(url: str, quick: bool) -> list[str]:
    n, rounds = (1000, 2) if quick else (5000, 5)
    runner, loop_name = h.event_loop_runner()
    h.heading(f"3. consuming a {n}-chunk stream, async ({loop_name}), {rounds} interleaved repetitions")
    endpoint = f"{url}/v1/chat/completions"
    from router import acompletion

    with runner:

        async def new_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession()

        session = runner.run(new_session())

        async def raw_aiohttp(k: int) -> int:
            got = 0
            payload = h.body(stream=True, fake_chunks=k)
            async with session.post(endpoint, json=payload, headers=h.HEADERS) as resp:
                async for line in resp.content:  # one line per iteration
                    if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                        got += sum(1 for c in json.loads(line[6:])["choices"] if c["delta"].get("content"))
            return got

        async def polyroute(k: int) -> int:
            stream = await acompletion(**h.call_kwargs(url), stream=True, extra_body={"fake_chunks": k})
            return sum([1 async for c in stream if c.choices and c.choices[0].delta.content])

        counters = {"raw aiohttp": raw_aiohttp, "polyroute": polyroute}
        try:
            for count in counters.values():  # warm-up
                runner.run(count(50))
            rates, received = _rates({name: _blocking(runner, fn) for name, fn in counters.items()}, n, rounds)
        finally:
            runner.run(session.close())

    rate = {name: h.median(s) for name, s in rates.items()}
    rows = [[*_rate_cells(name, rates, received), f"{rate[name] / rate['raw aiohttp']:.2f}x"] for name in rates]
    h.table(["variant", "chunks got", "median chunks/s", "range", "vs raw aiohttp"], rows)
    ratio = rate["polyroute"] / rate["raw aiohttp"]
    return [f"INFO async stream chunks/s: polyroute {ratio:.2f}x raw aiohttp line reading (no target)"]


def main() -> None:
    args = h.parse_args(__doc__ or "")
    print(f"polyroute stream benchmarks{' (--quick)' if args.quick else ''}: {h.environment_line()}")
    litellm = h.import_litellm()
    with h.upstream() as url:
        clients = Clients(url, litellm)
        try:
            verdicts = sync_throughput(clients, args.quick) + first_chunk(clients, args.quick)
        finally:
            clients.close()
        verdicts += async_throughput(url, args.quick)
    h.print_verdicts(verdicts)


if __name__ == "__main__":
    h.run(main)
