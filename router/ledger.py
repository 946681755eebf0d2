"""Budget ledgers: atomic reserve / settle / release of integer pico-dollars.

A ledger keeps, per budget id, the settled spend and the open reservations. ``reserve`` checks
``spent + reserved + amount <= limit`` and records the reservation in one atomic step, so
concurrent callers (threads, tasks, processes sharing a SQLite file) can never push spend past
the limit. Redis / Postgres ledgers implement the same four methods.

Example::

    ledger = SqliteLedger("spend.db")
    rid = ledger.reserve("team-a", 5_000_000, limit=10**12)   # None if it does not fit
    ledger.settle("team-a", rid, 3_200_000)
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from .dbconn import ThreadConnections, ThreadedAsyncLedger


class Ledger(Protocol):
    """What budgets need from a store. Amounts are integer pico-USD."""

    def reserve(self, budget_id: str, amount: int, limit: int) -> str | None:
        """Reserve ``amount`` if spent + reserved + amount <= limit; the reservation id, else None."""

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        """Close a reservation, adding ``actual`` to the spend (idempotent per reservation)."""

    def release(self, budget_id: str, reservation_id: str) -> None:
        """Close a reservation without spending (idempotent)."""

    def totals(self, budget_id: str) -> tuple[int, int]:
        """(settled spend, open reservations) of a budget."""

    async def areserve(self, budget_id: str, amount: int, limit: int) -> str | None: ...
    async def asettle(self, budget_id: str, reservation_id: str, actual: int) -> None: ...
    async def arelease(self, budget_id: str, reservation_id: str) -> None: ...


def _new_id() -> str:
    return os.urandom(12).hex()


class InMemoryLedger:
    """One process, any number of threads and event loops. Nothing survives a restart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, int] = {}
        self._open: dict[str, dict[str, int]] = {}

    def reserve(self, budget_id: str, amount: int, limit: int) -> str | None:
        with self._lock:
            reservations = self._open.setdefault(budget_id, {})
            if self._spent.get(budget_id, 0) + sum(reservations.values()) + amount > limit:
                return None
            rid = _new_id()
            reservations[rid] = amount
            return rid

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        with self._lock:
            if self._open.get(budget_id, {}).pop(reservation_id, None) is not None:
                self._spent[budget_id] = self._spent.get(budget_id, 0) + actual

    def release(self, budget_id: str, reservation_id: str) -> None:
        with self._lock:
            self._open.get(budget_id, {}).pop(reservation_id, None)

    def totals(self, budget_id: str) -> tuple[int, int]:
        with self._lock:
            return self._spent.get(budget_id, 0), sum(self._open.get(budget_id, {}).values())

    # In memory nothing blocks: the async methods run inline.
    async def areserve(self, budget_id: str, amount: int, limit: int) -> str | None:
        return self.reserve(budget_id, amount, limit)

    async def asettle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        self.settle(budget_id, reservation_id, actual)

    async def arelease(self, budget_id: str, reservation_id: str) -> None:
        self.release(budget_id, reservation_id)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_spend (budget_id TEXT PRIMARY KEY, spent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS budget_reservations (
    id TEXT PRIMARY KEY, budget_id TEXT NOT NULL, amount INTEGER NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_reservations_by_budget ON budget_reservations (budget_id);
"""


class SqliteLedger(ThreadedAsyncLedger):
    """A SQLite file in WAL mode: safe for many threads and several processes on one machine.

    ``reserve`` runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time), so the check and
    the insert are atomic across processes. Reservations left open by a killed process can be
    closed with :meth:`release_stale`.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._connections = ThreadConnections(self._open)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self._connections.get()
        return conn

    def close(self) -> None:
        """Close every connection this ledger opened (any thread)."""
        self._connections.close()

    def reserve(self, budget_id: str, amount: int, limit: int) -> str | None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT spent FROM budget_spend WHERE budget_id = ?", (budget_id,)).fetchone()
            spent = row[0] if row else 0
            (reserved,) = conn.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM budget_reservations WHERE budget_id = ?", (budget_id,)
            ).fetchone()
            if spent + reserved + amount > limit:
                conn.execute("ROLLBACK")
                return None
            rid = _new_id()
            conn.execute(
                "INSERT INTO budget_reservations (id, budget_id, amount, created_at) VALUES (?, ?, ?, ?)",
                (rid, budget_id, amount, time.time()),
            )
            conn.execute("COMMIT")
            return rid
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            gone = conn.execute(
                "DELETE FROM budget_reservations WHERE id = ? AND budget_id = ?", (reservation_id, budget_id)
            ).rowcount
            if gone:  # settle once: a repeated settle adds nothing
                conn.execute(
                    "INSERT INTO budget_spend (budget_id, spent) VALUES (?, ?) "
                    "ON CONFLICT(budget_id) DO UPDATE SET spent = spent + excluded.spent",
                    (budget_id, actual),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def release(self, budget_id: str, reservation_id: str) -> None:
        self._connect().execute(
            "DELETE FROM budget_reservations WHERE id = ? AND budget_id = ?", (reservation_id, budget_id)
        )

    def totals(self, budget_id: str) -> tuple[int, int]:
        conn = self._connect()
        row = conn.execute("SELECT spent FROM budget_spend WHERE budget_id = ?", (budget_id,)).fetchone()
        (reserved,) = conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM budget_reservations WHERE budget_id = ?", (budget_id,)
        ).fetchone()
        return (row[0] if row else 0), int(reserved)

    def release_stale(self, older_than_seconds: float) -> int:
        """Close reservations older than this (their process died); returns how many."""
        cutoff = time.time() - older_than_seconds
        return self._connect().execute("DELETE FROM budget_reservations WHERE created_at < ?", (cutoff,)).rowcount
