"""The budget ledger in Redis: reservations shared by every replica and batch worker.

Reserve, settle and release are Lua scripts (see :mod:`.scripts`), so two replicas can never push
settled spend past a limit. When Redis cannot be reached, ``on_unavailable`` decides:

- ``"refuse"`` (default, fail safe): new reservations are refused with :class:`BudgetUnavailableError`
  (HTTP 503 from the proxy), so no money is spent that the shared ledger has not approved;
- ``"local"``: keep serving from a per-process ledger that starts from the last totals seen in Redis.
  Other replicas' spend during the outage is invisible, so a budget can be overspent by it.

Either way, nothing is lost: settlements of reservations made in Redis, and spend made locally, are
queued and written to Redis (once each) when it is back (:meth:`RedisLedger.flush`).

Leases (:class:`router.ledger.LeasedLedger`): a proxy takes a lease id (``start_lease``); its reservations
carry it (``amount:wall:owner:tag`` in the open hash, the owner indexed in the same script), and a lease key
``<prefix>:lease:<owner>`` with a TTL is renewed by the shared state's sync thread. When it expires, the
other replicas settle that owner's reservations at their reserved amount.

Example::

    link = RedisLink("redis://127.0.0.1:6379/0")
    budget = Budget(5.0, ledger=RedisLedger(link), name="team-a")   # same name = same money everywhere
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from ..errors import BudgetUnavailableError
from ..ledger import InMemoryLedger, OpenReservation, new_id
from ..pricing.prices import pico_to_usd
from . import scripts
from .link import RedisLink, SharedStateUnavailable

MODES = ("refuse", "local")
_LOCAL = "local-"


class RedisLedger:
    """:class:`router.ledger.Ledger` over Redis (sync and async)."""

    def __init__(self, link: RedisLink, *, on_unavailable: str = "refuse") -> None:
        if on_unavailable not in MODES:
            raise ValueError(f"on_redis_unavailable must be 'refuse' or 'local', got {on_unavailable!r}")
        self.link = link
        self.on_unavailable = on_unavailable
        self._lock = threading.Lock()  # guards the queue and the local state
        self._flushing = threading.Lock()  # one flush at a time
        self._seen: dict[str, tuple[int, int]] = {}  # last totals read from Redis, per budget
        self._local = InMemoryLedger()  # budgets during an outage ("local" mode)
        self._local_base: dict[str, int] = {}
        # Writes Redis still owes: ("close", budget, id, actual|None) or ("spent", budget, id, amount).
        self._owed: collections.deque[tuple[str, str, str, int | None]] = collections.deque()
        self.owner: str | None = None  # this process's lease id, once start_lease is called
        self._lease_ms = 30_000
        self._owner_keys: list[str] = []  # [its budget ids, every owner]: the RESERVE script's KEYS[4:6]

    def __repr__(self) -> str:
        return f"RedisLedger({self.link!r}, on_unavailable={self.on_unavailable!r})"

    @staticmethod
    def keys_of(link: RedisLink, budget_id: str) -> list[str]:
        """The Redis keys of one budget (totals, open and closed reservations, spend added)."""
        base = link.key("budget", budget_id)
        return [base, base + ":open", base + ":closed", base + ":added"]

    def _keys(self, budget_id: str) -> list[str]:
        return self.keys_of(self.link, budget_id)

    # ---------------------------------------------------------------- outage handling
    def _refuse(self, budget_id: str, amount: int, limit: int) -> BudgetUnavailableError:
        spent, reserved = self._seen.get(budget_id, (0, 0))
        # The message reaches API clients: it names no host (the log line of the outage does).
        return BudgetUnavailableError(
            f"budget {budget_id!r}: the shared budget ledger is unreachable, so this call is refused rather than "
            f"risk spending past ${pico_to_usd(limit):.6f} (fail-safe); try again shortly. Operators: restore Redis, "
            "or set on_redis_unavailable: local to keep spending on each replica's own count",
            limit_usd=pico_to_usd(limit),
            spent_usd=pico_to_usd(spent),
            reserved_usd=pico_to_usd(reserved),
            needed_usd=pico_to_usd(amount),
        )

    def _reserve_locally(self, budget_id: str, amount: int, limit: int) -> str | None:
        with self._lock:  # counting starts from what Redis last said this budget had spent and reserved
            base = self._local_base.setdefault(budget_id, sum(self._seen.get(budget_id, (0, 0))))
        rid = self._local.reserve(budget_id, amount, limit - base)
        return None if rid is None else _LOCAL + rid

    def _close_locally(self, budget_id: str, rid: str, actual: int | None) -> None:
        if actual is None:
            self._local.release(budget_id, rid[len(_LOCAL) :])
            return
        self._local.settle(budget_id, rid[len(_LOCAL) :], actual)
        if actual:
            with self._lock:
                self._owed.append(("spent", budget_id, rid, actual))  # written by the next flush

    def _owe(self, entry: tuple[str, str, str, int | None]) -> None:
        with self._lock:
            self._owed.append(entry)

    def pending(self) -> int:
        """Writes still owed to Redis (settlements and spend made during an outage)."""
        return len(self._owed)

    def flush(self) -> int:
        """Write what Redis is owed, oldest first; stops at the first failure. Returns how many were written.

        Safe from any thread (one flush at a time); the shared router state's thread calls it while
        writes are owed, so they reach Redis soon after it is back.
        """
        written = 0
        with self._flushing:
            while True:
                with self._lock:
                    if not self._owed:
                        break
                    entry = self._owed[0]
                kind, budget_id, rid, amount = entry
                keys = self._keys(budget_id)
                try:
                    if kind == "close":
                        self.link.eval("close", scripts.CLOSE, keys[:3], [rid, "" if amount is None else amount])
                    else:
                        self.link.eval("add_spent", scripts.ADD_SPENT, keys, [rid, amount or 0])
                except SharedStateUnavailable:
                    return written
                with self._lock:
                    self._owed.remove(entry)  # this entry, whatever was appended meanwhile
                written += 1
            with self._lock:  # all paid back: the next outage starts from fresh Redis totals
                if self._local_base and not any(self._local.totals(b)[1] for b in self._local_base):
                    self._local_base.clear()
                    self._local = InMemoryLedger()
        return written

    def _reserved(self, budget_id: str, rid: str, reply: Any) -> str | None:
        self._seen[budget_id] = (int(reply[1]), int(reply[2]))
        return rid if int(reply[0]) else None

    # ---------------------------------------------------------------- Ledger protocol
    def _reserve_call(
        self, budget_id: str, amount: int, limit: int, rid: str, tag: str | None
    ) -> tuple[list[str], list[Any]]:
        keys, args = self._keys(budget_id)[:3], [amount, limit, rid, f"{time.time():.3f}"]
        if self.owner is not None:  # the owner goes with the reservation: no extra round trip
            keys += self._owner_keys
            args += [self.owner, (tag or "").replace(":", "_"), budget_id]
        return keys, args

    def reserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        rid = new_id()
        keys, args = self._reserve_call(budget_id, amount, limit, rid, tag)
        try:
            reply = self.link.eval("reserve", scripts.RESERVE, keys, args)
        except SharedStateUnavailable as e:
            if e.maybe_applied:  # the script may still run when Redis is back: give the id up for sure
                self._owe(("close", budget_id, rid, None))
            if self.on_unavailable == "local":
                return self._reserve_locally(budget_id, amount, limit)
            raise self._refuse(budget_id, amount, limit) from None
        if self._owed:
            self.flush()
        return self._reserved(budget_id, rid, reply)

    async def areserve(self, budget_id: str, amount: int, limit: int, tag: str | None = None) -> str | None:
        rid = new_id()
        keys, args = self._reserve_call(budget_id, amount, limit, rid, tag)
        try:
            reply = await self.link.aeval("reserve", scripts.RESERVE, keys, args)
        except SharedStateUnavailable as e:
            if e.maybe_applied:
                self._owe(("close", budget_id, rid, None))
            if self.on_unavailable == "local":
                return self._reserve_locally(budget_id, amount, limit)
            raise self._refuse(budget_id, amount, limit) from None
        if self._owed:  # Redis answers again: pay back what it is owed, off the event loop
            await self.link.arun(lambda _c: self.flush())
        return self._reserved(budget_id, rid, reply)

    def _close(self, budget_id: str, rid: str, actual: int | None) -> None:
        if rid.startswith(_LOCAL):
            self._close_locally(budget_id, rid, actual)
            return
        keys = self._keys(budget_id)
        try:
            self.link.eval("close", scripts.CLOSE, keys[:3], [rid, "" if actual is None else actual])
        except SharedStateUnavailable:
            self._owe(("close", budget_id, rid, actual))  # written when Redis is back, never lost

    async def _aclose(self, budget_id: str, rid: str, actual: int | None) -> None:
        if rid.startswith(_LOCAL):
            self._close_locally(budget_id, rid, actual)
            return
        keys = self._keys(budget_id)
        try:
            await self.link.aeval("close", scripts.CLOSE, keys[:3], [rid, "" if actual is None else actual])
        except SharedStateUnavailable:
            self._owe(("close", budget_id, rid, actual))

    def settle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        self._close(budget_id, reservation_id, actual)

    def release(self, budget_id: str, reservation_id: str) -> None:
        self._close(budget_id, reservation_id, None)

    async def asettle(self, budget_id: str, reservation_id: str, actual: int) -> None:
        await self._aclose(budget_id, reservation_id, actual)

    async def arelease(self, budget_id: str, reservation_id: str) -> None:
        await self._aclose(budget_id, reservation_id, None)

    def totals(self, budget_id: str) -> tuple[int, int]:
        """(settled spend, open reservations); during an outage, the last seen totals plus local ones."""
        key = self._keys(budget_id)[0]
        try:
            raw = self.link.run(lambda c: c.hmget(key, "spent", "reserved"))
        except SharedStateUnavailable:
            spent, reserved = self._seen.get(budget_id, (0, 0))
            local_spent, local_reserved = self._local.totals(budget_id)
            return spent + local_spent, reserved + local_reserved
        found = (int(raw[0] or 0), int(raw[1] or 0))
        self._seen[budget_id] = found
        owed = sum(a or 0 for kind, b, _, a in list(self._owed) if kind == "spent" and b == budget_id)
        return found[0] + owed, found[1]

    def release_stale(self, budget_id: str, older_than_seconds: float) -> int:
        """Release reservations older than this (their holder died); returns how many."""
        keys = self._keys(budget_id)
        horizon = time.time() - older_than_seconds
        entries = self.link.run(lambda c: c.hgetall(keys[1]))
        stale = [rid.decode() for rid, value in entries.items() if float(value.decode().split(":")[1]) < horizon]
        for rid in stale:
            self._close(budget_id, rid, None)
        return len(stale)

    def reset(self, budget_id: str, spent: int = 0, *, ttl_s: int | None = None) -> None:
        """Start a budget over with ``spent`` already settled (a batch run seeds it from its journal);
        ``ttl_s``: its totals expire then (a budget whose owner may die without dropping it)."""
        keys = self._keys(budget_id)

        def go(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(*keys)
            pipe.hset(keys[0], mapping={"spent": spent, "reserved": 0})
            if ttl_s is not None:
                pipe.expire(keys[0], ttl_s)
            pipe.execute()

        self.link.run(go)

    def close(self) -> None:
        self.flush()

    # ---------------------------------------------------------------- leases (router.ledger.LeasedLedger)
    def _lease_key(self, owner: str) -> str:
        return self.link.key("lease", owner)

    def _owner_budgets_key(self, owner: str) -> str:
        return self.link.key("owner", owner, "budgets")

    def start_lease(self, owner: str, ttl_seconds: float) -> None:
        owner = owner.replace(":", "_")
        self._lease_ms = max(1, int(ttl_seconds * 1000))
        self._owner_keys = [self._owner_budgets_key(owner), self.link.key("owners")]
        self.owner = owner
        self.link.run(lambda c: self.add_heartbeat(c.pipeline(transaction=False)).execute())

    def add_heartbeat(self, pipe: Any) -> Any:
        """Queue the lease renewal on a pipeline (the shared state's sync thread adds it to its own: no extra
        round trip); returns the pipeline."""
        if self.owner is not None:
            pipe.set(self._lease_key(self.owner), f"{time.time():.3f}", px=self._lease_ms)
            pipe.sadd(self.link.key("owners"), self.owner)
        return pipe

    def heartbeat(self) -> None:
        if self.owner is not None:
            self.link.run(lambda c: self.add_heartbeat(c.pipeline(transaction=False)).execute())

    def end_lease(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            self.link.run(lambda c: c.delete(self._lease_key(owner)))

    def expired_owners(self) -> list[str]:
        owners_key, me = self.link.key("owners"), self.owner

        def go(client: Any) -> list[str]:
            owners = sorted(o.decode() for o in client.smembers(owners_key) if o.decode() != me)
            if not owners:
                return []
            pipe = client.pipeline(transaction=False)
            for owner in owners:
                pipe.exists(self._lease_key(owner))
            return [o for o, alive in zip(owners, pipe.execute(), strict=True) if not alive]

        return self.link.run(go)

    def open_of(self, owner: str) -> list[OpenReservation]:
        def go(client: Any) -> list[OpenReservation]:
            budgets = sorted(b.decode() for b in client.smembers(self._owner_budgets_key(owner)))
            pipe = client.pipeline(transaction=False)
            for budget_id in budgets:
                pipe.hgetall(self._keys(budget_id)[1])
            found = []
            for budget_id, entries in zip(budgets, pipe.execute(), strict=True):
                for rid, value in entries.items():
                    parts = value.decode().split(":")
                    if len(parts) >= 4 and parts[2] == owner:
                        found.append(
                            OpenReservation(budget_id, rid.decode(), int(parts[0]), parts[3] or None, float(parts[1]))
                        )
            return sorted(found, key=lambda r: r.created_at)

        return self.link.run(go)

    def close_open(self, budget_id: str, reservation_id: str, actual: int | None) -> None:
        owner = self._owner_of(budget_id, reservation_id)
        if owner is None:
            return  # closed already
        keys = [*self._keys(budget_id)[:3], self._lease_key(owner)]
        self.link.eval("close_expired", scripts.CLOSE_EXPIRED, keys, [reservation_id, "" if actual is None else actual])

    def _owner_of(self, budget_id: str, reservation_id: str) -> str | None:
        raw = self.link.run(lambda c: c.hget(self._keys(budget_id)[1], reservation_id))
        if raw is None:
            return None
        parts = raw.decode().split(":")
        return parts[2] if len(parts) >= 4 else ""

    def expire_owner(self, owner: str) -> None:
        self.link.run(lambda c: c.delete(self._lease_key(owner)))

    def forget_owner(self, owner: str) -> None:
        keys = [self._lease_key(owner), self._owner_budgets_key(owner), self.link.key("owners")]
        self.link.eval("forget_owner", scripts.FORGET_OWNER, keys, [owner])
