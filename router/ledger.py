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

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple, Protocol

from .dbconn import SqlLeases, ThreadConnections, ThreadedAsyncLedger


class Ledger(Protocol):
    """What budgets need from a store. Amounts are integer pico-USD."""

    def reserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        """Reserve ``amount`` if spent + reserved + amount <= limit; the reservation id, else None.

        ``tag`` (e.g. the proxy's request id) is kept with the reservation where the ledger can, so a
        reservation left by a dead process can be tied back to its request. Callers pass it only when set,
        so ledgers written before it existed keep working."""

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        """Close a reservation, adding ``actual`` to the spend (idempotent per reservation)."""

    def release(self, budget_id: str, reservation_id: str) -> None:
        """Close a reservation without spending (idempotent)."""

    def totals(self, budget_id: str) -> tuple[int, int]:
        """(settled spend, open reservations) of a budget."""

    async def areserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None: ...
    async def asettle(self, budget_id: str, reservation_id: str, actual: int) -> None: ...
    async def arelease(self, budget_id: str, reservation_id: str) -> None: ...


class OpenReservation(NamedTuple):
    """A reservation still open in a ledger, as a lease sweep sees it."""

    budget_id: str
    reservation_id: str
    amount: int
    tag: str | None  # the request id it was made for (None: untagged)
    created_at: float


class LeasedLedger(Protocol):
    """A ledger shared by processes that may die: each reservation carries its owner (a process lease id),
    owners renew a lease, and reservations of owners whose lease expired are resolved by the others.

    ``owner`` is set once by the owning process (:meth:`start_lease`) and stored with every reservation it
    makes, inside the same reserve call (no extra round trip). The lease is renewed by :meth:`heartbeat`."""

    owner: str | None

    def start_lease(self, owner: str, ttl_seconds: float) -> None:
        """Take the lease ``owner`` for this process; later reservations carry it."""

    def heartbeat(self) -> None:
        """Renew this process's lease (every ttl/3 or more often)."""

    def end_lease(self) -> None:
        """Give the lease up at a clean shutdown (reservations still open are then resolvable at once)."""

    def expired_owners(self) -> list[str]:
        """Owners other than this one whose lease expired and who may still hold reservations."""

    def open_of(self, owner: str) -> list[OpenReservation]:
        """The reservations ``owner`` holds open."""

    def close_open(self, budget_id: str, reservation_id: str, actual: int | None) -> None:
        """Settle (``actual``) or release (None) another owner's reservation; idempotent, and raises
        when the ledger cannot be written (never queued for later, unlike ``settle``)."""

    def expire_owner(self, owner: str) -> None:
        """End another owner's lease now (it is known dead: its journal's lock was free)."""

    def forget_owner(self, owner: str) -> None:
        """Drop what is kept about an expired owner (its reservations were closed)."""


def new_id() -> str:
    return os.urandom(12).hex()


class InMemoryLedger:
    """One process, any number of threads and event loops. Nothing survives a restart.

    ``one_thread=True``: every call comes from one thread (e.g. one event loop's), so no lock is taken and
    reservation ids are counters instead of random. ``on_overshoot(pico, budget_id)`` is told of each
    settlement above its reservation (callers that count these themselves, like :class:`router.budget.Budget`,
    leave it unset)."""

    def __init__(self, *, one_thread: bool = False, on_overshoot: Callable[[int, str], None] | None = None) -> None:
        self._lock: AbstractContextManager[object] = contextlib.nullcontext() if one_thread else threading.Lock()
        counter = itertools.count(1)
        self._new_id: Callable[[], str] = (lambda: str(next(counter))) if one_thread else new_id
        self._on_overshoot = on_overshoot
        self._spent: dict[str, int] = {}
        self._open: dict[str, dict[str, int]] = {}
        self._open_total: dict[str, int] = {}  # the sum of each budget's open reservations, kept as they change

    def reserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        """``tag`` is not kept: nothing outlives this process to tie a reservation back to its request."""
        with self._lock:
            held = self._open_total.get(budget_id, 0)
            if self._spent.get(budget_id, 0) + held + amount > limit:
                return None
            rid = self._new_id()
            self._open.setdefault(budget_id, {})[rid] = amount
            self._open_total[budget_id] = held + amount
            return rid

    def _close(self, budget_id: str, reservation_id: str) -> int | None:
        """Drop an open reservation (the caller holds the lock); its amount, None if it was not open."""
        amount = self._open.get(budget_id, {}).pop(reservation_id, None)
        if amount is not None:  # unknown or already closed: settling and releasing are idempotent
            self._open_total[budget_id] -= amount
        return amount

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        with self._lock:
            reserved = self._close(budget_id, reservation_id)
            if reserved is None:
                return
            self._spent[budget_id] = self._spent.get(budget_id, 0) + actual
        if actual > reserved and self._on_overshoot is not None:  # the worst case did not bound the bill
            self._on_overshoot(actual - reserved, budget_id)

    def release(self, budget_id: str, reservation_id: str) -> None:
        with self._lock:
            self._close(budget_id, reservation_id)

    def totals(self, budget_id: str) -> tuple[int, int]:
        with self._lock:
            return self._spent.get(budget_id, 0), self._open_total.get(budget_id, 0)

    # In memory nothing blocks: the async methods run inline.
    async def areserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
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
CREATE TABLE IF NOT EXISTS budget_owners (owner TEXT PRIMARY KEY, expires_at REAL NOT NULL);
"""
# Reservations carry their owner (a process lease) and tag (request id): added to older files in place (no
# index: the table holds open reservations only, and only a sweep looks them up by owner).
_LEASE_COLUMNS = ("owner", "tag")


class SqliteLedger(ThreadedAsyncLedger, SqlLeases):
    """A SQLite file in WAL mode: safe for many threads and several processes on one machine.

    ``reserve`` runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time), so the check and
    the insert are atomic across processes. Reservations left open by a killed process are resolved
    through leases (:class:`router.ledger.LeasedLedger`: the proxy does it), or closed with
    :meth:`release_stale`.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._connections = ThreadConnections(self._open)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
        self._add_lease_columns()

    def _add_lease_columns(self) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")  # processes opening an old file at once: one adds the columns
        try:
            found = {row[1] for row in conn.execute("PRAGMA table_info(budget_reservations)")}
            for column in _LEASE_COLUMNS:
                if column not in found:
                    conn.execute(f"ALTER TABLE budget_reservations ADD COLUMN {column} TEXT")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _lease_run(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self._connect().execute(sql, params)

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

    def reserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
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
            rid = new_id()
            conn.execute(
                "INSERT INTO budget_reservations (id, budget_id, amount, created_at, owner, tag) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (rid, budget_id, amount, time.time(), self.owner, tag),
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
