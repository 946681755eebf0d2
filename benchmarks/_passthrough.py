"""The floor for an HTTP proxy: a bare aiohttp server that forwards each POST body to the upstream.

``python -m benchmarks._passthrough --upstream http://127.0.0.1:<port> --port <port>``

No parsing, no auth, no routing: it reads the request body, POSTs it to the same path on the
upstream with one pooled ``aiohttp.ClientSession`` (its own API key, like a proxy), and answers
with the upstream's status, content type and bytes. ``GET /health`` answers ``ok``. It runs on
uvloop when installed (as ``polyroute serve`` does) and stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
from aiohttp import web

API_KEY = "sk-bench"
_SESSION = web.AppKey("session", aiohttp.ClientSession)
_UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.Response:
    data = await request.read()
    headers = {"content-type": request.content_type, "authorization": f"Bearer {API_KEY}"}
    url = request.app[_UPSTREAM] + request.path_qs
    async with request.app[_SESSION].post(url, data=data, headers=headers) as resp:
        payload = await resp.read()
        return web.Response(status=resp.status, body=payload, content_type=resp.content_type)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(upstream: str, host: str, port: int) -> None:
    # The same pool shape as polyroute's (providers/clients.py): 256 connections, none per host.
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=60.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        app = web.Application()
        app[_SESSION] = session
        app[_UPSTREAM] = upstream.rstrip("/")
        app.router.add_get("/health", health)
        app.router.add_post("/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            print(f"READY http://{host}:{runner.addresses[0][1]}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._passthrough", description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.upstream, args.host, args.port))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
