"""Typed errors: the upstream and request errors of :mod:`providers.errors`, and the budget errors,
which are the router's own (a budget refuses a call before any upstream sees it).

Every error carries ``attempts`` (each upstream try behind it) and states, per class, ``is_retryable``,
``counts_toward_cooldown`` and ``is_deployment_specific``: the facts the Router decides from.

Example::

    from router.errors import RateLimitError, ContextWindowExceededError
"""

from typing import Any

from providers.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    InternalServerError,
    InvalidRequestArgumentError,
    MissingCredentialsError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    PolyrouteError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableResponseError,
)


class BudgetExceededError(PolyrouteError):
    """Refused before any request: the call's worst-case cost does not fit the budget's remainder."""

    status_code = 429
    is_retryable = False  # 429 for HTTP clients, but no deployment can take it before the budget changes

    def __init__(
        self,
        message: str,
        *,
        limit_usd: float = 0.0,
        spent_usd: float = 0.0,
        reserved_usd: float = 0.0,
        needed_usd: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.needed_usd = needed_usd


class BudgetUnavailableError(BudgetExceededError):
    """Refused before any request: the shared budget ledger (Redis) cannot be reached, and budgets fail safe
    (``on_redis_unavailable: refuse``) rather than risk spending past the limit."""

    status_code = 503


class UnpricedCallError(InvalidRequestArgumentError):
    """Refused under a budget: no price is known for the call (and the budget does not allow that)."""

    is_deployment_specific = True


__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "BudgetUnavailableError",
    "ConflictError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "InternalServerError",
    "InvalidRequestArgumentError",
    "MissingCredentialsError",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "PolyrouteError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnpricedCallError",
    "UnprocessableResponseError",
]
