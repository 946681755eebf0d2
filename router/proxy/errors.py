"""Errors as OpenAI's error JSON: the right status for each router error (so the OpenAI SDK raises its
matching exception), and messages for virtual keys that never name the proxy's deployments, upstream
hosts or URLs (:class:`Shown`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from providers.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InvalidRequestArgumentError,
    MissingCredentialsError,
    PaymentRequiredError,
    PermissionDeniedError,
    PolyrouteError,
)

from ..errors import BudgetExceededError, BudgetUnavailableError, UnpricedCallError
from ..routing.deployment import Deployment
from ..routing.router import Router

log = logging.getLogger("polyroute.proxy")
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_body(status: int, message: str, *, type_: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object (``param`` left out: in a stream it has none)."""
    return {"error": {"message": message, "type": type_ or error_type(status), "code": code}}


def error_response(
    status: int, message: str, *, type_: str | None = None, code: str | None = None, param: str | None = None
) -> web.Response:
    """OpenAI's error JSON."""
    body = {"error": {"message": message, "type": type_ or error_type(status), "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class Shown:
    """What a virtual key may read of an error: the deployments' model strings, upstream model ids,
    base URLs and hosts become the model alias or ``[upstream]``. (The master key reads errors whole.)"""

    _URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)]+")
    _IP = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")

    def __init__(self, router: Router) -> None:
        names: dict[str, str] = {}
        for group, deployments in router.groups.items():
            for d in deployments:
                names[d.name] = group
                for text in (d.model, d.target.model_string, d.target.model):
                    if text and len(text) >= 4:  # a 1-3 letter model id would mangle ordinary words
                        names.setdefault(text, group)
                _hide_base(d, names)
        for d in router.pattern_deployments:  # the wildcard groups' upstreams
            _hide_base(d, names)
        self.names = names
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![\w/-])(?:{alternatives})(?![\w/-])") if names else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self.names[m.group(0)], text)
        return self._IP.sub("[upstream]", self._URL.sub("[upstream]", text))


def _hide_base(d: Deployment, names: dict[str, str]) -> None:
    """Show a deployment's base URL and host as ``[upstream]``."""
    for base in (d.target.api_base, d.params.get("api_base"), d.params.get("base_url")):
        if isinstance(base, str) and base:
            parts = urlsplit(base)
            for where in (base, parts.netloc, parts.hostname):
                if where and len(where) >= 4:
                    names.setdefault(where, "[upstream]")


def public_message(err: PolyrouteError, shown: Callable[[str], str] | None = None) -> str:
    """What a client may see: never an upstream URL or connection detail (those go to the log);
    ``shown`` renders it for a virtual key."""
    if isinstance(err, APIConnectionError):
        log.warning("upstream failure: %s", err)
        kind = "timed out" if isinstance(err, APITimeoutError) else "failed"
        return f"the upstream connection {kind}; try again"
    return err.message if shown is None else shown(err.message)


def from_error(err: PolyrouteError, shown: Callable[[str], str] | None = None, alias: str = "") -> web.Response:
    """The OpenAI error response for a router error; ``shown`` renders messages for a virtual key."""
    message = public_message(err, shown)
    if isinstance(err, BudgetUnavailableError):  # the shared ledger is away: try again, not "out of money"
        return error_response(503, message, type_="service_unavailable", code="budget_unavailable")
    if isinstance(err, BudgetExceededError):
        return error_response(429, message, type_="insufficient_quota", code="budget_exceeded")
    if isinstance(err, MissingCredentialsError):  # the proxy's config lacks a key: not the client's mistake
        log.error("no upstream credentials for model %r (set them and restart): %s", alias, err.message)
        return error_response(
            503,
            f"the server is misconfigured: model {alias!r} has no upstream credentials set on this proxy; "
            "its operator's log says what to set",
            code="server_misconfigured",
        )
    if isinstance(err, UnpricedCallError) and shown is not None:
        return error_response(
            400,
            f"model {alias!r} has no price, so it cannot be used under this key's budget; "
            "ask the proxy's operator to set one",
            code="unpriced",
        )
    if isinstance(err, InvalidRequestArgumentError):
        return error_response(400, message, code="invalid_request")
    if isinstance(err, AuthenticationError | PermissionDeniedError | PaymentRequiredError):
        # The upstream refused the proxy's own credentials: the client's key is fine, the proxy is not.
        if shown is not None:
            log.error("the upstream refused this proxy's credentials for model %r: %s", alias, err.message)
            message = "the upstream refused this proxy's credentials (logged)"
        else:
            message = f"the upstream refused this proxy's credentials: {message}"
        return error_response(502, message, code="upstream_auth")
    if isinstance(err, APIConnectionError):
        status = 504 if isinstance(err, APITimeoutError) else 502
        return error_response(status, message, code=type(err).__name__)
    # An upstream's own failure (or an unreadable answer) is a bad gateway: 500 means this proxy failed.
    status = err.status_code or 502
    if status < 400 or status == 500:
        status = 502
    return error_response(status, message, code=type(err).__name__)
