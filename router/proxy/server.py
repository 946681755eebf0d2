"""``polyroute serve``: build the Router from the config and serve it (uvloop when installed).

The server refuses to start without a master key unless ``--dev``; SIGTERM stops accepting new
connections and lets requests in flight finish (``shutdown_timeout``). :class:`ProxyRunner` serves the
app with OpenAI's error JSON even for requests aiohttp refuses itself (bad request line, headers, framing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import sys
from typing import Any

from aiohttp import web

from providers.config import apply_config
from providers.errors import redact
from providers.registry import Registry

from ..pricing.catalog import Catalog
from ..routing.router import Router
from .app import build_app, error_response
from .config import ConfigError, ProxyConfig, load_config
from .store import PostgresStore, SqliteStore, SqlStore

log = logging.getLogger("polyroute.proxy")


def build_router(config: ProxyConfig) -> Router:
    """The Router a config describes (its providers and pricing sections applied first)."""
    registry = Registry()
    if config.providers:
        apply_config(config.providers, registry, config.source)
    catalog = Catalog(registry=registry)
    if config.pricing:
        catalog.load_overrides(config.pricing, config.source)
    shared = None
    if config.redis_url:
        from ..shared import RedisLink, SharedRouterState

        link = RedisLink(config.redis_url, prefix=config.redis_prefix)
        shared = SharedRouterState(link, interval=config.redis_sync_interval)
    try:
        return Router(
            config.model_list, registry=registry, catalog=catalog, shared_state=shared, **config.router_kwargs
        )
    except TypeError as e:
        raise ConfigError(f"{config.source}: router_settings: {e}") from None
    except ConfigError:
        raise
    except Exception as e:
        message = getattr(e, "message", str(e))
        # Name the router_settings key the message is about, when it is one of them.
        key = next((k for k in config.router_kwargs if k in message), None)
        where = f"router_settings.{key}: " if key else ""
        raise ConfigError(f"{config.source}: {where}{message}") from None


def open_store(config: ProxyConfig) -> SqlStore:
    """The store ``database_url`` names: a SQLite file (default ``polyroute.db``) or PostgreSQL."""
    url = config.database_url or "sqlite:///polyroute.db"
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///") :] or "polyroute.db")
    if url.startswith(("postgresql://", "postgres://")):
        try:
            return PostgresStore(url)
        except ImportError:
            raise ConfigError(
                f"{config.source}: general_settings.database_url: PostgreSQL needs psycopg: "
                "pip install 'polyroute[postgres]'"
            ) from None
        except Exception as e:
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(
                f"{config.source}: general_settings.database_url: cannot use the database: "
                f"{type(e).__name__}: {redact(detail)}"
            ) from None
    raise ConfigError(
        f"{config.source}: general_settings.database_url: expected sqlite:///path.db or postgresql://..., "
        f"got a {url.split(':', 1)[0]!r} URL"
    )


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering the requests it refuses itself with OpenAI's error JSON."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("error handling a request from %s", request.remote, exc_info=exc)
            text, code = "internal error in the proxy (logged)", "internal_error"
        else:  # the client's bytes are not HTTP we accept: its problem, not a proxy error worth a traceback
            log.debug("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
            text = "the request is not valid HTTP (request line, headers or body framing); check the client"
            code = "bad_http"
        if request.writer.output_size > 0:  # some of a response went out already: the connection is broken
            raise ConnectionError("a response was already started; cannot send the error")
        response = error_response(status, text, code=code)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """The app's request handler and factory, on connections handled by :class:`_JsonErrorHandler`
    (a ``web.Server`` makes plain ``RequestHandler`` connections, and takes no class to use instead)."""

    def __init__(self, app_server: web.Server, **handler_options: Any) -> None:
        super().__init__(
            app_server.request_handler,
            request_factory=app_server.request_factory,
            handler_cancellation=app_server.handler_cancellation,
            **handler_options,
        )
        self.handler_options = handler_options

    def __call__(self) -> web.RequestHandler:
        return _JsonErrorHandler(self, loop=asyncio.get_running_loop(), **self.handler_options)


class ProxyRunner:
    """Serves an app as :class:`aiohttp.web.AppRunner` does, but its connections answer malformed requests
    with OpenAI's error JSON: the app's runner starts and cleans up the app; a ``ServerRunner`` of
    :class:`_JsonErrorServer` (built from the app runner's server) holds the sites and connections."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float, **handler_options: Any) -> None:
        self.app_runner = web.AppRunner(app, handle_signals=True, shutdown_timeout=shutdown_timeout)
        self.handler_options = handler_options
        self.shutdown_timeout = shutdown_timeout
        self.server_runner: web.ServerRunner | None = None

    async def setup(self) -> web.ServerRunner:
        """Start the app (its on_startup); the runner to give sites."""
        await self.app_runner.setup()
        app_server = self.app_runner.server
        assert app_server is not None  # set by setup()
        server = _JsonErrorServer(app_server, **self.handler_options)
        self.server_runner = web.ServerRunner(server, shutdown_timeout=self.shutdown_timeout)
        await self.server_runner.setup()
        return self.server_runner

    async def cleanup(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``shutdown_timeout``), then clean the app up."""
        if self.server_runner is not None:
            await self.server_runner.cleanup()
        await self.app_runner.cleanup()


class ListenError(Exception):
    """The proxy could not listen on its address (in use, not allowed, not this machine's)."""


def listen_error(host: str, port: int, error: OSError) -> ListenError:
    """One line saying why ``host:port`` cannot be listened on and what to do about it."""
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        hint = f"another process is listening there: pass another --port, or stop the server using port {port}"
    elif error.errno == errno.EACCES:
        hint = "ports below 1024 need privileges: pass a --port of 1024 or more"
    elif error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        hint = "--host must be an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)"
    else:
        hint = "check --host and --port"
    return ListenError(f"cannot listen on {host}:{port}: {reason.lower()}; {hint}")


def run(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float,
    loop: asyncio.AbstractEventLoop,
    banner: str = "serving",
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (as :func:`aiohttp.web.run_app`, with :class:`ProxyRunner`).

    ``banner`` is logged with the address once the socket listens; :class:`ListenError` if it cannot."""

    async def main() -> None:
        runner = ProxyRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        sites = await runner.setup()
        try:
            try:
                await web.TCPSite(sites, host, port).start()
            except OSError as e:
                raise listen_error(host, port, e) from None
            log.info("%s on http://%s:%d", banner, host, port)
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()  # requests in flight finish (up to shutdown_timeout), on_cleanup runs

    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str) -> None:
    """The proxy's log on stderr at ``level``; the HTTP clients' own INFO lines (one per upstream request)
    only at ``debug``."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(quiet, logging.getLogger().level))


def check(args: argparse.Namespace) -> int:
    """``polyroute serve --check`` / ``polyroute config check``: the startup report, without serving.
    Exit 0 when everything in the file is honoured, 2 when something is not (or the file is wrong)."""
    try:
        config = load_config(args.config)
        build_router(config)
    except ConfigError as e:
        print(f"polyroute: {e.message}", file=sys.stderr)
        return 2
    print(config.report())
    for status, why in config.unserved.values():
        print(f"{config.source}: {why} (requests for it are answered {status})")
    if config.master_key is None:
        print(f"{config.source}: {NO_MASTER_KEY}")
    return 2 if config.problems else 0


NO_MASTER_KEY = (
    "sets no general_settings.master_key, so polyroute serve refuses to start (LiteLLM would serve without "
    "authentication: polyroute deliberately does not). Set one (e.g. master_key: os.environ/POLYROUTE_MASTER_KEY), "
    "or pass --dev to run without auth"
)


def serve(args: argparse.Namespace) -> int:
    if args.check:
        return check(args)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config, strict=args.strict)
        router = build_router(config)
    except ConfigError as e:
        print(f"polyroute serve: {e.message}", file=sys.stderr)
        return 2
    if config.problems:
        log.warning("%s\n(--strict makes this an error; polyroute serve --check lists it)", config.report())
    if config.master_key is None:
        if not args.dev:
            print(f"polyroute serve: {config.source} {NO_MASTER_KEY}", file=sys.stderr)
            return 2
        log.warning("--dev: serving WITHOUT authentication")
    try:
        store = open_store(config)
    except ConfigError as e:
        print(f"polyroute serve: {e.message}", file=sys.stderr)
        return 2
    try:
        app = build_app(config, router, store)  # opens this process's flight journal (crash recovery)
    except ConfigError as e:
        store.close()
        print(f"polyroute serve: {e.message}", file=sys.stderr)
        return 2
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    banner = f"serving {len(router.groups)} model group(s) from {config.source}"
    try:
        run(app, args.host, args.port, args.shutdown_timeout, loop, banner)
    except ListenError as e:
        print(f"polyroute serve: {e}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the OpenAI-compatible proxy from a YAML config")
    parser.add_argument("--config", "-c", required=True, help="e.g. configs/proxy.yaml")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)"
    )
    parser.add_argument("--port", type=int, default=4000, help="TCP port to listen on (default 4000)")
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="what the proxy logs on stderr (default info; debug also logs every upstream HTTP request)",
    )
    parser.add_argument("--dev", action="store_true", help="allow running without a master key (no auth!)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="what is otherwise a startup warning is an error: unsupported config keys, an unset os.environ/VAR",
    )
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print what the config sets that is not honoured, then exit (0: nothing, 2: something) without serving",
    )
    parser.set_defaults(func=serve)
    config = sub.add_parser("config", help="check a proxy config file (polyroute config check --config FILE)")
    actions = config.add_subparsers(dest="action", required=True)
    checker = actions.add_parser("check", help="the startup report of a proxy config, without serving (exit 0/2)")
    checker.add_argument("--config", "-c", required=True, help="e.g. configs/proxy.yaml")
    checker.set_defaults(func=check)
