"""Hugging Face router helpers.

Chat goes to the router's own ``/v1/chat/completions`` for every provider: ``org/model[:suffix]``
and the router maps it. Other tasks go to a provider's native route under the router,
``{router}/{provider}{route}``, with the provider's own model id from the Hub mapping (looked up by
the pipeline, see :mod:`providers.hub_mapping`) — or to hf-inference's pipelines with the HF id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import InvalidRequestArgumentError
from ..spec import Target
from ..transport import HttpResponse
from .base import ChatHelper, EmbeddingsHelper, load_json_object, not_shaped


class RouterChat(ChatHelper):
    """Chat through the HF router: the pinned provider or policy travels as the model's suffix."""

    def url(self, target: Target, upstream_model: str | None) -> str:
        return target.api_base + "/v1/chat/completions"

    def model(self, target: Target, upstream_model: str | None) -> str:
        suffix = target.subprovider or target.policy
        return f"{target.model}:{suffix}" if suffix else target.model

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        # The router says which provider answered; a pinned call is served by the pinned one.
        return headers.get("x-inference-provider") or target.subprovider or target.provider


class RoutedEmbeddings(EmbeddingsHelper):
    """An OpenAI-shaped embeddings route of one provider behind the router, with its own model id.

    Token-id inputs reach it as text (decoded by the router): its models tokenize with their own vocabulary.
    """

    token_id_hosts: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, route: str) -> None:
        self.route = route

    def url(self, target: Target, upstream_model: str | None) -> str:
        return f"{target.api_base}/{target.subprovider}{self.route}"

    def needs_model_mapping(self, target: Target) -> bool:
        return True

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        return target.subprovider or target.provider


class FeatureExtraction(EmbeddingsHelper):
    """hf-inference's feature-extraction pipeline: HF model ids, options next to ``inputs``.

    Its documented parameters are ``normalize``, ``prompt_name``, ``truncate`` and ``truncation_direction``
    (pass them in ``extra_body``); ``inputs`` is text only, so token-id inputs reach it decoded by the
    router, and ``dimensions`` is refused rather than sent to a pipeline that has no such parameter.
    """

    subprovider = "hf-inference"
    token_id_hosts: ClassVar[frozenset[str]] = frozenset()
    refused_params: ClassVar[Mapping[str, str]] = {
        "dimensions": "hf-inference's feature-extraction pipeline has no 'dimensions' parameter (it takes "
        "normalize, prompt_name, truncate and truncation_direction); omit dimensions and shorten the vectors "
        "yourself (Matryoshka models), or pin a provider whose embeddings route takes it, "
        "e.g. 'huggingface/nebius/<org>/<model>'",
    }

    def url(self, target: Target, upstream_model: str | None) -> str:
        return f"{target.api_base}/{self.subprovider}/models/{target.model}/pipeline/feature-extraction"

    def payload(self, target: Target, inputs: Any, params: Mapping[str, Any], upstream_model: str | None) -> Any:
        # One text goes as a string (the pipeline answers with a flat vector), several as a list.
        return {"inputs": inputs[0] if len(inputs) == 1 else inputs, **params}

    def parse(self, target: Target, inputs: Any, response: HttpResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
        raw = load_json_object(target, response, "feature-extraction response", secrets)
        vectors = feature_extraction_vectors(raw, len(inputs))
        if vectors is None:
            raise not_shaped(
                target,
                response,
                f"could not read {len(inputs)} sentence embedding(s) from the feature-extraction response "
                "(token-level embeddings or an unknown shape); use a sentence-embedding model",
            )
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": target.model,
            "usage": None,
        }

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        return self.subprovider


def no_policy(target: Target, task: str) -> None:
    """Tasks on native provider routes need one provider: a routing policy cannot pick it."""
    if target.policy:
        raise InvalidRequestArgumentError(
            f"{task} cannot use the HF routing policy ':{target.policy}' in {target.model_string!r}; "
            "pin a provider instead, e.g. 'huggingface/nebius/<org>/<model>', or omit it for hf-inference"
        )


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
