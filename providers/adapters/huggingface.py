"""Hugging Face router: chat on ``/v1/chat/completions``, embeddings on provider routes.

Chat sends ``org/model[:suffix]`` and lets the router map it. Embeddings go to hf-inference's
feature-extraction pipeline, or to ``{router}/{provider}{route}`` with the provider's own model id
(looked up from the Hub mapping by the caller, see :mod:`providers.hub_mapping`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import InvalidRequestArgumentError, UnprocessableResponseError
from ..hf_names import HF_PROVIDER_EMBEDDING_ROUTES
from ..spec import Target
from ..transport import HttpRequest, HttpResponse
from .base import JSON_HEADERS, OpenAICompatAdapter, auth_headers, load_json_object


class HFRouterAdapter(OpenAICompatAdapter):
    name = "huggingface"

    def chat_url(self, target: Target) -> str:
        return target.api_base + "/v1/chat/completions"

    def chat_model(self, target: Target) -> str:
        suffix = target.subprovider or target.policy
        return f"{target.model}:{suffix}" if suffix else target.model

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        # The router says which provider answered; a pinned call is served by the pinned one.
        return headers.get("x-inference-provider") or target.subprovider or target.provider

    # --- embeddings
    def _embedding_provider(self, target: Target) -> str:
        if target.policy:
            raise InvalidRequestArgumentError(
                f"embedding() cannot use the HF routing policy ':{target.policy}' in {target.model_string!r}; "
                "pin a provider instead, e.g. 'huggingface/nebius/<org>/<model>', or omit it for hf-inference"
            )
        provider = target.subprovider or "hf-inference"
        if HF_PROVIDER_EMBEDDING_ROUTES.get(provider) is None:
            able = sorted(p for p, route in HF_PROVIDER_EMBEDDING_ROUTES.items() if route)
            raise InvalidRequestArgumentError(
                f"HF provider {provider!r} does not serve embeddings through the router; use one of {', '.join(able)}"
            )
        return provider

    def embedding_needs_mapping(self, target: Target) -> bool:
        return self._embedding_provider(target) != "hf-inference"

    def embedding_url(self, target: Target, provider_model_id: str | None) -> str:
        provider = self._embedding_provider(target)
        route = HF_PROVIDER_EMBEDDING_ROUTES[provider] or ""
        return f"{target.api_base}/{provider}{route.format(model=target.model)}"

    def embedding_request(
        self,
        target: Target,
        inputs: list[str],
        params: dict[str, Any],
        api_key: str | None,
        headers: Mapping[str, str],
        provider_model_id: str | None,
    ) -> HttpRequest:
        if self._embedding_provider(target) != "hf-inference":
            return super().embedding_request(target, inputs, params, api_key, headers, provider_model_id)
        # Feature-extraction options go at the top level, next to "inputs".
        # One text goes as a string (the pipeline answers with a flat vector), several as a list.
        payload: dict[str, Any] = {"inputs": inputs[0] if len(inputs) == 1 else inputs, **params}
        return HttpRequest(
            "POST",
            self.embedding_url(target, None),
            auth_headers(api_key, JSON_HEADERS, headers),
            orjson.dumps(payload),
        )

    def parse_embedding(
        self, target: Target, inputs: list[str], response: HttpResponse, secrets: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if self._embedding_provider(target) != "hf-inference":
            return super().parse_embedding(target, inputs, response, secrets)
        raw = load_json_object(target, response, "feature-extraction response", secrets)
        vectors = feature_extraction_vectors(raw, len(inputs))
        if vectors is None:
            raise UnprocessableResponseError(
                f"could not read {len(inputs)} sentence embedding(s) from the feature-extraction response "
                "(token-level embeddings or an unknown shape); use a sentence-embedding model",
                status_code=response.status,
                provider=target.label,
                model=target.model,
            )
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": target.model,
            "usage": None,
        }


def _is_vector(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and isinstance(x[0], (int, float))


def _squeeze(x: Any) -> list[float] | None:
    # [[[v]]] -> [v]: drop single-element nesting levels; more than one row is token-level output.
    while isinstance(x, list) and len(x) == 1 and isinstance(x[0], list):
        x = x[0]
    return x if _is_vector(x) else None


def feature_extraction_vectors(raw: Any, n: int) -> list[list[float]] | None:
    """Sentence vectors in input order from a flat, batched or one-level-deeper nested response."""
    if _is_vector(raw):
        return [raw] if n == 1 else None
    if not isinstance(raw, list):
        return None
    if len(raw) != n and len(raw) == 1 and isinstance(raw[0], list) and len(raw[0]) == n:
        raw = raw[0]
    if len(raw) != n:
        squeezed = _squeeze(raw) if n == 1 else None
        return [squeezed] if squeezed is not None else None
    out = []
    for item in raw:
        vec = _squeeze(item)
        if vec is None:
            return None
        out.append(vec)
    return out
