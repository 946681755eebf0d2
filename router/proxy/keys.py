"""Who may call: the master key, or a virtual key with its model allowlist, rpm/tpm and budget.

Keys are compared by SHA-256 hash (the store never holds a key); the master key in constant time.
A key's budget is a :class:`router.budget.Budget` over the ledger (the store's, or Redis when
configured), so concurrent requests on one key can never spend past it. With Redis, a key's rpm/tpm
window is shared by every replica; when Redis is unreachable each replica falls back to its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import time
from dataclasses import dataclass

from ..budget import Budget
from ..ledger import Ledger
from ..shared.limits import SharedWindows
from ..shared.link import SharedStateUnavailable
from .store import KeyRow, SqlStore, hash_key


@dataclass
class Caller:
    """The authenticated caller of one request."""

    key: KeyRow | None  # None: the master key
    budget: Budget | None = None

    @property
    def key_id(self) -> str | None:
        return None if self.key is None else self.key.id


def budget_name(key_id: str) -> str:
    """The ledger name of a virtual key's budget: ``budget_name("3f2a") == "key:3f2a"``."""
    return f"key:{key_id}"


class Refused(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Access:
    """Authenticates keys and enforces their limits (rpm/tpm in this process)."""

    def __init__(
        self, store: SqlStore, master_key: str | None, ledger: Ledger, windows: SharedWindows | None = None
    ) -> None:
        self.store = store
        self.windows = windows
        self.master_key = master_key
        self.ledger = ledger
        self._rows: dict[str, tuple[float, KeyRow | None]] = {}  # by key hash: (fetched at, row)
        self.cache_seconds = 10.0  # a revocation made by another replica applies within this time
        self._budgets: dict[str, Budget] = {}
        self._requests: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._tokens: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(collections.deque)
        self._token_totals: dict[str, int] = collections.defaultdict(int)

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached rows after an admin change (all of them: rows are keyed by hash)."""
        self._rows.clear()
        if key_id is not None:
            self._budgets.pop(key_id, None)

    def is_master(self, key: str | None) -> bool:
        return (
            key is not None
            and self.master_key is not None
            and hmac.compare_digest(_bytes(key), _bytes(self.master_key))
        )

    async def authenticate(self, key: str | None) -> Caller:
        """Who is calling; raises :class:`Refused` (401, 429) before the body is even read."""
        if self.master_key is None:  # --dev: no authentication
            return Caller(None)
        if key is None:
            raise Refused(401, "missing API key: send 'Authorization: Bearer <key>'", "missing_key")
        if self.is_master(key):
            return Caller(None)
        digest = hash_key(key)
        cached = self._rows.get(digest)
        now = time.time()
        if cached is None or now - cached[0] > self.cache_seconds:
            if len(self._rows) > 100_000:  # a flood of random keys must not grow memory forever
                self._rows.clear()
            cached = self._rows[digest] = (now, await asyncio.to_thread(self.store.key_by_hash, digest))
        row = cached[1]
        if row is None or row.revoked_at is not None:
            raise Refused(401, "invalid API key", "invalid_key")
        if row.expires_at is not None and now >= row.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(row.expires_at))
            raise Refused(401, f"this key expired at {when}", "key_expired")
        await self._shared_limits(row, now)
        budget = None
        if row.max_budget_usd is not None:
            budget = self._budgets.get(row.id)
            if budget is None or budget.limit_usd != row.max_budget_usd:
                budget = self._budgets[row.id] = Budget(row.max_budget_usd, self.ledger, name=budget_name(row.id))
        return Caller(row, budget)

    def allow(self, caller: Caller, model: str) -> None:
        """Raise 403 when the caller's key may not use ``model``."""
        row = caller.key
        if row is not None and row.models is not None and model not in row.models:
            raise Refused(
                403,
                f"this key may not use model {model!r}; allowed: {', '.join(row.models) or 'none'}",
                "model_not_allowed",
            )

    async def caller(self, key: str | None, model: str | None) -> Caller:
        """:meth:`authenticate` then :meth:`allow` (``model`` None: any)."""
        who = await self.authenticate(key)
        if model is not None:
            self.allow(who, model)
        return who

    async def _shared_limits(self, row: KeyRow, now: float) -> None:
        if self.windows is None or (row.rpm is None and row.tpm is None):
            self._limits(row, now)
            return
        try:
            wait = await self.windows.aadmit(f"key:{row.id}", rpm=row.rpm, tpm=row.tpm, tokens=0)
        except SharedStateUnavailable:
            self._limits(row, now)  # this replica's own window until Redis is back
            return
        self._trim(row.id, now)
        if wait <= 0:
            self._requests[row.id].append(now)  # the local window stays warm for an outage
        else:
            used_requests, _ = await asyncio.to_thread(self.windows.used, f"key:{row.id}")
            if row.rpm is not None and used_requests >= row.rpm:
                raise Refused(
                    429,
                    f"this key's limit of {row.rpm} requests per minute is reached (across all "
                    f"replicas); retry in {max(1, round(wait))}s",
                    "rpm_limit",
                )
            raise Refused(
                429,
                f"this key's limit of {row.tpm} tokens per minute is reached (across all replicas); "
                f"retry in {max(1, round(wait))}s",
                "tpm_limit",
            )

    def _trim(self, key_id: str, now: float) -> None:
        horizon = now - 60.0
        requests, tokens = self._requests[key_id], self._tokens[key_id]
        while requests and requests[0] <= horizon:
            requests.popleft()
        while tokens and tokens[0][0] <= horizon:
            self._token_totals[key_id] -= tokens.popleft()[1]

    def _limits(self, row: KeyRow, now: float) -> None:
        self._trim(row.id, now)
        requests = self._requests[row.id]
        if row.rpm is not None and len(requests) >= row.rpm:
            raise Refused(
                429,
                f"this key's limit of {row.rpm} requests per minute is reached; retry in {requests[0] + 60 - now:.0f}s",
                "rpm_limit",
            )
        if row.tpm is not None and self._token_totals[row.id] >= row.tpm:
            raise Refused(429, f"this key's limit of {row.tpm} tokens per minute is reached", "tpm_limit")
        requests.append(now)

    def used_tokens(self, key_id: str | None, tokens: int, *, shared: bool = True) -> None:
        """Count a finished request's tokens against its key's tpm."""
        if key_id is not None and tokens:
            self._tokens[key_id].append((time.time(), tokens))
            self._token_totals[key_id] += tokens  # a running total: no sum over the window per request
            if self.windows is not None and shared:
                task = asyncio.get_running_loop().create_task(self._count_shared(key_id, tokens))
                _PENDING.add(task)
                task.add_done_callback(_PENDING.discard)

    async def _count_shared(self, key_id: str, tokens: int) -> None:
        assert self.windows is not None
        with contextlib.suppress(SharedStateUnavailable):  # counted locally; a window paces, it does not bill
            await self.windows.acount_tokens(f"key:{key_id}", tokens)


_PENDING: set[asyncio.Task[None]] = set()


def _bytes(text: str) -> bytes:
    # Header values may hold undecodable bytes (surrogate-escaped): compare them, never crash on them.
    return text.encode("utf-8", "surrogateescape")
