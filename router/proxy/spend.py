"""Spend records written in batches by one background task; flushed at shutdown so none is lost.

Records waiting here are in memory only: the proxy's flight journal (:mod:`.flight`) holds a copy on disk
until ``on_stored`` says they reached the store, so a killed process loses none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .store import SpendRecord, SqlStore

log = logging.getLogger("polyroute.proxy")


class SpendWriter:
    """Queue records in memory; write them every ``interval`` seconds or ``batch`` records."""

    def __init__(
        self,
        store: SqlStore,
        interval: float = 1.0,
        batch: int = 200,
        on_stored: Callable[[list[SpendRecord]], None] | None = None,
    ) -> None:
        self.store = store
        self.on_stored = on_stored  # called on the event loop with each batch once it is in the store
        self.interval = interval
        self.batch = batch
        self._pending: list[SpendRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.max_pending = 200_000  # beyond this (store down for long), the oldest records are dropped, loudly

    def add(self, record: SpendRecord) -> None:
        if len(self._pending) >= self.max_pending:
            del self._pending[: len(self._pending) // 10]
            log.error("spend store unreachable for long: dropped the oldest 10%% of %d records", self.max_pending)
        self._pending.append(record)
        if len(self._pending) >= self.batch:
            self._wake.set()

    async def flush(self) -> None:
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            await asyncio.to_thread(self.store.add_spend, records)
            self.written += len(records)
        except Exception:
            log.exception("could not write %d spend records; keeping them for the next flush", len(records))
            self._pending[:0] = records
            return
        if self.on_stored is not None:
            self.on_stored(records)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the writer — a flush in progress completes, never cancelled — and write what is left."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
        if self._pending:
            log.error("%d spend records could not be written at shutdown", len(self._pending))
