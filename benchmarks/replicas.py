"""Scaling out: requests/s of 1 and 2 proxy replicas sharing Redis + PostgreSQL, vs one standalone proxy.

Run from the repo root: ``python -m benchmarks.replicas`` (about 2 minutes) or ``--quick``. Needs the
local PostgreSQL (``POLYROUTE_TEST_POSTGRES``, default postgresql://postgres@127.0.0.1:5432/test) and
Redis (``POLYROUTE_TEST_REDIS``, default redis://127.0.0.1:6379/0).

Every request uses a virtual key with an rpm limit and a budget, so each one runs the shared-state
path: the key's rpm window (one Lua script), the budget reservation and its settlement (two more),
and a spend record in the store. Variants, in interleaved rounds, from one client process at 32
concurrent connections against the same fake upstream:

- ``standalone``: one replica, SQLite store, in-process state (the baseline);
- ``1 replica, shared``: one replica on Redis + PostgreSQL;
- ``2 replicas, shared``: two replicas on the same Redis + PostgreSQL, the client alternating.

All processes (upstream, replicas, client, Redis, PostgreSQL) share this machine's cores, so the
2-replica figure shows what sharing costs and whether a second process helps on the same box; on
separate machines each replica brings its own cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import aiohttp

from . import _harness as h
from .proxy_load import CONCURRENCY, EXPECTED, MASTER_KEY, Server, free_port

ALIAS = "bench"
POSTGRES = os.environ.get("POLYROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("POLYROUTE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _config(url: str, general: dict[str, object]) -> dict[str, object]:
    return {
        "model_list": [
            {"model_name": ALIAS, "params": {"model": h.MODEL, "api_base": f"{url}/v1", "api_key": h.API_KEY}}
        ],
        "pricing": [{"model": h.MODEL, "input_per_million": 0.1, "output_per_million": 0.1}],
        "general_settings": {"master_key": MASTER_KEY, **general},
    }


def _replica(name: str, config: dict[str, object], tmp: Path) -> Server:
    path = tmp / f"{name.replace(' ', '-').replace(',', '')}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps(config))
    port = free_port()
    argv = [sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(port)]
    return Server(name, argv, port=port, health="/health", log_dir=tmp, cwd=h.REPO)


async def _new_key(session: aiohttp.ClientSession, base: str) -> str:
    async with session.post(
        f"{base}/admin/keys",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json={"rpm": 10_000_000, "max_budget_usd": 1000},
    ) as resp:
        return str((await resp.json())["key"])


async def _load(session: aiohttp.ClientSession, bases: list[str], key: str, requests: int) -> float:
    body = json.dumps({"model": ALIAS, "messages": h.MSGS, "max_tokens": h.MAX_TOKENS}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    left = requests
    turn = 0

    async def worker() -> None:
        nonlocal left, turn
        while left > 0:
            left -= 1
            turn += 1
            async with session.post(
                f"{bases[turn % len(bases)]}/v1/chat/completions", data=body, headers=headers
            ) as resp:
                data = await resp.read()
                if resp.status != 200 or EXPECTED not in data:
                    raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - start)


def main() -> None:
    args = h.parse_args(__doc__ or "")
    rounds, per_round = (3, 600) if args.quick else (5, 3000)
    runner, loop_name = h.event_loop_runner()
    print(h.environment_line(loop_name))
    import psycopg

    schema = f"polyroute_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(POSTGRES, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    database = f"{POSTGRES}?options={quote(f'-csearch_path={schema}')}"
    prefix = f"polyroute-bench-{uuid.uuid4().hex[:8]}"
    servers: list[Server] = []
    try:
        with h.upstream() as url, tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            shared = {"database_url": database, "redis_url": REDIS, "redis_prefix": prefix}
            standalone = _replica("standalone", _config(url, {"database_url": f"sqlite:///{tmp}/alone.db"}), tmp)
            solo = _replica("1 replica shared", _config(url, shared), tmp)
            pair = [_replica(f"replica {i} shared", _config(url, shared), tmp) for i in range(2)]
            servers = [standalone, solo, *pair]
            for server in servers:
                server.wait_ready(60)
            session = runner.run(_session())
            keys = {
                "standalone": runner.run(_new_key(session, standalone.base)),
                "shared": runner.run(_new_key(session, solo.base)),  # one key, in PostgreSQL: every replica knows it
            }
            variants = {
                "standalone (SQLite, local state)": ([standalone.base], keys["standalone"]),
                "1 replica, Redis + PostgreSQL": ([solo.base], keys["shared"]),
                "2 replicas, Redis + PostgreSQL": ([s.base for s in pair], keys["shared"]),
            }
            for bases, key in variants.values():  # warm up: connections, catalogs, caches
                runner.run(_load(session, bases, key, 200))
            h.heading(f"requests/s at {CONCURRENCY} connections, {rounds} interleaved rounds of {per_round} requests")
            results = h.interleave(
                {
                    name: (lambda b=bases, k=key: [runner.run(_load(session, b, k, per_round))])
                    for name, (bases, key) in variants.items()
                },
                rounds,
            )
            base = h.median(results["standalone (SQLite, local state)"])
            h.table(
                ["variant", "req/s (median)", "vs standalone"],
                [[name, f"{h.median(v):,.0f}", f"{h.median(v) / base:.2f}x"] for name, v in results.items()],
            )
            runner.run(session.close())
    finally:
        for server in servers:
            server.stop()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
        import redis

        client = redis.Redis.from_url(REDIS)
        stale = list(client.scan_iter(f"{prefix}:*"))
        if stale:
            client.delete(*stale)


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=aiohttp.ClientTimeout(total=120)
    )


if __name__ == "__main__":
    main()
