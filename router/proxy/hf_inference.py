"""Hugging Face's inference API shape on the proxy: ``POST /v1/models/{alias}`` with ``{"inputs": ...}``.

What ``huggingface_hub.InferenceClient(base_url=f"{proxy}/v1/models/{alias}").feature_extraction(text)``
sends (HF Inference Endpoints and TEI take the same body): the model is in the path, the answer is a bare
JSON array of vectors, one per input (``[[...]]`` for one text, as TEI answers). It runs the alias's
embeddings like ``/v1/embeddings`` (budgets, spend, failover); HF's options are honoured or refused:
``normalize: true`` scales each vector to unit length here, ``truncate: true`` and ``prompt_name`` are
refused (they need the model's own tokenizer or prompts, which an OpenAI-shaped upstream does not take).

Example::

    curl -s $PROXY/v1/models/embed -H "authorization: Bearer $KEY" -d '{"inputs": ["a", "b"]}'
    [[0.01, ...], [0.02, ...]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..embeddings import check_request as check_embedding_request
from ..routing.router import Router
from .validate import Checked, ClientError

FEATURE_EXTRACTION_FIELDS = frozenset({"normalize", "truncate", "truncation_direction", "prompt_name"})


@dataclass(slots=True)
class FeatureVectors:
    """The vectors of one request, with the meta and usage of the embeddings call behind them."""

    vectors: list[list[float]]
    meta: Any
    usage: Any


def check_feature_extraction(checked: Checked) -> None:
    """The library's checks of the inputs, and HF's options: honoured, or refused with the reason."""
    named = checked.named
    for name in ("normalize", "truncate"):
        if named.get(name) is not None and not isinstance(named[name], bool):
            raise ClientError(f"{name} must be true or false, got {type(named[name]).__name__}", param=name)
    if named.get("truncate"):
        raise ClientError(
            "truncate: true is not supported here: the upstream counts tokens with its own tokenizer; "
            "send shorter text (or omit truncate)",
            param="truncate",
        )
    for name in ("prompt_name", "truncation_direction"):
        if named.get(name) is not None:
            raise ClientError(
                f"{name} is not supported here (the upstream takes OpenAI's embeddings); omit it", param=name
            )
    (inputs,) = checked.inputs
    if not isinstance(inputs, (str, list)):
        raise ClientError(f"inputs must be a string or a list of strings, got {type(inputs).__name__}", param="inputs")
    check_embedding_request(inputs, None, None, None, checked.extra)


def _floats(embedding: list[float] | str) -> list[float]:
    if isinstance(embedding, str):  # never: the call asks for floats; a base64 string here is a bug
        raise TypeError("feature extraction got a base64 embedding")
    return embedding


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return vector if norm == 0 else [x / norm for x in vector]


async def feature_extraction(
    router: Router,
    model: str,
    inputs: Any,
    *,
    normalize: bool | None = None,
    truncate: bool | None = None,
    truncation_direction: Any = None,
    prompt_name: Any = None,
    **options: Any,
) -> FeatureVectors:
    """The alias's embeddings of ``inputs`` (a text or a list of texts) as plain vectors."""
    result = await router.aembedding(model, inputs, **options)
    vectors = [_floats(item.embedding) for item in sorted(result.data, key=lambda item: item.index)]
    if normalize:
        vectors = [_unit(v) for v in vectors]
    return FeatureVectors(vectors, result.meta, result.usage)
