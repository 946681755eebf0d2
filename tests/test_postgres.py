"""The PostgreSQL store and ledger on the local server (skipped with a reason when it is absent;
CI sets POLYROUTE_REQUIRE_SERVICES=1 so it fails instead)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from router.proxy.store import POSTGRES_MIGRATIONS, PostgresStore, SpendRecord
from tests.ledgers import race_for_the_cap

URL = os.environ.get("POLYROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _connect() -> object:
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - a test extra
        return e
    try:
        return psycopg.connect(URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        return e


@pytest.fixture
def schema() -> Iterator[str]:
    conn = _connect()
    if isinstance(conn, BaseException):
        if os.environ.get("POLYROUTE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL at {URL} is required here (POLYROUTE_REQUIRE_SERVICES=1): {conn}")
        pytest.skip(f"PostgreSQL not reachable at {URL}: {conn}")
    name = f"polyroute_test_{os.getpid()}_{time.monotonic_ns()}"
    conn.execute(f"CREATE SCHEMA {name}")  # type: ignore[attr-defined]
    try:
        yield name
    finally:
        conn.execute(f"DROP SCHEMA {name} CASCADE")  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]


def test_keys_and_spend_round_trip(schema: str) -> None:
    store = PostgresStore(URL, schema=schema)
    _key, row = store.create_key(alias="pg", max_budget_usd=2.5, models=["chat"], rpm=10)
    found = store.key_by_hash(row.key_hash)
    assert found is not None and (found.alias, found.models, found.rpm, found.max_budget_usd) == (
        "pg",
        ["chat"],
        10,
        2.5,
    )
    assert store.update_key(row.id, revoked_at=123.0).revoked_at == 123.0  # type: ignore[union-attr]
    records = [
        SpendRecord(time.time(), row.id, "chat", "together", "m", 10, 5, 9 * 10**15, "config", 12.5, 200)
        for _ in range(3)
    ]
    store.add_spend(records)
    (report,) = store.spend_report("key", None)
    assert report["requests"] == 3 and report["cost_usd"] == pytest.approx(27_000.0)  # 64-bit money
    assert store.ping() and store.spend_count() == 3
    again = PostgresStore(URL, schema=schema)
    assert again.migrate() == len(POSTGRES_MIGRATIONS)  # a second start applies nothing
    again.close()
    store.close()


def test_two_replicas_migrating_at_once(schema: str) -> None:
    script = textwrap.dedent(f"""
        from router.proxy.store import PostgresStore
        print(PostgresStore({URL!r}, schema={schema!r}).migrate())
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    store = PostgresStore(URL, schema=schema)
    assert store._exec("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(POSTGRES_MIGRATIONS)
    store.close()


def test_ledger_holds_across_processes(schema: str) -> None:
    from router.ledger_pg import PostgresLedger

    PostgresLedger(URL, schema=schema).close()
    make = f"PostgresLedger({URL!r}, schema={schema!r})"
    counts = race_for_the_cap("from router.ledger_pg import PostgresLedger", make, tries=40, timeout=120)
    assert sum(counts) == 60
    ledger = PostgresLedger(URL, schema=schema)
    assert ledger.totals("shared") == (600, 0)
    ledger.close()


def test_proxy_on_postgres_keys_budget_and_spend(schema: str, hf: object, deepinfra: object, tgi: object) -> None:
    from tests.test_proxy import MASTER, ProxyServer, _config, assert_budget_holds

    config = _config(hf, deepinfra, tgi)  # type: ignore[arg-type]
    config["pricing"] = [{"model": "huggingface/tgi", "input_per_million": 100, "output_per_million": 100}]
    with ProxyServer(config, store=PostgresStore(URL, schema=schema)) as proxy:
        assert_budget_holds(proxy, tgi, limit=0.05)  # type: ignore[arg-type]
        assert MASTER not in str(proxy.store)
