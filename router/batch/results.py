"""Output lines (OpenAI Batch output format, with polyroute's cost fields beside) and journal records.

Success::

    {"id": "batch_req_…", "custom_id": "q-1", "response": {"status_code": 200, "request_id": "…",
     "body": {…chat.completion…}}, "error": null, "cost_usd": 0.000012, "provider": "nscale",
     "model": "Qwen/Qwen3-8B", "price_source": "https://router.huggingface.co/v1/models", "candidate": "qwen"}

Failure: ``response`` holds the upstream's status and error body when there was one (else null) and
``error`` is ``{"code", "message"}``; ``cost_usd`` is null.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import orjson

from providers.errors import PolyrouteError

from ..types import ChatCompletion, EmbeddingResponse, ResponseMeta

# Row ids are random like OpenAI's (96 bits); drawn from a generator seeded from os.urandom, not one
# getrandom() call per row. A forked child reseeds, so two processes never share a sequence.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def _id() -> str:
    return f"batch_req_{_ids.getrandbits(96):024x}"


def success(
    line: int, custom_id: str, candidate: str, result: ChatCompletion | EmbeddingResponse, meta: ResponseMeta
) -> tuple[bytes, dict[str, Any]]:
    """The output line and journal record of a finished row (``meta`` is ``result.meta``, read once)."""
    usage = result.usage
    prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
    completion = getattr(usage, "completion_tokens", None) if usage is not None else None
    # The typed result as pydantic serializes it (the same JSON as orjson of model_dump()), spliced in whole.
    body = orjson.Fragment(result.__pydantic_serializer__.to_json(result))
    out = {
        "id": _id(),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": meta.upstream_request_id, "body": body},
        "error": None,
        "cost_usd": meta.cost_usd,
        "provider": meta.provider,
        "model": meta.model,
        "price_source": meta.price_source,
        "candidate": candidate,
        "line": line,
    }
    if meta.cost_usd is None:
        out["unpriced_reason"] = meta.unpriced_reason
    if meta.cost_estimated:
        out["cost_estimated"] = True
    rec = {
        "ok": True,
        "t": round(time.time(), 3),
        "c": meta.cost_pico,
        "k": candidate,
        "p": meta.provider,
        "m": meta.model,
        "pt": prompt,
        "ct": completion,
        "ms": round(meta.latency_ms, 1),
        "a": len(meta.attempts) or 1,
    }
    return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE), rec


def failure(
    line: int,
    custom_id: str,
    candidate: str | None,
    code: str,
    message: str,
    err: BaseException | None = None,
    latency_ms: float | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The output line and journal record of a row that failed (or could not be sent)."""
    response = None
    status = getattr(err, "status_code", None) if isinstance(err, PolyrouteError) else None
    if status is not None:
        body = {"error": {"message": message, "type": type(err).__name__, "code": code}}
        response = {"status_code": status, "request_id": None, "body": body}
    attempts = getattr(err, "attempts", None) or []
    out = {
        "id": _id(),
        "custom_id": custom_id,
        "response": response,
        "error": {"code": code, "message": message},
        "cost_usd": None,
        "provider": attempts[-1].provider if attempts else None,
        "model": None,
        "price_source": None,
        "candidate": candidate,
        "line": line,
    }
    rec = {
        "ok": False,
        "t": round(time.time(), 3),
        "c": None,
        "k": candidate,
        "p": out["provider"],
        "e": code,
        "ms": None if latency_ms is None else round(latency_ms, 1),
        "a": len(attempts),
    }
    return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE), rec


def error_code(err: BaseException) -> str:
    """A short snake_case code for an error class (``RateLimitError`` -> ``rate_limit_error``)."""
    import re

    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", type(err).__name__).lower()
