"""``embedding()`` / ``aembedding()``: OpenAI-shaped embeddings from HF, DeepInfra, TEI and more.

Flat, nested and batched upstream shapes all come back as ``data[i].embedding`` in input order.
HF providers other than hf-inference need the provider's own model id, looked up once from the
Hub and cached.

Example::

    from router import embedding
    r = embedding(model="huggingface/intfloat/multilingual-e5-large", input=["a", "b"])
    [d.embedding for d in r.data]
"""

from __future__ import annotations

import time
from typing import Any

from providers.clients import async_transport_for, sync_transport_for
from providers.errors import InvalidRequestArgumentError, PolyrouteError, UnpricedCallError
from providers.hub_mapping import HubMappingCache, default_hub_cache
from providers.registry import Registry, default_registry
from providers.spec import Target
from providers.transport import HttpResponse, Timeouts

from .budget import Budget
from .call import (
    Call,
    api_key_for,
    check_unknown,
    connection_failed,
    raise_for_status,
    request_headers,
    success_meta,
)
from .params import check_extra_body
from .pricing.catalog import Catalog, PriceLookup, default_catalog
from .tokens import aload_encoding
from .types import EmbeddingResponse


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        values = list(value)
    else:
        raise InvalidRequestArgumentError(
            "input must be a non-empty string or a non-empty list of strings, "
            f"got {type(value).__name__}{'' if value else ' (empty)'}"
        )
    for i, text in enumerate(values):
        if not text:
            raise InvalidRequestArgumentError(f"input[{i}] is an empty string; embeddings need text")
    return values


def _params(dimensions: Any, encoding_format: Any, user: Any, extra_body: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidRequestArgumentError(f"dimensions must be a positive integer, got {dimensions!r}")
        params["dimensions"] = dimensions
    if encoding_format not in (None, "float"):
        raise InvalidRequestArgumentError(
            f"encoding_format={encoding_format!r} is not supported; results are always lists of floats "
            "(omit it or pass 'float')"
        )
    if user is not None:
        if not isinstance(user, str):
            raise InvalidRequestArgumentError(
                f"user must be a string (an id for your end user), got {type(user).__name__}"
            )
        params["user"] = user
    if extra_body:
        if not isinstance(extra_body, dict):
            raise InvalidRequestArgumentError(f"extra_body must be a dict, got {type(extra_body).__name__}")
        check_extra_body(extra_body, params, EXTRA_BODY_OWNED)
        params.update(extra_body)
    return params


# Fields extra_body may never set in an embedding body: they come from the call's own arguments.
EXTRA_BODY_OWNED = frozenset({"model", "input", "encoding_format"})


def check_request(
    input: Any, dimensions: Any = None, encoding_format: Any = None, user: Any = None, extra_body: Any = None
) -> dict[str, Any]:
    """Check an embedding request's input and parameters as a call would (the proxy, before routing);
    returns the body parameters."""
    _inputs(input)
    return _params(dimensions, encoding_format, user, extra_body)


class EmbeddingCall:
    """Everything about one embedding call except the I/O."""

    def __init__(
        self,
        model: str,
        input: Any,
        params: dict[str, Any],
        api_key: str | None,
        api_base: str | None,
        timeout: Any,
        extra_headers: Any,
        bill_to: Any,
        registry: Registry | None,
        catalog: Catalog | None,
        target: Target | None = None,
    ) -> None:
        self.inputs = _inputs(input)
        self.target = target or (registry or default_registry()).resolve(model, api_base)
        self.key = api_key_for(self.target, api_key, api_base)
        self.headers = request_headers(self.target, extra_headers, bill_to)
        self.params = params
        self.timeouts = Timeouts.from_user(timeout)
        self.started = time.perf_counter()
        self.needs_mapping = self.target.adapter.embedding_needs_mapping(self.target)
        self.catalog = catalog or default_catalog()

    def call(self, provider_model_id: str | None) -> Call:
        request = self.target.adapter.embedding_request(
            self.target, self.inputs, self.params, self.key, self.headers, provider_model_id
        )
        secrets = (self.key,) if self.key else ()
        return Call(self.target, request, self.timeouts, secrets, self.started, [], False, False, self.catalog)

    def provider_model_id(self, mapping: dict[str, Any]) -> str:
        return HubMappingCache.pick(mapping, self.target.model, self.target.subprovider or "")

    def parse(self, call: Call, response: HttpResponse) -> dict[str, Any]:
        raise_for_status(call, response)
        return self.target.adapter.parse_embedding(self.target, self.inputs, response, call.secrets)

    def served(self, response: HttpResponse) -> str:
        target = self.target
        if target.provider == "huggingface" and target.subprovider is None:
            return "hf-inference"  # unpinned HF embeddings go to hf-inference's pipeline
        return target.adapter.served_by(target, response.headers)

    def finish(
        self,
        call: Call,
        response: HttpResponse,
        data: dict[str, Any] | None = None,
        lookup: PriceLookup | None = None,
    ) -> EmbeddingResponse:
        target = self.target
        if data is None:
            data = self.parse(call, response)
        estimated = False
        if not data.get("usage"):
            from .tokens import count_text

            tokens = sum(count_text(t) for t in self.inputs)
            data["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
            estimated = True
        result = EmbeddingResponse.model_validate(data)
        provider = self.served(response)
        if lookup is None:
            lookup = self.catalog.lookup(target, provider)
        result._meta = success_meta(
            call,
            response,
            provider=provider,
            model=result.model,
            usage=data["usage"],
            usage_estimated=estimated,
            lookup=lookup,
        )
        return result


def embedding(
    model: str,
    input: Any = None,
    *,
    api_key: str | None = None,
    api_base: str | None = None,
    base_url: str | None = None,
    timeout: Any = None,
    dimensions: int | None = None,
    encoding_format: str | None = None,
    user: str | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    client: Any = None,
    bill_to: str | None = None,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    budget: Budget | None = None,
    **kwargs: Any,
) -> EmbeddingResponse:
    """Embed a string or a list of strings; OpenAI-shaped ``EmbeddingResponse``.

    Example::

        r = embedding(model="deepinfra/BAAI/bge-m3", input=["hello", "world"])
        len(r.data), r.usage.prompt_tokens
    """
    check_unknown(kwargs, "embedding")
    emb = EmbeddingCall(
        model,
        input,
        _params(dimensions, encoding_format, user, extra_body),
        api_key,
        api_base or base_url,
        timeout,
        extra_headers,
        bill_to,
        registry,
        catalog,
    )
    return run_embedding(emb, client, budget)


async def aembedding(
    model: str,
    input: Any = None,
    *,
    api_key: str | None = None,
    api_base: str | None = None,
    base_url: str | None = None,
    timeout: Any = None,
    dimensions: int | None = None,
    encoding_format: str | None = None,
    user: str | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    client: Any = None,
    bill_to: str | None = None,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    budget: Budget | None = None,
    **kwargs: Any,
) -> EmbeddingResponse:
    """Async :func:`embedding`.

    Example::

        r = await aembedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="hello")
    """
    check_unknown(kwargs, "aembedding")
    emb = EmbeddingCall(
        model,
        input,
        _params(dimensions, encoding_format, user, extra_body),
        api_key,
        api_base or base_url,
        timeout,
        extra_headers,
        bill_to,
        registry,
        catalog,
    )
    return await arun_embedding(emb, client, budget)


def _embedding_worst_case(emb: EmbeddingCall, budget: Budget, candidates: list[Any]) -> int:
    """Embeddings cost input tokens only: counted (with the budget's margin) at the highest price."""
    from .tokens import count_text

    priced = [c for c in candidates if c.price is not None]
    if len(priced) < len(candidates) and not budget.allow_unpriced:
        reason = next((c.reason for c in candidates if c.price is None), None) or "no price"
        raise UnpricedCallError(
            f"embedding call to {emb.target.model_string!r} refused under budget {budget.name!r}: {reason}. Set a "
            "price (Catalog.set_price) or use Budget(..., allow_unpriced=True)"
        )
    tokens = int(sum(count_text(t) for t in emb.inputs) * (1 + budget.prompt_margin)) + len(emb.inputs)
    return max((c.price.cost_pico(tokens, 0) for c in priced), default=0)


def run_embedding(emb: EmbeddingCall, client: Any = None, budget: Budget | None = None) -> EmbeddingResponse:
    """Send a prepared embedding call (sync), under ``budget`` when given."""
    reservation = None
    if budget is not None:
        amount = _embedding_worst_case(emb, budget, emb.catalog.candidates(emb.target))
        reservation = budget.reserve(amount, repr(emb.target.model_string))
    try:
        transport = sync_transport_for(client)
        provider_model_id = None
        if emb.needs_mapping:
            mapping = default_hub_cache().mapping(transport, emb.target.model, emb.key)
            provider_model_id = emb.provider_model_id(mapping)
        call = emb.call(provider_model_id)
        try:
            response = transport.send(call.request, call.timeouts)
        except PolyrouteError as err:
            raise connection_failed(call, err) from None
        result = emb.finish(call, response)
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
    if reservation is not None:
        reservation.settle(result.meta.cost_pico)
    return result


async def arun_embedding(emb: EmbeddingCall, client: Any = None, budget: Budget | None = None) -> EmbeddingResponse:
    """Send a prepared embedding call (async), under ``budget`` when given."""
    reservation = None
    if budget is not None:
        await aload_encoding()
        amount = _embedding_worst_case(emb, budget, await emb.catalog.acandidates(emb.target))
        reservation = await budget.areserve(amount, repr(emb.target.model_string))
    try:
        transport = async_transport_for(client)
        provider_model_id = None
        if emb.needs_mapping:
            mapping = await default_hub_cache().amapping(transport, emb.target.model, emb.key)
            provider_model_id = emb.provider_model_id(mapping)
        call = emb.call(provider_model_id)
        try:
            response = await transport.send(call.request, call.timeouts)
        except PolyrouteError as err:
            raise connection_failed(call, err) from None
        data = emb.parse(call, response)
        if not data.get("usage"):
            await aload_encoding()  # usage will be counted locally
        lookup = await emb.catalog.alookup(emb.target, emb.served(response))
        result = emb.finish(call, response, data, lookup)
    except BaseException:
        if reservation is not None:
            await reservation.arelease()
        raise
    if reservation is not None:
        await reservation.asettle(result.meta.cost_pico)
    return result
