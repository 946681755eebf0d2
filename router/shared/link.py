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
import concurrent.futures
import functools
import logging
import os
import threading
import time
import urllib.parse
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
    """Errors meaning "Redis cannot serve us now": no connection, a stall, or a server that is out of
    memory, read-only after a failover, loading, busy or without its master."""
    import redis.exceptions as e

    return (
        e.ConnectionError,
        e.TimeoutError,
        OSError,
        e.OutOfMemoryError,
        e.ReadOnlyError,
        e.BusyLoadingError,
        e.MasterDownError,
        e.TryAgainError,
    )


def _safe_url(url: str) -> str:
    """Scheme, host, port and database only: no user, password or query (``?password=`` is accepted too)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


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
        parsed = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parsed.query)
        self._secrets = tuple(x for x in (parsed.password, *query.get("password", [])) if x)
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
        import redis.exceptions

        # Not a timeout (that would double the wait on a stalled Redis): a closed or reset connection.
        self._stale: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError,)
        self._scripts: dict[str, Any] = {}
        self._bound: tuple[asyncio.AbstractEventLoop, Any, dict[str, Any]] | None = None
        # Its own threads: the default executor is small (cpus + 4) and shared with file and DNS work.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="polyroute-redis")

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
                log.warning(
                    "shared state: Redis at %s unreachable (%s); serving with local state",
                    self.where,
                    type(err).__name__,
                )
            self.up = False
            self.last_error = redact(f"{type(err).__name__}: {err}".splitlines()[0], (self.url, *self._secrets))
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
    def run(self, fn: Callable[[Any], T], *, retry: bool = True) -> T:
        """``fn(sync_client)``; connection failures become :class:`SharedStateUnavailable`."""
        self._gate()
        try:
            try:
                result = fn(self.sync)
            except self._stale:  # a pooled connection from before a Redis restart: once more, on a new one
                if not retry:
                    raise
                result = fn(self.sync)
        except self._errors as err:
            raise self._down(err) from None
        self._back()
        return result

    async def arun(self, fn: Callable[[Any], T]) -> T:
        """:meth:`run` from a worker thread, so the event loop never waits on a socket."""
        self._gate()
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, fn)

    def eval(self, name: str, source: str, keys: list[str], args: list[Any], *, retry: bool = True) -> Any:
        """Run a Lua script (loaded once, by SHA afterwards). ``retry``: the script is idempotent, so it
        may be sent again on a new connection when the pooled one turns out dead (it may have run)."""
        script = self.script(name, source)
        return self.run(lambda _c: script(keys=keys, args=args), retry=retry)

    async def aeval(self, name: str, source: str, keys: list[str], args: list[Any], *, retry: bool = True) -> Any:
        """:meth:`eval` without blocking the loop: on the loop's own async client when one is bound
        (:meth:`bind_loop`, a server's long-lived loop), else on a worker thread."""
        bound = self._bound
        if bound is None or bound[0] is not asyncio.get_running_loop():
            script = self.script(name, source)
            loop = asyncio.get_running_loop()
            run = functools.partial(self.run, lambda _c: script(keys=keys, args=args), retry=retry)
            return await loop.run_in_executor(self._executor, run)
        self._gate()
        script = bound[2].get(name)
        if script is None:
            script = bound[2][name] = bound[1].register_script(source)
        try:
            try:
                result = await script(keys=keys, args=args)
            except self._stale:
                if not retry:
                    raise
                result = await script(keys=keys, args=args)
        except self._errors as err:
            raise self._down(err) from None
        self._back()
        return result

    def bind_loop(self) -> None:
        """Use an async client on the running loop from now on (call from that loop; pair with :meth:`aclose`).

        Async clients belong to one loop and must be closed on it, so only a loop that lives as long
        as the link (a server's) gets one; short-lived loops (``asyncio.run``) use worker threads.
        """
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(
            self.url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout
        )
        self._bound = (asyncio.get_running_loop(), client, {})

    async def aclose(self) -> None:
        """Close the bound loop's async client."""
        bound, self._bound = self._bound, None
        if bound is not None:
            await bound[1].aclose()

    def script(self, name: str, source: str) -> Any:
        """A registered Lua script for the sync client (EVALSHA, reloaded after a Redis restart)."""
        found = self._scripts.get(name)
        if found is None:
            found = self._scripts[name] = self.sync.register_script(source)
        return found

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self.sync.close()
