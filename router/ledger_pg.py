"""A budget ledger in PostgreSQL: proxy replicas and batch workers on several machines share budgets.

``reserve`` takes a transaction-scoped advisory lock on the budget, so the check and the insert are
atomic across every process using the database; other budgets are not blocked.

Example::

    ledger = PostgresLedger("postgresql://postgres@127.0.0.1:5432/test")
    Budget(10.0, ledger, name="team-a")
"""

from __future__ import annotations

import os
import time
from typing import Any

from .dbconn import SqlLeases, ThreadConnections, ThreadedAsyncLedger

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS budget_spend (budget_id TEXT PRIMARY KEY, spent BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS budget_reservations (id TEXT PRIMARY KEY, budget_id TEXT NOT NULL, "
    "amount BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS budget_reservations_by_budget ON budget_reservations (budget_id)",
    "CREATE TABLE IF NOT EXISTS budget_owners (owner TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL)",
)
# Leases: reservations carry their owner (a process) and tag (request id), added to older tables in place (no
# index: the table holds open reservations only, and only a sweep looks them up by owner).
# Only when missing: ALTER TABLE locks the table exclusively (even with IF NOT EXISTS), which deadlocks
# against other processes reserving at the same moment.
_LEASE_COLUMNS = ("owner", "tag")


class PostgresLedger(ThreadedAsyncLedger, SqlLeases):
    """The :class:`router.ledger.Ledger` interface over PostgreSQL (one connection per thread)."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._connections = ThreadConnections(self._connect)
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7316002)")
            for statement in _SCHEMA:
                conn.execute(statement)
            found = {
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = 'budget_reservations'"
                ).fetchall()
            }
            missing = [c for c in _LEASE_COLUMNS if c not in found]
            for column in missing:
                conn.execute(f"ALTER TABLE budget_reservations ADD COLUMN {column} TEXT")

    def __repr__(self) -> str:  # the URL may hold a password
        return f"PostgresLedger(schema={self.schema!r})"

    def _connect(self) -> Any:
        import psycopg

        kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema:
            kwargs["options"] = f"-c search_path={self.schema}"
        return psycopg.connect(self.url, **kwargs)

    def _conn(self) -> Any:
        return self._connections.get()

    def _lease_run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self._conn().execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        """Close every connection this ledger opened (any thread)."""
        self._connections.close()

    def _totals(self, conn: Any, budget_id: str) -> tuple[int, int]:
        # One statement, one snapshot: spend and reservations are read as of the same moment.
        spent, reserved = conn.execute(
            "SELECT (SELECT COALESCE(MAX(spent), 0) FROM budget_spend WHERE budget_id = %s), "
            "(SELECT COALESCE(SUM(amount), 0) FROM budget_reservations WHERE budget_id = %s)",
            (budget_id, budget_id),
        ).fetchone()
        return int(spent), int(reserved)

    def reserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (budget_id,))
            spent, reserved = self._totals(conn, budget_id)
            if spent + reserved + amount > limit:
                return None
            rid = os.urandom(12).hex()
            conn.execute(
                "INSERT INTO budget_reservations (id, budget_id, amount, created_at, owner, tag) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (rid, budget_id, amount, time.time(), self.owner, tag),
            )
            return rid

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (budget_id,))  # as reserve does
            gone = conn.execute(
                "DELETE FROM budget_reservations WHERE id = %s AND budget_id = %s", (reservation_id, budget_id)
            ).rowcount
            if gone:
                conn.execute(
                    "INSERT INTO budget_spend (budget_id, spent) VALUES (%s, %s) "
                    "ON CONFLICT (budget_id) DO UPDATE SET spent = budget_spend.spent + EXCLUDED.spent",
                    (budget_id, actual),
                )

    def release(self, budget_id: str, reservation_id: str) -> None:
        self._conn().execute(
            "DELETE FROM budget_reservations WHERE id = %s AND budget_id = %s", (reservation_id, budget_id)
        )

    def totals(self, budget_id: str) -> tuple[int, int]:
        return self._totals(self._conn(), budget_id)

    def release_stale(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        return int(self._conn().execute("DELETE FROM budget_reservations WHERE created_at < %s", (cutoff,)).rowcount)
