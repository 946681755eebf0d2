"""Typed errors (re-exported from :mod:`providers.errors`).

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
