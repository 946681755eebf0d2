"""Router overhead: ``Router.acompletion`` on a healthy one-deployment group vs a bare ``acompletion``.

Run from the repo root: ``python -m benchmarks.router`` (about 1 minute) or ``--quick``.
Targets (issue 5): the router adds <= 50 us per call (median, same run) and 64 concurrent callers
through the router keep >= 90% of the bare throughput.

The per-call overhead is measured twice: with an in-process transport that answers at once (so the
difference is the router's own CPU time, not loopback noise, which on this box is larger than 50 us
between rounds) — this one decides the verdict — and against the local upstream over loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from providers.transport import HttpRequest, HttpResponse, Timeouts
from tests.upstreams import completion_json

from . import _harness as h

_ANSWER = orjson.dumps(completion_json("hi", (9, 1), cid="chatcmpl-b", model="bench-model"))


class InstantTransport:
    """Answers every request at once, in-process: what remains is the client's own work."""

    async def send(self, request: HttpRequest, timeouts: Timeouts) -> HttpResponse:
        return HttpResponse(200, {"content-type": "application/json"}, _ANSWER)

    async def open_stream(self, request: HttpRequest, timeouts: Timeouts) -> Any:
        raise NotImplementedError


def main() -> None:
    args = h.parse_args(__doc__ or "")
    calls, rounds, total = (200, 5, 600) if args.quick else (400, 12, 3000)
    from router import Router, acompletion

    runner, loop_name = h.event_loop_runner()
    print(h.environment_line(loop_name))
    with h.upstream() as url, runner:
        deployment = {"model": h.MODEL, "api_base": f"{url}/v1", "api_key": h.API_KEY}
        router = Router([{"model_name": "chat", "params": deployment}])
        bare_kw = h.call_kwargs(url)  # built once, as the routed calls' arguments are

        async def bare() -> Any:
            return await acompletion(**bare_kw)

        async def routed() -> Any:
            return await router.acompletion(model="chat", messages=h.MSGS, max_tokens=h.MAX_TOKENS)

        async def latencies(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                await fn()
                out.append((time.perf_counter() - t) * 1e6)
            return out

        async def throughput(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
            sem = asyncio.Semaphore(64)

            async def one() -> None:
                async with sem:
                    await fn()

            t = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(n)])
            return [n / (time.perf_counter() - t)]

        instant = InstantTransport()

        async def bare_cpu() -> Any:
            return await acompletion(**bare_kw, client=instant)

        async def routed_cpu() -> Any:
            return await router.acompletion(model="chat", messages=h.MSGS, max_tokens=h.MAX_TOKENS, client=instant)

        for fn in (bare, routed, bare_cpu, routed_cpu):  # warm up: connections, catalogs, code paths
            runner.run(latencies(fn, 50))

        cpu = h.interleave(
            {
                "bare acompletion": lambda: runner.run(latencies(bare_cpu, 1000)),
                "Router.acompletion": lambda: runner.run(latencies(routed_cpu, 1000)),
            },
            rounds,
        )
        h.heading(f"0. per-call cost with an instant in-process transport, {1000 * rounds} calls each")
        cpu_base = h.median(cpu["bare acompletion"])
        h.table(
            ("variant", "calls", "median us", "vs bare us"),
            [(n, len(v), f"{h.median(v):.1f}", f"{h.median(v) - cpu_base:+.1f}") for n, v in cpu.items()],
        )

        per = calls // rounds
        lat = h.interleave(
            {
                "bare acompletion": lambda: runner.run(latencies(bare, per)),
                "Router.acompletion": lambda: runner.run(latencies(routed, per)),
            },
            rounds,
        )
        h.heading(f"1. sequential latency, {per * rounds} calls each, {rounds} interleaved rounds ({loop_name})")
        base = h.median(lat["bare acompletion"])
        rows = [(name, len(v), f"{h.median(v):.1f}", f"{h.median(v) - base:+.1f}") for name, v in lat.items()]
        h.table(("variant", "calls", "median us", "vs bare us"), rows)

        thr = h.interleave(
            {
                "bare acompletion": lambda: runner.run(throughput(bare, total // 5)),
                "Router.acompletion": lambda: runner.run(throughput(routed, total // 5)),
            },
            5,
        )
        h.heading(f"2. throughput at 64 concurrent, {total // 5} requests x 5 interleaved rounds")
        bare_rps = h.median(thr["bare acompletion"])
        h.table(
            ("variant", "median req/s", "vs bare"),
            [(name, f"{h.median(v):.0f}", f"{h.median(v) / bare_rps:.2f}x") for name, v in thr.items()],
        )

    overhead = h.median(cpu["Router.acompletion"]) - cpu_base
    loopback = h.median(lat["Router.acompletion"]) - base
    share = h.median(thr["Router.acompletion"]) / bare_rps
    h.heading("verdicts")
    print(h.verdict(overhead <= 50, "Router.acompletion adds <= 50 us per call", f"{overhead:+.1f} us"))
    print(f"INFO over loopback the same difference measured {loopback:+.1f} us (noise: see the table)")
    print(h.verdict(share >= 0.9, "64 concurrent through the router keep >= 90% of bare throughput", f"{share:.0%}"))


if __name__ == "__main__":
    main()
