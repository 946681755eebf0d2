"""The router's live state shared through Redis: cooldowns, Retry-After, in-flight counts, latency.

Requests never wait on Redis for these: sessions keep deciding on local state and report what they
saw (a failure, a success, a Retry-After) to a queue. A daemon thread, every ``interval`` seconds,
runs those reports as Lua scripts (failures are counted across replicas, so ``allowed_fails`` is a
fleet-wide count), publishes this replica's in-flight counts, and pulls back what the others did:
a deployment cooled down by one replica is skipped by all of them within one interval. rpm/tpm
admission is the exception: it is one atomic script per request to a limited deployment
(:mod:`.limits`), since a window cannot be shared after the fact.

If Redis is unreachable the thread keeps retrying and the router runs on local state alone. Times
in Redis are wall-clock seconds, so replicas' clocks must agree to well under a cooldown (NTP); a
replica not seen for 3 s (or 30 intervals) no longer counts, and its in-flight counts expire.

Example::

    router = Router(model_list, redis_url="redis://127.0.0.1:6379/0")
    router.shared.status()      # {'redis': 'up', 'replica': ..., 'replicas': 2, ...}
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import scripts
from .limits import SharedWindows
from .link import RedisLink, SharedStateUnavailable

if TYPE_CHECKING:
    from ..routing.deployment import Deployment
    from ..routing.router import Router

log = logging.getLogger("polyroute.shared")
ALPHA = 0.3  # the router's own EWMA weight


def _to_monotonic(wall: float) -> float:
    return wall - time.time() + time.monotonic()


class SharedRouterState:
    """Mirrors a router's deployment state to and from Redis (see the module docstring)."""

    def __init__(self, link: RedisLink, *, interval: float = 0.1) -> None:
        self.link = link
        self.interval = interval
        self.windows = SharedWindows(link)
        # Reports not yet written; during a long outage the oldest go (they describe the past anyway).
        self._events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=10_000)
        self._latency_lock = threading.Lock()
        self.flushers: list[Callable[[], int]] = []  # e.g. RedisLedger.flush: writes owed to Redis
        # Commands added to every sync's pipeline, e.g. RedisLedger.add_heartbeat: a lease renewed each interval
        self.heartbeats: list[Callable[[Any], Any]] = []
        self._latency: dict[int, list[float]] = {}  # id(deployment) -> [sum, n, ttft sum, ttft n]
        self._deployments: list[Deployment] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.replicas = 1
        self.synced_at: float | None = None
        self._failure_ids = itertools.count(1)  # next() is atomic under the GIL: ids never repeat
        # One sync at a time: a sync that took the queued reports must have written them before another
        # thread's sync reads back, or that reader sees the fleet without its own latest reports.
        self._syncing = threading.Lock()

    def status(self) -> dict[str, Any]:
        return {**self.link.status(), "replicas": self.replicas, "synced_at": self.synced_at}

    # ---------------------------------------------------------------- lifecycle
    def attach(self, router: Router) -> None:
        self._deployments = [d for members in router.groups.values() for d in members]
        self._router = router
        self._thread = threading.Thread(target=self._run, name="polyroute-shared-state", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sync_once()  # last reports, and this replica's in-flight counts removed
        with contextlib.suppress(SharedStateUnavailable):
            self.link.run(lambda c: c.delete(self._inflight_key(self.link.replica)))
        self.link.close()

    def sync_now(self, timeout: float = 2.0) -> bool:
        """Push and pull once from the caller's thread (tests, shutdown), after any sync in progress: every
        report made before the call is in Redis, and what Redis holds then is applied. False when Redis is away."""
        return self._sync_once()

    # ---------------------------------------------------------------- reports from sessions (any thread)
    def failed(self, d: Deployment, *, probe: bool) -> None:
        self._events.append(("fail", d, time.time(), probe, f"{self.link.replica}:{next(self._failure_ids)}"))
        self._wake.set()  # failures travel at once: the sooner others know, the fewer requests they waste

    def succeeded(self, d: Deployment, latency_ms: float, ttft_ms: float | None, *, had_trouble: bool) -> None:
        """``had_trouble``: the deployment had failures or a cooldown before this success (read before the
        session cleared them): the fleet-wide count and cooldown are cleared too."""
        if had_trouble:
            self._events.append(("ok", d))
        with self._latency_lock:
            acc = self._latency.setdefault(id(d), [0.0, 0, 0.0, 0])
            acc[0] += latency_ms
            acc[1] += 1
            if ttft_ms is not None:
                acc[2] += ttft_ms
                acc[3] += 1

    def not_before(self, d: Deployment, until_monotonic: float) -> None:
        self._events.append(("wait", d, until_monotonic - time.monotonic() + time.time()))
        self._wake.set()

    def admit(self, d: Deployment, tokens: int) -> float:
        return self.windows.admit(self._scope(d), rpm=d.rpm, tpm=d.tpm, tokens=tokens)

    async def aadmit(self, d: Deployment, tokens: int) -> float:
        return await self.windows.aadmit(self._scope(d), rpm=d.rpm, tpm=d.tpm, tokens=tokens)

    # ---------------------------------------------------------------- keys
    def _scope(self, d: Deployment) -> str:
        return f"dep:{d.name}"

    def _dep_keys(self, d: Deployment) -> list[str]:
        base = self.link.key("dep", d.name)
        return [base + ":fails", base]

    def _inflight_key(self, replica: str) -> str:
        return self.link.key("inflight", replica)

    # ---------------------------------------------------------------- the sync thread
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.link.up and not self.link.ping():
                time.sleep(min(1.0, self.link.retry_seconds))
                continue
            try:
                if self._sync_once():
                    for flush in self.flushers:
                        flush()
            except Exception:  # a bug here must not kill the thread: log it and go on
                log.exception("shared state sync failed")

    def _sync_once(self) -> bool:
        with self._syncing:
            try:
                self.link.run(self._push)
                pulled = self.link.run(self._pull)
            except SharedStateUnavailable:
                return False
            self._apply(*pulled)
            self.synced_at = time.time()
            return True

    def _push(self, client: Any) -> None:
        events = []
        while self._events:
            events.append(self._events.popleft())
        pipe = client.pipeline(transaction=False)
        fail = self.link.script("fail", scripts.FAIL)
        router = self._router
        fails: list[Deployment] = []
        for event in events:
            d = event[1]
            keys = self._dep_keys(d)
            if event[0] == "fail":
                args = [
                    event[2],
                    router.cooldown_window,
                    router.allowed_fails,
                    router.cooldown_seconds,
                    event[4],
                    "1" if event[3] else "0",
                ]
                fail(keys=keys, args=args, client=pipe)
                fails.append(d)
            elif event[0] == "ok":
                self.link.script("succeed", scripts.SUCCEED)(keys=keys, args=[], client=pipe)
            else:
                self.link.script("not_before", scripts.NOT_BEFORE)(keys=keys, args=[event[2]], client=pipe)
        with self._latency_lock:
            latency, self._latency = self._latency, {}
        by_id = {id(d): d for d in self._deployments}
        for ident, (total, n, ttft_total, ttft_n) in latency.items():
            keys = self._dep_keys(by_id[ident])
            script = self.link.script("latency", scripts.LATENCY)
            if n:
                script(keys=keys, args=["latency_ms", total / n, n, ALPHA], client=pipe)
            if ttft_n:
                script(keys=keys, args=["ttft_ms", ttft_total / ttft_n, ttft_n, ALPHA], client=pipe)
        mine = self._inflight_key(self.link.replica)
        counts = {d.name: d.state.in_flight for d in self._deployments}
        pipe.hset(mine, mapping=counts)
        pipe.pexpire(mine, int(max(3.0, self.interval * 30) * 1000))
        pipe.zadd(self.link.key("replicas"), {self.link.replica: time.time()})
        for heartbeat in self.heartbeats:
            heartbeat(pipe)
        try:
            pipe.execute()
        except Exception:
            for event in reversed(events):  # not lost: retried on the next sync
                self._events.appendleft(event)
            with self._latency_lock:
                for ident, (total, n, ttft_total, ttft_n) in latency.items():
                    acc = self._latency.setdefault(ident, [0.0, 0, 0.0, 0])
                    acc[0], acc[1], acc[2], acc[3] = acc[0] + total, acc[1] + n, acc[2] + ttft_total, acc[3] + ttft_n
            raise

    def _pull(self, client: Any) -> tuple[list[dict[bytes, bytes]], list[dict[bytes, bytes]]]:
        live_since = time.time() - max(3.0, self.interval * 30)
        replicas_key = self.link.key("replicas")
        pipe = client.pipeline(transaction=False)
        pipe.zremrangebyscore(replicas_key, "-inf", live_since)
        pipe.zrange(replicas_key, 0, -1)
        for d in self._deployments:
            pipe.hgetall(self._dep_keys(d)[1])
        results = pipe.execute()
        others = [r.decode() for r in results[1] if r.decode() != self.link.replica]
        self.replicas = len(others) + 1
        inflight = []
        if others:
            pipe = client.pipeline(transaction=False)
            for replica in others:
                pipe.hgetall(self._inflight_key(replica))
            inflight = pipe.execute()
        return results[2:], inflight

    def _apply(self, states: list[dict[bytes, bytes]], inflight: list[dict[bytes, bytes]]) -> None:
        t = time.monotonic()
        for d, remote in zip(self._deployments, states, strict=True):
            others = sum(int(counts.get(d.name.encode(), 0)) for counts in inflight)
            state = d.state
            with state.lock:
                state.remote_in_flight = others
                cooldown = float(remote.get(b"cooldown_until", 0) or 0)
                if cooldown:
                    until = _to_monotonic(cooldown)
                    if until > t and until > state.cooldown_until and not state.probing:
                        state.cooldown_until = until
                not_before = float(remote.get(b"not_before", 0) or 0)
                if not_before:
                    state.not_before = max(state.not_before, _to_monotonic(not_before))
                if b"latency_ms" in remote:
                    state.latency_ewma_ms = float(remote[b"latency_ms"])
                if b"ttft_ms" in remote:
                    state.ttft_ewma_ms = float(remote[b"ttft_ms"])
