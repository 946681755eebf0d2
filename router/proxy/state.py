"""The keys under which one proxy app keeps its shared objects (``app[ROUTER]``, ``request[FLIGHT]``...).

They live in their own module so the app builder, the endpoint table and the admin routes read the same
objects without importing each other.
"""

from __future__ import annotations

from aiohttp import web

from ..routing.router import Router
from .config import ProxyConfig
from .errors import Shown
from .flight import Flight, FlightJournal, Recovery
from .keys import Access
from .metrics import Metrics
from .spend import SpendWriter
from .store import SqlStore

ROUTER = web.AppKey("router", Router)
CONFIG = web.AppKey("config", ProxyConfig)
STARTED = web.AppKey("started", float)  # the app's start time (unix seconds): GET /models's "created"
ACCESS = web.AppKey("access", Access)
STORE = web.AppKey("store", SqlStore)
SPEND = web.AppKey("spend", SpendWriter)
METRICS = web.AppKey("metrics", Metrics)
JOURNAL = web.AppKey("journal", FlightJournal)
RECOVERY = web.AppKey("recovery", Recovery)
SHOWN = web.AppKey("shown", Shown)
FLIGHT = web.RequestKey("flight", Flight)  # the request's flight-journal entry, once it is begun


def key_of(request: web.Request) -> str | None:
    """The key a client sent: ``Authorization: Bearer ...`` or Azure's ``api-key`` header."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None
