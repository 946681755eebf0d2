"""Pooled default HTTP clients, created lazily, and wrapping of caller-supplied clients.

One sync ``httpx.Client`` per :class:`ClientPool`, and one ``aiohttp.ClientSession`` per event loop
(aiohttp sessions are bound to the loop they were made on). A session is closed when its loop
shuts down: ``asyncio.run`` finalizes async generators before closing the loop, and we park one
generator per loop whose ``finally`` closes the session — no "Unclosed client session" warnings.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any

from .defaults import ProcessDefault
from .transport import AiohttpTransport, AsyncTransport, HttpxAsyncTransport, HttpxSyncTransport, SyncTransport

USER_AGENT = "polyroute/0.1"


class ClientPool:
    """Owns the pooled connections used when the caller passes no ``client=``.

    Example::

        pool = ClientPool(max_connections=200)
        completion(..., client=pool.sync_transport())
    """

    def __init__(self, max_connections: int = 256, keepalive_seconds: float = 60.0) -> None:
        self.max_connections = max_connections
        self.keepalive_seconds = keepalive_seconds
        self._lock = threading.Lock()
        self._sync: HttpxSyncTransport | None = None
        self._exit_hook = False
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AiohttpTransport] = (
            weakref.WeakKeyDictionary()
        )
        self._starter: asyncio.Task[None] | None = None
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
            weakref.WeakKeyDictionary()
        )
        # The last (loop, transport) handed out: async calls on one loop skip the weak-key lookup.
        self._last: tuple[asyncio.AbstractEventLoop, AiohttpTransport] | None = None

    def sync_transport(self) -> HttpxSyncTransport:
        transport = self._sync
        if transport is None:
            with self._lock:
                if self._sync is None:
                    import httpx

                    if not self._exit_hook:  # idle keep-alive sockets are closed, not left to the GC
                        atexit.register(_close_pool_at_exit, weakref.ref(self))
                        self._exit_hook = True
                    self._sync = HttpxSyncTransport(
                        httpx.Client(
                            limits=httpx.Limits(
                                max_connections=self.max_connections,
                                max_keepalive_connections=self.max_connections,
                                keepalive_expiry=self.keepalive_seconds,
                            ),
                            headers={"user-agent": USER_AGENT},
                            trust_env=True,  # HTTPS_PROXY, SSL_CERT_FILE... as users expect
                        )
                    )
                transport = self._sync
        return transport

    def async_transport(self) -> AiohttpTransport:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and not last[1].session.closed:
            return last[1]
        transport = self._async.get(loop)
        if transport is None or transport.session.closed:
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections,
                    limit_per_host=0,
                    keepalive_timeout=self.keepalive_seconds,
                    ttl_dns_cache=300,
                ),
                headers={"user-agent": USER_AGENT},
                auto_decompress=True,
                # aiohttp's trust_env looks proxies up again on every request (3x slower at 64
                # concurrent, measured): only pay for it when the environment names a proxy.
                trust_env=_env_has_proxy(),
            )
            transport = AiohttpTransport(session)
            self._async[loop] = transport
            closer = _close_on_loop_shutdown(self, session)
            # Start the generator in this loop so the loop tracks it (firstiter hook) and
            # finalizes it in shutdown_asyncgens(); the finally-block closes the session.
            self._closers[loop] = closer
            self._starter = loop.create_task(_advance(closer))
        self._last = (loop, transport)
        return transport

    def _forget_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # The session holds its loop strongly, so the weak keys alone would never let go.
        self._async.pop(loop, None)
        self._closers.pop(loop, None)
        last = self._last
        if last is not None and last[0] is loop:
            self._last = None

    async def aclose(self) -> None:
        """Close the session of the running event loop (it also closes when the loop shuts down)."""
        loop = asyncio.get_running_loop()
        transport = self._async.get(loop)
        self._forget_loop(loop)
        if transport is not None and not transport.session.closed:
            await transport.session.close()

    def close(self) -> None:
        """Close the sync client. Async sessions close with their event loops (or ``aclose()``)."""
        with self._lock:
            if self._sync is not None:
                self._sync.client.close()
                self._sync = None


def _close_pool_at_exit(ref: weakref.ref[ClientPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


def _env_has_proxy() -> bool:
    import urllib.request

    return bool(urllib.request.getproxies())


async def _advance(gen: AsyncGenerator[None, None]) -> None:
    await gen.__anext__()


async def _close_on_loop_shutdown(pool: ClientPool, session: Any) -> AsyncGenerator[None, None]:
    try:
        yield
        yield  # never resumed: the loop's shutdown_asyncgens() closes us here
    finally:
        pool._forget_loop(asyncio.get_running_loop())
        if not session.closed:
            await session.close()


_POOL = ProcessDefault(ClientPool)


def default_pool() -> ClientPool:
    """The process-wide pool used when no ``client=`` is given."""
    return _POOL.get()


def sync_transport_for(client: Any) -> SyncTransport:
    """The transport for ``client=`` on a sync call (None: the pooled default)."""
    if client is None:
        return default_pool().sync_transport()
    if isinstance(client, (HttpxSyncTransport,)) or (
        hasattr(client, "send") and hasattr(client, "open_stream") and not _is_async_transport(client)
    ):
        return client  # type: ignore[no-any-return]
    import httpx

    if isinstance(client, httpx.Client):
        return HttpxSyncTransport(client)
    if isinstance(client, httpx.AsyncClient) or type(client).__name__ == "ClientSession":
        raise TypeError(
            f"client= is an async client ({type(client).__name__}); use acompletion()/aembedding() with it, "
            "or pass an httpx.Client to completion()/embedding()"
        )
    raise TypeError(f"client= must be an httpx.Client for sync calls, got {type(client).__name__}")


def _is_async_transport(obj: Any) -> bool:
    return asyncio.iscoroutinefunction(getattr(obj, "send", None))


def async_transport_for(client: Any) -> AsyncTransport:
    """The transport for ``client=`` on an async call (None: the pooled default for this loop)."""
    if client is None:
        return default_pool().async_transport()
    if _is_async_transport(client) and hasattr(client, "open_stream"):
        return client  # type: ignore[no-any-return]
    import httpx

    if isinstance(client, httpx.AsyncClient):
        return HttpxAsyncTransport(client)
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        aiohttp = None  # type: ignore[assignment]
    if aiohttp is not None and isinstance(client, aiohttp.ClientSession):
        return AiohttpTransport(client)
    if isinstance(client, httpx.Client):
        raise TypeError(
            "client= is a sync httpx.Client; use completion()/embedding() with it, "
            "or pass an httpx.AsyncClient or aiohttp.ClientSession to acompletion()/aembedding()"
        )
    raise TypeError(
        f"client= must be an httpx.AsyncClient or aiohttp.ClientSession for async calls, got {type(client).__name__}"
    )
