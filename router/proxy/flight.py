"""The proxy's flight journal: no request that reached an upstream is lost when the process dies.

Spend records are written to the store in batches (:mod:`.spend`), so a killed process used to lose
the records of requests it had just answered, and the reservations of requests in flight stayed open
for good. The journal closes that gap:

- Before a request is sent upstream, one ``write()`` to an ``O_APPEND`` file records it as begun
  (request id, time, key, model group, budget); once its budget is reserved, a second line records the
  reservation id and amount; when it ends, its full spend record is appended. No fsync: the OS keeps a
  written page across ``kill -9`` of the process (fsync would only guard against losing the machine).
- Each process writes its own files, ``<owner>.<n>.jrn``, and holds ``<owner>.lock`` with an exclusive
  ``flock`` for its whole life: a lock another process can take means its owner is dead.
- Segments are deleted once every request begun in them ended and its record is in the store; a segment
  rotates at 4 MB, or past 4 kB at a moment nothing in it is pending, so the journal stays small.

:class:`Recovery` runs at start and every ``sweep_interval`` seconds in every proxy. It takes over the
journals of dead owners: records of ended requests not yet in the store are written (the store skips a
request id it already has), requests begun and never ended become ``in_doubt`` records charged at their
reserved amount (no reservation: cost unknown, NULL), and their reservations are settled at that amount.
With a leased ledger (:class:`router.ledger.LeasedLedger`: SQLite, PostgreSQL, Redis) it also resolves the
reservations of owners whose lease expired and whose journal is not here (a replica on another machine that
never came back): settled at their reserved amount, with an ``in_doubt`` record under the request id they
were tagged with, so journal recovery and the sweep write one record per request between them.

Example::

    journal = FlightJournal(journal_dir(store, None), store.identity())
    flight = journal.begin(key_id, "chat", budget.name)
    budget.for_request(flight.id, on_reserved=flight.reserved)   # the reservation is journaled
    journal.end(flight, record)                                  # then queued for the store
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from providers.errors import redact

from ..ledger import OpenReservation
from ..lockfile import lock_held
from .store import SPEND_FIELDS, SpendRecord, SqlStore

log = logging.getLogger("polyroute.proxy")

FORMAT = 1
SEGMENT_BYTES = 4 << 20  # rotate a segment past this size
IDLE_ROTATE_BYTES = 4 << 10  # ... or past this one when nothing in it is pending
_NL = orjson.OPT_APPEND_NEWLINE
_LEASE_METHODS = (
    "start_lease",
    "heartbeat",
    "end_lease",
    "expired_owners",
    "open_of",
    "close_open",
    "forget_owner",
    "expire_owner",
)


def journal_dir(store: SqlStore, configured: str | None) -> Path:
    """``general_settings.journal_dir``, else beside a SQLite store (``<file>.flights``), else under the
    cache directory, one folder per database (a journal is only ever recovered into its own store)."""
    if configured:
        return Path(configured).expanduser()
    path = getattr(store, "path", None)
    if isinstance(path, str) and path and path != ":memory:":
        return Path(path + ".flights")
    from ..pricing.catalog import default_cache_dir

    return default_cache_dir() / "flights" / store.identity().replace(":", "-")


def leased(ledger: Any) -> Any:
    """``ledger`` if it implements :class:`router.ledger.LeasedLedger`, else None."""
    return ledger if all(callable(getattr(ledger, m, None)) for m in _LEASE_METHODS) else None


class Segment:
    __slots__ = ("fd", "open", "path", "size", "unstored")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = 0
        self.open = 0  # requests begun here and not ended
        self.unstored = 0  # requests ended here whose record is not in the store yet


@dataclass(slots=True, eq=False)
class Flight:
    """One request's place in the journal."""

    journal: FlightJournal
    segment: Segment
    id: str
    key_id: str | None
    alias: str
    budget_id: str | None
    ended: bool = False

    def reserved(self, reservation_id: str, amount: int) -> None:
        """The request's budget reservation (called as soon as it is made: before the upstream call)."""
        self.journal.append(
            self.segment, orjson.dumps(("r", self.id, reservation_id, amount, self.budget_id), option=_NL)
        )


class FlightJournal:
    """This process's journal (see the module docstring). Used from the event loop's thread only."""

    def __init__(
        self, directory: str | Path, store_id: str, *, segment_bytes: int = SEGMENT_BYTES, fsync: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store_id = store_id
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]
        self.owner = f"{host}-{os.getpid()}-{os.urandom(4).hex()}"  # also this process's ledger lease id
        self._prefix = os.urandom(6).hex() + "-"
        self._ids = itertools.count(1)
        self.lock_path = self.directory / f"{self.owner}.lock"
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until this process ends
        os.write(
            self._lock_fd,
            orjson.dumps({"owner": self.owner, "pid": os.getpid(), "store": store_id, "started": time.time()}),
        )
        self._seq = itertools.count(1)
        self._segments: list[Segment] = []
        self._unstored: dict[str, Segment] = {}
        self.write_errors = 0
        self._error_logged_at = 0.0
        self.closed = False
        self._current = self._new_segment()

    def __repr__(self) -> str:
        return f"FlightJournal({str(self.directory)!r}, owner={self.owner!r})"

    # ---------------------------------------------------------------- writing
    def _new_segment(self) -> Segment:
        path = self.directory / f"{self.owner}.{next(self._seq):08d}.jrn"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        segment = Segment(path, fd)
        self._segments.append(segment)
        self.append(segment, orjson.dumps(("h", FORMAT, self.owner, self.store_id, time.time()), option=_NL))
        return segment

    def append(self, segment: Segment, line: bytes) -> None:
        """One ``write()`` of one line (the OS keeps it if the process is killed)."""
        try:
            os.write(segment.fd, line)
            if self.fsync:
                os.fsync(segment.fd)
        except OSError as e:  # a full disk must not stop serving: the record still goes to the store
            self.write_errors += 1
            now = time.monotonic()
            if now - self._error_logged_at > 60:
                self._error_logged_at = now
                log.error(
                    "flight journal %s: write failed (%s); records of requests in flight may be lost "
                    "if this process dies",
                    self.directory,
                    errno.errorcode.get(e.errno or 0, e),
                )
            return
        segment.size += len(line)

    def begin(self, key_id: str | None, alias: str, budget_id: str | None) -> Flight:
        """Record a request as begun (before anything is reserved or sent)."""
        segment = self._current
        if segment.size >= self.segment_bytes:
            segment = self._current = self._new_segment()
        flight = Flight(self, segment, f"{self._prefix}{next(self._ids):x}", key_id, alias, budget_id)
        self.append(segment, orjson.dumps(("b", flight.id, time.time(), key_id, alias, budget_id), option=_NL))
        segment.open += 1
        return flight

    def end(self, flight: Flight, record: SpendRecord) -> None:
        """Record a request's end with its full spend record (given the request's id); once per flight."""
        if flight.ended:
            return
        flight.ended = True
        record.request_id = flight.id
        segment = flight.segment
        self.append(segment, orjson.dumps(("e", flight.id, record.row()), option=_NL))
        segment.open -= 1
        segment.unstored += 1
        self._unstored[flight.id] = segment

    def stored(self, records: list[SpendRecord]) -> None:
        """These records are in the store: segments with nothing else pending are deleted."""
        for record in records:
            segment = self._unstored.pop(record.request_id, None) if record.request_id is not None else None
            if segment is not None:
                segment.unstored -= 1
        self._tidy()

    def _tidy(self) -> None:
        current = self._current
        idle = current.open == 0 and current.unstored == 0
        if current.size >= self.segment_bytes or (idle and current.size >= IDLE_ROTATE_BYTES):
            self._current = self._new_segment()
        for segment in [s for s in self._segments if s is not self._current and s.open == 0 and s.unstored == 0]:
            self._retire(segment)

    def _retire(self, segment: Segment) -> None:
        self._segments.remove(segment)
        os.close(segment.fd)
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()

    @property
    def pending(self) -> int:
        """Requests begun and not ended, plus ended ones whose record is not in the store yet."""
        return sum(s.open + s.unstored for s in self._segments)

    def segment_count(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        """At a clean shutdown (after the spend writer's last flush): with nothing pending, the journal is
        deleted; otherwise it is left, unlocked, for the next start (or another proxy) to recover."""
        if self.closed:
            return
        self.closed = True
        pending = self.pending
        for segment in list(self._segments):
            if pending:
                os.close(segment.fd)
            else:
                self._retire(segment)
        if pending:
            log.error(
                "flight journal: %d requests not in the store at shutdown; they are recovered at the next "
                "start from %s",
                pending,
                self.directory,
            )
        else:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
        os.close(self._lock_fd)

    # ---------------------------------------------------------------- other processes' journals
    def lock_state(self, owner: str) -> bool | None:
        """Whether ``owner``'s journal here is held (True: it is alive), free (False: it is dead), or absent."""
        if owner == self.owner:
            return True
        return lock_held(self.directory / f"{owner}.lock", exclusive=True)

    def dead_journals(self) -> list[DeadJournal]:
        """Journals in this directory whose owner is dead, each locked by us until removed or released."""
        names = os.listdir(self.directory)
        owners = {n[: -len(".lock")] for n in names if n.endswith(".lock")}
        owners |= {n.split(".", 1)[0] for n in names if n.endswith(".jrn")}
        found = []
        for owner in sorted(owners - {self.owner}):
            lock_path = self.directory / f"{owner}.lock"
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino  # not removed by a recovery just done
            except (BlockingIOError, FileNotFoundError):
                same = False
            if not same:
                os.close(fd)
                continue
            segments = sorted(self.directory.glob(f"{owner}.*.jrn"))
            found.append(DeadJournal(owner, fd, lock_path, segments))
        return found


@dataclass
class JournalFlight:
    """A request as a dead process's journal tells it."""

    id: str
    ts: float = 0.0
    key_id: str | None = None
    alias: str | None = None
    budget_id: str | None = None
    reservations: list[tuple[str, int, str | None]] = field(default_factory=list)  # (id, amount, budget)
    record: SpendRecord | None = None


@dataclass
class DeadJournal:
    owner: str
    lock_fd: int
    lock_path: Path
    segments: list[Path]
    foreign: list[Path] = field(default_factory=list)  # segments of another store: left alone

    def read(self, store_id: str) -> dict[str, JournalFlight]:
        flights: dict[str, JournalFlight] = {}
        for path in self.segments:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            lines = data.split(b"\n")
            try:
                head = orjson.loads(lines[0])
            except orjson.JSONDecodeError:
                head = None
            if not (isinstance(head, list) and len(head) >= 4 and head[0] == "h" and head[3] == store_id):
                if head is not None:
                    self.foreign.append(path)
                continue
            for line in lines[1:]:
                if line:
                    _apply(flights, line)
        return flights

    def remove(self) -> None:
        """Delete the journal (its records are in the store and its reservations closed)."""
        for path in self.segments:
            if path not in self.foreign:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if not self.foreign:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
        os.close(self.lock_fd)

    def release(self) -> None:
        os.close(self.lock_fd)


def _apply(flights: dict[str, JournalFlight], line: bytes) -> None:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:  # a line cut short by the crash
        return
    if not isinstance(entry, list) or len(entry) < 3:
        return
    kind, rid = entry[0], entry[1]
    flight = flights.get(rid)
    if flight is None:
        flight = flights[rid] = JournalFlight(rid)
    if kind == "b" and len(entry) >= 6:
        flight.ts, flight.key_id, flight.alias, flight.budget_id = entry[2], entry[3], entry[4], entry[5]
    elif kind == "r" and len(entry) >= 5:
        flight.reservations.append((entry[2], int(entry[3]), entry[4]))
    elif kind == "e" and isinstance(entry[2], list) and len(entry[2]) == len(SPEND_FIELDS):
        flight.record = SpendRecord(*entry[2])


@dataclass
class RecoveryReport:
    owners: int = 0  # dead processes resolved
    ended: int = 0  # records of ended requests found in their journals (written unless already stored)
    in_doubt: int = 0  # requests begun and never ended (or reservations of an owner with no journal here)
    in_doubt_pico: int = 0
    reservations_closed: int = 0

    def add(self, other: RecoveryReport) -> None:
        for name in ("owners", "ended", "in_doubt", "in_doubt_pico", "reservations_closed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Recovery:
    """Resolves what dead proxies left: their journals here and, with a leased ledger, their reservations."""

    def __init__(self, journal: FlightJournal, store: SqlStore, ledger: Any, *, lease_seconds: float = 30.0) -> None:
        self.journal = journal
        self.store = store
        self.ledger = ledger
        self.leased = leased(ledger)
        self.lease_seconds = lease_seconds
        self.total = RecoveryReport()
        self._stopping: asyncio.Event | None = None

    def start(self) -> RecoveryReport:
        """Before serving: take this process's lease, then resolve what dead processes left (blocking)."""
        if self.leased is not None:
            self.leased.start_lease(self.journal.owner, self.lease_seconds)
        return self.sweep()

    def sweep(self) -> RecoveryReport:
        """One pass (blocking; run it in a worker thread): dead journals first, then expired leases."""
        report = RecoveryReport()
        for dead in self.journal.dead_journals():
            try:
                flights = dead.read(self.journal.store_id)
                self._resolve(dead.owner, flights, report)
            except BaseException:
                dead.release()  # tried again at the next sweep
                raise
            dead.remove()
        if self.leased is not None:
            for owner in self.leased.expired_owners():
                state = self.journal.lock_state(owner)
                if state is None:  # not a process of this machine's journal: its lease is all we have
                    self._resolve(owner, None, report)
                # alive here: it renews its lease; dead here: its journal is taken over at the next pass
        self.total.add(report)
        if report.owners and (report.ended or report.in_doubt or report.reservations_closed):
            log.warning(
                "recovered %d dead process(es): %d ended request(s) re-recorded, %d in doubt ($%.6f charged at their "
                "reservations), %d reservation(s) closed",
                report.owners,
                report.ended,
                report.in_doubt,
                report.in_doubt_pico / 1e12,
                report.reservations_closed,
            )
        return report

    def _resolve(self, owner: str, flights: dict[str, JournalFlight] | None, report: RecoveryReport) -> None:
        leased_ledger = self.leased
        open_now: list[OpenReservation] = []
        if leased_ledger is not None:
            if flights is not None:
                leased_ledger.expire_owner(owner)  # its journal's lock proves it dead: no need to wait for the lease
            open_now = leased_ledger.open_of(owner)
        by_id = {r.reservation_id: r for r in open_now}
        records: list[SpendRecord] = []
        closes: list[tuple[str, str, int | None]] = []
        cost: int | None
        for flight in (flights or {}).values():
            mine = [
                r for r in open_now if r.tag == flight.id or r.reservation_id in {x[0] for x in flight.reservations}
            ]
            for r in mine:
                by_id.pop(r.reservation_id, None)
            if flight.record is not None:  # ended: its record, and any reservation it left open closed as it was
                report.ended += 1
                records.append(flight.record)
                cost = flight.record.cost_pico
                closes += [
                    (r.budget_id, r.reservation_id, cost if i == len(mine) - 1 else None) for i, r in enumerate(mine)
                ]
                if leased_ledger is None and flight.reservations:
                    last_id, _, budget = flight.reservations[-1]
                    closes += [(b or "", i, None) for i, _, b in flight.reservations[:-1]]
                    closes.append((budget or flight.budget_id or "", last_id, cost))
                continue
            if leased_ledger is not None:
                cost = sum(r.amount for r in mine) if mine else None
                closes += [(r.budget_id, r.reservation_id, r.amount) for r in mine]
            else:
                cost = None
                for i, (rid, amount, budget) in enumerate(flight.reservations):
                    last = i == len(flight.reservations) - 1
                    closes.append((budget or flight.budget_id or "", rid, amount if last else None))
            if cost is None and flight.reservations:  # closed just before the crash: at what, nobody knows
                cost = flight.reservations[-1][1]
            records.append(_in_doubt(flight.id, flight.ts or time.time(), flight.key_id, flight.alias, cost))
        for r in by_id.values():  # held by the owner, unknown to a journal here
            key_id = r.budget_id[len("key:") :] if r.budget_id.startswith("key:") else None
            records.append(_in_doubt(r.tag or f"reservation:{r.reservation_id}", r.created_at, key_id, None, r.amount))
            closes.append((r.budget_id, r.reservation_id, r.amount))
        for record in records:
            if record.outcome == "in_doubt":
                report.in_doubt += 1
                report.in_doubt_pico += record.cost_pico or 0
        # Records first, then the ledger: a crash in between repeats both, and neither counts twice.
        self.store.add_spend(records)
        for budget_id, reservation_id, actual in closes:
            if not budget_id:
                continue
            if leased_ledger is not None:
                leased_ledger.close_open(budget_id, reservation_id, actual)
            elif actual is None:
                self.ledger.release(budget_id, reservation_id)
            else:
                self.ledger.settle(budget_id, reservation_id, actual)
            report.reservations_closed += 1
        if leased_ledger is not None:
            leased_ledger.forget_owner(owner)
        report.owners += 1

    async def run(self, *, sweep_interval: float, heartbeat: bool) -> None:
        """Every ``sweep_interval`` seconds: a sweep; with ``heartbeat``, the ledger lease is renewed every
        third of its length (a Redis lease is renewed by the shared state's sync thread instead)."""
        beat = self.lease_seconds / 3 if heartbeat and self.leased is not None else sweep_interval
        next_sweep = time.monotonic() + sweep_interval
        stopping = self._stopping = asyncio.Event()
        while not stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(0.01, min(beat, next_sweep - time.monotonic())))
            if stopping.is_set():
                return
            try:
                if heartbeat and self.leased is not None:
                    await asyncio.to_thread(self.leased.heartbeat)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_interval
                    await asyncio.to_thread(self.sweep)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store or ledger away: the next pass tries again
                detail = redact(str(e).splitlines()[0]) if str(e) else ""
                log.warning("flight recovery: %s: %s (tried again in %.0f s)", type(e).__name__, detail, sweep_interval)

    def stop(self) -> None:
        """End :meth:`run` after the pass in progress (await its task)."""
        if self._stopping is not None:
            self._stopping.set()

    def end(self) -> None:
        """At a clean shutdown: give the ledger lease up."""
        if self.leased is not None:
            self.leased.end_lease()


def _in_doubt(request_id: str, ts: float, key_id: str | None, alias: str | None, cost: int | None) -> SpendRecord:
    return SpendRecord(ts, key_id, alias, None, None, 0, 0, cost, None, 0.0, None, request_id, "in_doubt")
