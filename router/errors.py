"""Typed errors (re-exported from :mod:`providers.errors`).

Every error carries ``attempts`` (each upstream try behind it) and states, per class, ``is_retryable``,
``counts_toward_cooldown`` and ``is_deployment_specific``: the facts the Router decides from.

Example::

    from router.errors import RateLimitError, ContextWindowExceededError
"""

from providers.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    BudgetUnavailableError,
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
    UnpricedCallError,
    UnprocessableResponseError,
)

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
