"""One connection pool to the shared Redis, and whether Redis is reachable.

Every shared-state component (ledger, rate windows, router state) talks to Redis through a
:class:`RedisLink`. When a command fails for a connection reason the link is marked down and, for
``retry_seconds``, callers are told so at once (:class:`SharedStateUnavailable`) instead of each
waiting for a socket timeout; the router's sync thread pings it back up. Nothing here logs or
raises the URL (it may hold a password).

Example::

    link = RedisLink("redis://127.0.0.1:6379/0", prefix="prod")
    link.key("budget", "team-a")        # 'prod:budget:team-a'
    link.status()                       # {'redis': 'up', ...}
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from providers.errors import redact

T = TypeVar("T")
log = logging.getLogger("polyroute.shared")


class SharedStateUnavailable(Exception):
    """Redis cannot be reached now (the message never holds the URL). ``maybe_applied``: the command
    was sent and timed out, so Redis may still run it."""

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


def _connection_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.ConnectionError, redis.TimeoutError, OSError)


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class RedisLink:
    """A Redis client (thread-safe pool) with up/down tracking shared by every component using it."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "polyroute",
        socket_timeout: float = 0.5,
        retry_seconds: float = 1.0,
    ) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - depends on the install
            raise ImportError("redis_url needs the redis client: pip install 'polyroute[redis]'") from None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {_safe_url(url)!r}")
        self.url = url
        self.where = _safe_url(url)
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.retry_seconds = retry_seconds
        self.replica = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"
        self.sync = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, health_check_interval=0
        )
        self._lock = threading.Lock()
        self.up = True
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.errors = 0  # connection failures seen, for /metrics
        self._retry_at = 0.0
        self._errors = _connection_errors()
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisLink({self.where!r}, prefix={self.prefix!r}, up={self.up})"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---------------------------------------------------------------- health
    def _down(self, err: BaseException) -> SharedStateUnavailable:
        with self._lock:
            self.errors += 1
            if self.up:
                self.down_since = time.time()
                log.warning("shared state: Redis at %s unreachable (%s); serving with local state", self.where,
                            type(err).__name__)  # fmt: skip
            self.up = False
            self.last_error = redact(f"{type(err).__name__}: {err}".splitlines()[0], (self.url,))
            self._retry_at = time.monotonic() + self.retry_seconds
        return SharedStateUnavailable(f"Redis at {self.where} is unreachable ({self.last_error})", maybe_applied=True)

    def _back(self) -> None:
        if not self.up:
            with self._lock:
                if not self.up:
                    log.warning("shared state: Redis at %s reachable again", self.where)
                    self.up, self.down_since = True, None

    def _gate(self) -> None:
        if not self.up and time.monotonic() < self._retry_at:
            raise SharedStateUnavailable(f"Redis at {self.where} is unreachable ({self.last_error})")

    def status(self) -> dict[str, Any]:
        return {
            "redis": "up" if self.up else "down",
            "redis_down_since": self.down_since,
            "redis_last_error": None if self.up else self.last_error,
            "replica": self.replica,
        }

    def ping(self) -> bool:
        """Check Redis now (ignoring the retry gate); marks the link up or down."""
        try:
            self.sync.ping()
        except self._errors as err:
            self._down(err)
            return False
        self._back()
        return True

    # ---------------------------------------------------------------- calls
    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(sync_client)``; connection failures become :class:`SharedStateUnavailable`."""
        self._gate()
        try:
            result = fn(self.sync)
        except self._errors as err:
            raise self._down(err) from None
        self._back()
        return result

    async def arun(self, fn: Callable[[Any], T]) -> T:
        """:meth:`run` from a worker thread, so the event loop never waits on a socket.

        One sync connection pool serves every thread and event loop: async clients are bound to the
        loop that made them and leak their sockets when a short-lived loop (``asyncio.run``) closes.
        """
        self._gate()
        return await asyncio.to_thread(self.run, fn)

    def script(self, name: str, source: str) -> Any:
        """A registered Lua script for the sync client (EVALSHA, reloaded after a Redis restart)."""
        found = self._scripts.get(name)
        if found is None:
            found = self._scripts[name] = self.sync.register_script(source)
        return found

    def close(self) -> None:
        self.sync.close()
