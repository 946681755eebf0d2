"""One upstream call's plumbing shared by chat and embeddings: credentials, headers, attempts, errors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from providers.errors import InvalidRequestArgumentError, MissingCredentialsError, PolyrouteError, error_from_response
from providers.spec import Target
from providers.transport import HttpRequest, HttpResponse, Timeouts

from .params import check_headers
from .pricing.catalog import Catalog, PriceLookup
from .pricing.cost import cost_of
from .types import Attempt, ResponseMeta

_IGNORED_LITELLM_ARGS = frozenset({"drop_params", "metadata", "custom_llm_provider_name", "litellm_logging_obj"})


@dataclass(slots=True)
class Call:
    """Everything about one prepared upstream call except the I/O."""

    target: Target
    request: HttpRequest
    timeouts: Timeouts
    secrets: tuple[str, ...] = field(repr=False)
    started: float
    messages: list[dict[str, Any]]
    include_usage: bool
    legacy_functions: bool
    catalog: Catalog
    body: dict[str, Any] = field(default_factory=dict)  # the OpenAI body (without model), for budgets


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


def api_key_for(target: Target, api_key: str | None, api_base: str | None) -> str | None:
    """``api_key=``, else the provider's env key; env keys are only sent to their provider's host."""
    if api_key:
        return api_key
    spec = target.spec
    if api_base and spec.adapter == "openai" and _host(api_base) != _host(spec.resolved_base_url()):
        # A per-call api_base on another host (a local vLLM, a proxy): do not hand it OPENAI_API_KEY
        # & co. from the environment; pass api_key= to authenticate there.
        return None
    key = spec.find_api_key(None)
    if key is None and spec.key_required:
        env = " or ".join(spec.key_env) or "an api_key"
        raise MissingCredentialsError(
            f"no API key for {target.provider!r} (model {target.model_string!r}): pass api_key=... or set {env}"
        )
    return key


def check_unknown(kwargs: dict[str, Any], fn: str) -> None:
    if not kwargs:
        return
    unknown = sorted(k for k in kwargs if k not in _IGNORED_LITELLM_ARGS)
    if unknown:
        raise InvalidRequestArgumentError(
            f"{fn}() got unexpected argument(s) {', '.join(unknown)}; provider-specific body fields go in "
            f"extra_body={{{unknown[0]!r}: ...}}, headers in extra_headers={{...}}"
        )


def request_headers(target: Target, extra_headers: Any, bill_to: Any) -> dict[str, str]:
    headers = check_headers(extra_headers)
    if bill_to is not None:
        if not isinstance(bill_to, str) or not bill_to:
            raise InvalidRequestArgumentError("bill_to must be the name of an HF organization, e.g. bill_to='my-org'")
        if not target.spec.bills_to_org:
            raise InvalidRequestArgumentError(
                f"bill_to applies to Hugging Face calls only, not {target.provider!r} ({target.model_string!r})"
            )
        headers["x-hf-bill-to"] = bill_to
    return headers


def attempt(call: Call, status: int | None, error: str | None) -> Attempt:
    return Attempt(
        model=call.target.model_string,
        provider=call.target.label,
        api_base=call.target.api_base,
        status_code=status,
        error=error,
        latency_ms=(time.perf_counter() - call.started) * 1000,
    )


def raise_for_status(call: Call, response: HttpResponse) -> None:
    if response.status < 400:
        return
    err = error_from_response(
        response.status,
        response.headers,
        response.content,
        provider=call.target.label,
        model=call.target.model,
        secrets=call.secrets,
    )
    if response.status == 401 and not call.secrets:
        err.message += " (no API key was sent: environment keys only go to their provider's own host; pass api_key=)"
    err.attempts = [attempt(call, response.status, type(err).__name__)]
    raise err


def connection_failed(call: Call, err: PolyrouteError) -> PolyrouteError:
    err.provider = err.provider or call.target.label
    err.model = err.model or call.target.model
    err.attempts = [attempt(call, None, type(err).__name__)]
    return err


def success_meta(
    call: Call,
    response: HttpResponse,
    *,
    provider: str,
    model: str,
    usage: Any,
    usage_estimated: bool,
    lookup: PriceLookup,
) -> ResponseMeta:
    """The ``.meta`` of a successful call: who served, latency, the attempt, and the cost."""
    target = call.target
    latency = (time.perf_counter() - call.started) * 1000
    cost = cost_of(lookup, usage, estimated=usage_estimated)
    # One positional constructor call per record (the hot path of every call): the field order of
    # Attempt and ResponseMeta in router.types.
    return ResponseMeta(
        provider,
        model,
        target.api_base,
        latency,
        target.model_string,
        [Attempt(target.model_string, target.label, target.api_base, response.status, None, latency)],
        None,
        usage_estimated,
        response.headers.get("x-request-id"),
        cost.cost_usd,
        cost.cost_pico,
        cost.cost_estimated,
        cost.price_source,
        cost.price_fetched_at,
        cost.unpriced_reason,
        cost.upstream_cost_usd,
    )
