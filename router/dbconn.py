"""One database connection per thread, all closable at once (stores and ledgers share this)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class ThreadConnections:
    """``get()`` returns this thread's connection, opening it with ``connect`` on first use."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(conn, "closed", False):  # the server dropped it: open a new one
            with self._lock:
                if conn in self._opened:
                    self._opened.remove(conn)
            conn = None
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection opened so far, from any thread."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


class ThreadedAsyncLedger:
    """``areserve`` / ``asettle`` / ``arelease`` for a ledger whose sync methods may block (a database
    lock held by another process): they run in a worker thread, off the event loop."""

    def reserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        raise NotImplementedError

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        raise NotImplementedError

    def release(self, budget_id: str, reservation_id: str) -> None:
        raise NotImplementedError

    async def areserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        import asyncio

        return await asyncio.to_thread(self.reserve, budget_id, amount, limit, tag)

    async def asettle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        import asyncio

        await asyncio.to_thread(self.settle, budget_id, reservation_id, actual)

    async def arelease(self, budget_id: str, reservation_id: str) -> None:
        import asyncio

        await asyncio.to_thread(self.release, budget_id, reservation_id)


OWNERLESS_GRACE_S = 60.0  # a reservation whose owner holds no lease is resolved this long after it was made


class SqlLeases:
    """:class:`router.ledger.LeasedLedger` for the SQL ledgers: a ``budget_owners`` table of leases
    (``expires_at``, renewed by :meth:`heartbeat`) beside ``budget_reservations.owner``.

    Subclasses give ``_lease_run(sql, params)`` (``?`` placeholders) and ``settle`` / ``release``."""

    owner: str | None = None
    lease_ttl: float = 30.0

    def _lease_run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        raise NotImplementedError

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        raise NotImplementedError

    def release(self, budget_id: str, reservation_id: str) -> None:
        raise NotImplementedError

    def start_lease(self, owner: str, ttl_seconds: float) -> None:
        self.lease_ttl = ttl_seconds
        self.owner = owner
        self.heartbeat()

    def heartbeat(self) -> None:
        if self.owner is not None:
            self._lease_run(
                "INSERT INTO budget_owners (owner, expires_at) VALUES (?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at",
                (self.owner, time.time() + self.lease_ttl),
            )

    def end_lease(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:  # nothing left open: forgotten now; else expired at once, for a sweep to resolve
            self._lease_run(
                "DELETE FROM budget_owners WHERE owner = ? AND NOT EXISTS "
                "(SELECT 1 FROM budget_reservations WHERE owner = ?)",
                (owner, owner),
            )
            self._lease_run("UPDATE budget_owners SET expires_at = 0 WHERE owner = ?", (owner,))

    def expired_owners(self) -> list[str]:
        now, me = time.time(), self.owner or ""
        rows = self._lease_run(
            "SELECT owner FROM budget_owners WHERE expires_at < ? AND owner <> ? "
            "UNION SELECT DISTINCT r.owner FROM budget_reservations r WHERE r.owner IS NOT NULL AND r.owner <> ? "
            "AND r.created_at < ? AND NOT EXISTS (SELECT 1 FROM budget_owners o WHERE o.owner = r.owner)",
            (now, me, me, now - OWNERLESS_GRACE_S),
        ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def open_of(self, owner: str) -> list[Any]:
        from .ledger import OpenReservation

        rows = self._lease_run(
            "SELECT budget_id, id, amount, tag, created_at FROM budget_reservations WHERE owner = ? "
            "ORDER BY created_at",
            (owner,),
        ).fetchall()
        return [OpenReservation(str(b), str(i), int(a), t, float(c)) for b, i, a, t, c in rows]

    def close_open(self, budget_id: str, reservation_id: str, actual: int | None) -> None:
        if actual is None:
            self.release(budget_id, reservation_id)
        else:
            self.settle(budget_id, reservation_id, actual)

    def expire_owner(self, owner: str) -> None:
        self._lease_run("UPDATE budget_owners SET expires_at = 0 WHERE owner = ?", (owner,))

    def forget_owner(self, owner: str) -> None:
        self._lease_run("DELETE FROM budget_owners WHERE owner = ? AND expires_at < ?", (owner, time.time()))
