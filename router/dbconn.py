"""One database connection per thread, all closable at once (stores and ledgers share this)."""

from __future__ import annotations

import threading
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

    def reserve(self, budget_id: str, amount: int, limit: int) -> str | None:
        raise NotImplementedError

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        raise NotImplementedError

    def release(self, budget_id: str, reservation_id: str) -> None:
        raise NotImplementedError

    async def areserve(self, budget_id: str, amount: int, limit: int) -> str | None:
        import asyncio

        return await asyncio.to_thread(self.reserve, budget_id, amount, limit)

    async def asettle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        import asyncio

        await asyncio.to_thread(self.settle, budget_id, reservation_id, actual)

    async def arelease(self, budget_id: str, reservation_id: str) -> None:
        import asyncio

        await asyncio.to_thread(self.release, budget_id, reservation_id)
