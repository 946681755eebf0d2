"""Typed errors for every failure an upstream call can have.

Class names follow OpenAI's and LiteLLM's so that ``except RateLimitError`` reads the same.
Every error carries ``status_code``, ``provider``, ``model``, a readable ``message`` and the
sanitized upstream ``body``; secrets are scrubbed from all of them.

Example::

    from router.errors import RateLimitError
    try:
        completion(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct", messages=msgs)
    except RateLimitError as e:
        time.sleep(e.retry_after or 1)
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

_MAX_BODY = 2000

# Secrets that may be echoed back by an upstream or end up in a URL: HF tokens, OpenAI-style
# keys, bearer headers. Replaced before a body or message is stored on an error.
_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-~+/=]{6,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove known secrets and anything that looks like a token from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


class PolyrouteError(Exception):
    """Base of every error polyroute raises for a failed upstream call or a bad argument.

    The contract every error keeps (the router decides from these facts, never from a list of classes):

    - ``attempts``: every upstream try behind the error (``router.types.Attempt`` records: deployment,
      status, error class, latency), empty when nothing was sent. Kept through pickling (processes, Ray).
    - ``is_retryable``: the same deployment may answer if asked again later (408/409/429/5xx, timeouts,
      connection failures). Other 4xx, budget refusals and bad arguments are not.
    - ``counts_toward_cooldown``: the failure says the deployment itself is unwell (retryable failures, and
      a key or model it cannot use), so enough of them take it out for a while. Budget and request errors
      never do.
    - ``is_deployment_specific``: another deployment (another key, model or price) may not fail this way:
      skip this one for the request and try the others, never the same one again.
    - ``charged_pico``: what a budget was charged for the failed call, when the upstream may bill it anyway
      (it answered 200, then the body was cut or unreadable); None when nothing was charged.
    """

    status_code: int | None = None
    charged_pico: int | None = None
    is_retryable: ClassVar[bool] = False
    counts_toward_cooldown: ClassVar[bool] = False
    is_deployment_specific: ClassVar[bool] = False
    attempts: list[Any]  # router.types.Attempt records (providers/ does not import router/)

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.provider = provider
        self.model = model
        self.body = body
        self.attempts = []

    def __str__(self) -> str:
        where = "/".join(p for p in (self.provider, self.model) if p)
        prefix = f"{type(self).__name__}"
        if self.status_code is not None:
            prefix += f" ({self.status_code})"
        if where:
            prefix += f" from {where}"
        return f"{prefix}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code!r}, "
            f"provider={self.provider!r}, model={self.model!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (multiprocessing, Ray) with their keyword-only fields and attempts.
        return (rebuild_error, (type(self), self.message, self.__dict__))

    def copy(self) -> PolyrouteError:
        """A new instance with the same fields and its own ``attempts`` list, without a traceback (to raise
        a remembered failure again without growing one object's traceback)."""
        return rebuild_error(type(self), self.message, {**self.__dict__, "attempts": list(self.attempts)})


def rebuild_error(cls: type[PolyrouteError], message: str, state: dict[str, Any]) -> PolyrouteError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.attempts = []  # an error pickled before attempts was declared has none
    err.__dict__.update(state)
    return err


APIError = PolyrouteError  # OpenAI / LiteLLM name for the base class


class InvalidRequestArgumentError(PolyrouteError, ValueError):
    """A bad argument found before any request was sent (unknown model string, empty messages...)."""


class MissingCredentialsError(InvalidRequestArgumentError):
    """No API key was given and none of the provider's environment variables is set."""

    is_deployment_specific = True


class BadRequestError(PolyrouteError):
    """400 or 422: the upstream refused the request as malformed."""

    status_code = 400


class ContextWindowExceededError(BadRequestError):
    """The prompt (plus max_tokens) does not fit the model's context window."""


class ContentPolicyViolationError(BadRequestError):
    """The upstream refused the request or the output on content-policy grounds."""


class DeploymentRefusal(PolyrouteError):
    """A 4xx about the deployment itself (its key, credits, permissions or model): another deployment may
    serve the request, this one will not until it is fixed, so it counts toward its cooldown."""

    counts_toward_cooldown = True
    is_deployment_specific = True


class RetryLater(PolyrouteError):
    """The upstream may answer if asked again: ``retry_after`` seconds when it said how long to wait."""

    is_retryable = True
    counts_toward_cooldown = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuthenticationError(DeploymentRefusal):
    """401: the key is missing, wrong or revoked."""

    status_code = 401


class PaymentRequiredError(DeploymentRefusal):
    """402: credits exhausted or billing not set up."""

    status_code = 402


class PermissionDeniedError(DeploymentRefusal):
    """403: the key is valid but may not do this."""

    status_code = 403


class NotFoundError(DeploymentRefusal):
    """404: the model or route does not exist."""

    status_code = 404


class ConflictError(RetryLater):
    """409: the upstream reported a conflicting concurrent request (retryable)."""

    status_code = 409


class RateLimitError(RetryLater):
    """429: too many requests; ``retry_after`` seconds when the upstream said."""

    status_code = 429


class ServiceUnavailableError(RetryLater):
    """503: overloaded or the model is loading; ``retry_after`` is HF's ``estimated_time`` or Retry-After."""

    status_code = 503


class InternalServerError(RetryLater):
    """Any other 5xx from the upstream."""

    status_code = 500


class APIConnectionError(PolyrouteError):
    """The connection failed or dropped (including a stream that ended before completion).

    ``response_started``: the upstream had already answered with a status when it failed (the body was
    cut short), so it may have done, and billed, the work."""

    is_retryable = True
    counts_toward_cooldown = True
    response_started = False


class APITimeoutError(APIConnectionError):
    """The call did not finish within its timeout."""

    status_code = 408


class UnprocessableResponseError(PolyrouteError):
    """The upstream answered 2xx with something that is not the API's shape."""


# Context-window and content-policy errors are recognised from upstream wording; the patterns
# require token/context words so that ordinary parameter errors ("temperature must be <= 2") stay
# BadRequestError (the router picks context-window fallbacks on these).
_CONTEXT_WINDOW = re.compile(
    r"context[_ ](length|window|size)|maximum context|too many tokens|prompt is too long|input is too long"
    r"|tokens? \+ `?max_new_tokens`? must be <=|`?inputs`? must have less than \d+ tokens"
    r"|exceeds? (the )?(model'?s? )?(maximum )?(context|token limit)|reduce the length of the (messages|prompt)"
    r"|max_total_tokens|maximum (input|prompt) length",
    re.IGNORECASE,
)
_CONTENT_POLICY = re.compile(
    r"content[_ ]policy|content management policy|safety system|content_filter|flagged by (our|the) "
    r"(content|safety|moderation)|violates? (our|the) (usage|content) polic",
    re.IGNORECASE,
)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms`` header."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _decode_body(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")


def message_from_body(body: Any) -> str:
    """The human message inside any of the upstream error shapes we know."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err.get("detail")
            if msg:
                return str(msg)
            return orjson.dumps(err).decode()
        if isinstance(err, str) and err:
            return err
        if "error_message" in body:  # DeepInfra in-stream errors: often a JSON document in a string
            inner = body["error_message"]
            if isinstance(inner, str) and inner.lstrip().startswith("{"):
                try:
                    return message_from_body(orjson.loads(inner))
                except orjson.JSONDecodeError:
                    pass
            return str(inner)
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, dict):
            return str(detail.get("error") or detail.get("message") or orjson.dumps(detail).decode())
        if isinstance(detail, list) and detail:  # FastAPI validation errors
            first = detail[0]
            if isinstance(first, dict) and "msg" in first:
                loc = ".".join(str(x) for x in first.get("loc", []))
                return f"{first['msg']} ({loc})" if loc else str(first["msg"])
        if "message" in body:
            return str(body["message"])
        return orjson.dumps(body).decode()[:_MAX_BODY]
    if isinstance(body, str):
        return body.strip()[:_MAX_BODY] or "(empty body)"
    return str(body)[:_MAX_BODY]


def sanitize_body(body: Any, secrets: tuple[str, ...]) -> Any:
    """``body`` with secrets removed and size capped, for storing on an error."""
    if isinstance(body, str):
        return redact(body[:_MAX_BODY], secrets)
    try:
        text = orjson.dumps(body).decode()
    except TypeError:
        return redact(str(body)[:_MAX_BODY], secrets)
    cleaned = redact(text, secrets)
    if cleaned == text and len(text) <= _MAX_BODY:
        return body
    try:
        return orjson.loads(cleaned) if len(cleaned) <= _MAX_BODY else cleaned[:_MAX_BODY]
    except orjson.JSONDecodeError:
        return cleaned[:_MAX_BODY]


def _error_class_for(status: int, message: str, body: Any) -> type[PolyrouteError]:
    code = ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or body["error"].get("type") or "").lower()
    if status in (400, 413, 422):
        if "context_length" in code or _CONTEXT_WINDOW.search(message):
            return ContextWindowExceededError
        if "content_policy" in code or "content_filter" in code or _CONTENT_POLICY.search(message):
            return ContentPolicyViolationError
        return BadRequestError
    return {
        401: AuthenticationError,
        402: PaymentRequiredError,
        403: PermissionDeniedError,
        404: NotFoundError,
        408: APITimeoutError,
        409: ConflictError,
        429: RateLimitError,
        503: ServiceUnavailableError,
    }.get(status, InternalServerError if status >= 500 else BadRequestError)


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    provider: str | None,
    model: str | None,
    secrets: tuple[str, ...] = (),
) -> PolyrouteError:
    """Map an upstream error response (any of the known body shapes) to a typed error.

    ``headers`` must have lower-cased keys.
    """
    body = _decode_body(content)
    message = redact(message_from_body(body), secrets)
    cls = _error_class_for(status, message, body)
    kw: dict[str, Any] = {
        "status_code": status,
        "provider": provider,
        "model": model,
        "body": sanitize_body(body, secrets),
    }
    if cls in (RateLimitError, ServiceUnavailableError, InternalServerError):
        retry_after = parse_retry_after(headers)
        if retry_after is None and isinstance(body, dict):
            estimated = body.get("estimated_time")
            if isinstance(estimated, (int, float)):
                retry_after = float(estimated)
        kw["retry_after"] = retry_after
    return cls(message, **kw)


def error_from_stream_event(
    event: Mapping[str, Any], *, provider: str | None, model: str | None, secrets: tuple[str, ...] = ()
) -> PolyrouteError:
    """Map an error frame found inside an HTTP-200 stream to a typed error."""
    status = 500
    err = event.get("error")
    if isinstance(err, dict):
        raw = err.get("http_status_code") or err.get("status_code") or err.get("code")
        if isinstance(raw, int) and 400 <= raw < 600:
            status = raw
    elif event.get("error_type") in ("validation", "validation_error"):
        status = 422
    message = redact(message_from_body(dict(event)), secrets)
    cls = _error_class_for(status, message, dict(event))
    return cls(
        message,
        status_code=status,
        provider=provider,
        model=model,
        body=sanitize_body(dict(event), secrets),
    )
