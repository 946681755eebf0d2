"""Nothing is lost on a crash: ``kill -9`` of a real `polyroute serve` with requests in flight.

Every request the upstream saw ends with exactly one spend record (served, failed, or ``in_doubt``), no
reservation stays open, and a key never settles past its budget:

- restarted on the same SQLite / PostgreSQL store, the proxy takes the dead process's flight journal over;
- a replica sharing Redis that dies and never comes back has its reservations swept by the other replica once
  its lease expires;
- recovering the same journal again adds nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.ledger import Ledger
from router.proxy.flight import journal_dir
from router.proxy.store import PostgresStore, SpendRecord, SqliteStore, SqlStore
from tests.cli import polyroute_argv
from tests.services import POSTGRES_URL, free_port, postgres_schema, postgres_url
from tests.test_router import CHAT
from tests.upstreams import OpenAICompatUpstream

MASTER = "sk-master-crash-0123456789"
USER = [{"role": "user", "content": "hello crash"}]
IN_FLIGHT = 50
BUDGET_USD = 1.0


class Proxy:
    """One `polyroute serve` process on ``config``; :meth:`kill` is ``kill -9``, :meth:`start` (re)starts it."""

    def __init__(self, config: dict[str, Any], folder: Path, name: str = "proxy") -> None:
        self.path = folder / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log_path = folder / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proxy:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                polyroute_argv(
                    "serve", "--config", str(self.path), "--port", str(self.port), "--shutdown-timeout", "5"
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the proxy exited: {self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"the proxy did not come up: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {MASTER}"}, timeout=10, **kw)


def _config(upstream: OpenAICompatUpstream, database_url: str, **general: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "chat",
                "params": {"model": "openai/m", "api_base": upstream.url + "/v1", "api_key": "sk-up-crash-1111"},
            }
        ],
        "router_settings": {"num_retries": 0},
        "pricing": [{"model": "openai/m", "input_per_million": 100, "output_per_million": 100}],
        "general_settings": {
            "master_key": MASTER,
            "database_url": database_url,
            "sweep_interval": 0.5,
            "lease_seconds": 2,
            **general,
        },
    }


def _chats(server: OpenAICompatUpstream) -> int:
    return sum(1 for q in server.requests if q.path == CHAT)


def _post(urls: list[str], key: str, n: int) -> list[int]:
    """``n`` concurrent chat requests (alternating between ``urls``); the statuses (0: the connection broke)."""

    async def one(http: httpx.AsyncClient, url: str) -> int:
        try:
            reply = await http.post(
                url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "chat", "messages": USER, "max_tokens": 20},
            )
        except httpx.HTTPError:
            return 0
        return reply.status_code

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
            return await asyncio.gather(*[one(http, urls[i % len(urls)]) for i in range(n)])

    return asyncio.run(main())


def _in_background(urls: list[str], keys: list[str]) -> threading.Thread:
    """``IN_FLIGHT`` requests spread over ``keys``, from a thread (their connections break at the kill)."""

    def go() -> None:
        async def all_of() -> None:
            await asyncio.gather(*[asyncio.to_thread(_post, urls, key, IN_FLIGHT // len(keys)) for key in keys])

        asyncio.run(all_of())

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _wait_for(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _assert_one_record_each(store: SqlStore, upstream_seen: int, in_doubt: int) -> list[SpendRecord]:
    records = [r for r in store.spend_records() if r.status != 429]
    ids = Counter(r.request_id for r in records)
    assert None not in ids and max(ids.values()) == 1, ids.most_common(3)  # one record per request id
    outcomes = Counter(r.outcome for r in records)
    assert len(records) == upstream_seen, (len(records), upstream_seen, outcomes)
    assert outcomes["in_doubt"] == in_doubt, outcomes
    return records


def _assert_ledger_resolved(ledger: Ledger, key_id: str, records: list[SpendRecord]) -> None:
    spent, reserved = ledger.totals(f"key:{key_id}")
    assert reserved == 0  # no reservation left open
    assert spent <= int(BUDGET_USD * 10**12)  # settled spend within the key's budget
    # the ledger and the records agree: served calls at their cost, the ones in doubt at their reservation
    assert spent == sum(r.cost_pico or 0 for r in records if r.key_id == key_id)
    doubtful = [r for r in records if r.key_id == key_id and r.outcome == "in_doubt"]
    assert doubtful and all(r.cost_pico for r in doubtful)


@pytest.fixture
def upstream() -> Iterator[OpenAICompatUpstream]:
    server = OpenAICompatUpstream().start()
    yield server
    server.latency = 0.0
    server.stop()


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="polyroute-crash-") as name:
        yield Path(name)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    with postgres_schema("crash") as name:
        yield name


def _crash_and_restart(upstream: OpenAICompatUpstream, proxy: Proxy, store_of: Any, journal: Path) -> None:
    """Served calls, then IN_FLIGHT slow calls (a budgeted key's and the master key's) and ``kill -9``;
    restart: one record per request the upstream saw, the key's reservations settled, within its budget."""
    proxy.start()
    key = proxy.admin("POST", "/admin/keys", json={"max_budget_usd": BUDGET_USD}).json()
    assert Counter(_post([proxy.url], key["key"], 10)) == {200: 10}  # the deployment reports usage: calibrated
    time.sleep(1.5)
    assert Counter(_post([proxy.url], key["key"], 12)) == {200: 12}  # answered, maybe not in the store yet
    upstream.latency = 5.0
    before = _chats(upstream)
    clients = _in_background([proxy.url], [key["key"], key["key"], key["key"], key["key"], MASTER])
    _wait_for(f"{IN_FLIGHT} requests at the upstream", lambda: _chats(upstream) - before >= IN_FLIGHT)
    proxy.kill()
    clients.join(30)
    upstream.latency = 0.0
    seen = _chats(upstream)
    snapshot = journal.parent / "journal-snapshot"
    shutil.copytree(journal, snapshot)  # the dead process's journal, to recover a second time below
    proxy.start()  # recovery runs before the proxy serves
    store, ledger = store_of()
    try:
        records = _assert_one_record_each(store, seen, in_doubt=IN_FLIGHT)
        unbudgeted = [r for r in records if r.outcome == "in_doubt" and r.key_id is None]
        assert len(unbudgeted) == IN_FLIGHT // 5 and all(r.cost_pico is None for r in unbudgeted)  # cost unknown
        assert all(r.alias == "chat" for r in records)
        _assert_ledger_resolved(ledger, key["id"], records)
        report = proxy.admin("GET", "/admin/spend?group_by=key").json()
        assert report["in_doubt"]["requests"] == IN_FLIGHT
        mine = next(r for r in report["data"] if r["key"] == key["id"])
        assert mine["in_doubt_requests"] == IN_FLIGHT - IN_FLIGHT // 5 and mine["in_doubt_cost_usd"] > 0
        only = proxy.admin("GET", "/admin/spend?group_by=key&outcome=in_doubt").json()["data"]
        assert sum(r["requests"] for r in only) == IN_FLIGHT
        _wait_for("the dead journal gone", lambda: len(list(journal.glob("*.lock"))) == 1)
        # Recovering the same journal again (a crash in the middle of recovery) adds nothing.
        totals = ledger.totals(f"key:{key['id']}")
        proxy.stop()
        for path in snapshot.iterdir():
            shutil.copy(path, journal / path.name)
        proxy.start()
        assert _assert_one_record_each(store, seen, in_doubt=IN_FLIGHT) == records
        assert ledger.totals(f"key:{key['id']}") == totals
        assert sorted(p.suffix for p in journal.iterdir()) == [".jrn", ".lock"]  # only the live process's
    finally:
        proxy.stop()
        if hasattr(ledger, "close"):
            ledger.close()
        store.close()


def test_kill_9_then_restart_on_sqlite(upstream: OpenAICompatUpstream, folder: Path) -> None:
    db = folder / "proxy.db"
    proxy = Proxy(_config(upstream, f"sqlite:///{db}"), folder)

    def store_of() -> tuple[SqlStore, Ledger]:
        store = SqliteStore(db)
        return store, store.ledger()

    _crash_and_restart(upstream, proxy, store_of, Path(f"{db}.flights"))


def test_kill_9_then_restart_on_postgres(upstream: OpenAICompatUpstream, folder: Path, pg_schema: str) -> None:
    probe = PostgresStore(postgres_url(pg_schema))
    journal = journal_dir(probe, None)  # the default: under the cache folder, one per database
    probe.close()
    assert journal.is_relative_to(os.environ["POLYROUTE_CACHE_DIR"])
    proxy = Proxy(_config(upstream, postgres_url(pg_schema)), folder)

    def store_of() -> tuple[SqlStore, Ledger]:
        store = PostgresStore(POSTGRES_URL, schema=pg_schema)
        return store, store.ledger()

    _crash_and_restart(upstream, proxy, store_of, journal)


def test_a_replica_that_never_comes_back_is_swept_after_its_lease(
    upstream: OpenAICompatUpstream, folder: Path, pg_schema: str, prefix: str
) -> None:
    from router.shared import RedisLedger, RedisLink

    redis = {"redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": prefix, "redis_sync_interval": 0.05}
    # Each replica journals to its own folder (as on two machines): only the lease tells B that A died.
    a = Proxy(_config(upstream, postgres_url(pg_schema), journal_dir=str(folder / "a"), **redis), folder, "a")
    b = Proxy(_config(upstream, postgres_url(pg_schema), journal_dir=str(folder / "b"), **redis), folder, "b")
    link = RedisLink("redis://127.0.0.1:6379/0", prefix=prefix)
    ledger = RedisLedger(link)
    store = PostgresStore(POSTGRES_URL, schema=pg_schema)
    try:
        a.start()
        b.start()
        key = a.admin("POST", "/admin/keys", json={"max_budget_usd": BUDGET_USD}).json()
        assert Counter(_post([a.url], key["key"], 10)) == {200: 10}
        _wait_for("the served records stored", lambda: len(store.spend_records()) == 10)
        upstream.latency = 5.0
        before = _chats(upstream)
        clients = _in_background([a.url], [key["key"]])
        _wait_for(f"{IN_FLIGHT} requests at the upstream", lambda: _chats(upstream) - before >= IN_FLIGHT)
        a.kill()
        budget = f"key:{key['id']}"
        assert ledger.totals(budget)[1] > 0  # B waits for A's lease (2 s) to expire ...
        _wait_for("A's reservations swept by B", lambda: ledger.totals(budget)[1] == 0, timeout=15)
        clients.join(30)
        upstream.latency = 0.0
        _wait_for("the in-doubt records", lambda: len(store.spend_records()) >= _chats(upstream))
        records = _assert_one_record_each(store, _chats(upstream), in_doubt=IN_FLIGHT)
        _assert_ledger_resolved(ledger, key["id"], records)
        assert {r.key_id for r in records} == {key["id"]}
        # ... and B's own lease is alive: its reservations are never swept while it runs
        assert Counter(_post([b.url], key["key"], 5)) == {200: 5}
        assert b.admin("GET", "/admin/spend?group_by=key").json()["in_doubt"]["requests"] == IN_FLIGHT
        assert "Traceback" not in b.log()
    finally:
        a.stop()
        b.stop()
        link.close()
        store.close()


def test_the_journal_stays_small(upstream: OpenAICompatUpstream, folder: Path) -> None:
    """Segments whose requests all ended and reached the store are deleted: a busy proxy keeps one small file."""
    db = folder / "proxy.db"
    proxy = Proxy(_config(upstream, f"sqlite:///{db}"), folder).start()
    journal = Path(f"{db}.flights")
    try:
        sizes = []
        for _ in range(8):
            assert Counter(_post([proxy.url], MASTER, 60)) == {200: 60}
            sizes.append(sum(p.stat().st_size for p in journal.glob("*.jrn")))
        assert max(sizes) > 10_000  # every request wrote its begin and its record ...
        _wait_for("an idle journal rotated", lambda: sum(p.stat().st_size for p in journal.glob("*.jrn")) <= 4_096)
        (segment,) = journal.glob("*.jrn")  # ... and segments whose records were stored went
        assert int(segment.name.split(".")[1]) > 1
    finally:
        proxy.stop()
    assert list(journal.iterdir()) == []  # a clean shutdown leaves nothing to recover
    store = SqliteStore(db)
    assert store.spend_count() == 480 and {r.outcome for r in store.spend_records()} == {"ok"}
    store.close()
