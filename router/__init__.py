"""polyroute: one OpenAI-shaped call to many LLM providers.

Importing ``router`` is cheap: the public names load on first use.

Example::

    from router import completion
    r = completion(model="huggingface/Qwen/Qwen3-8B", messages=[{"role": "user", "content": "Hi"}])
    print(r.choices[0].message.content, r.meta.provider)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "completion": "router.api",
    "acompletion": "router.api",
    "embedding": "router.embeddings",
    "aembedding": "router.embeddings",
    "text_completion": "router.completions",
    "atext_completion": "router.completions",
    "TextCompletion": "router.types",
    "stream_chunk_builder": "router.streaming",
    "Stream": "router.streaming",
    "AsyncStream": "router.streaming",
    "ChatCompletion": "router.types",
    "ChatCompletionChunk": "router.types",
    "EmbeddingResponse": "router.types",
    "ResponseMeta": "router.types",
    "token_counter": "router.tokens",
    "completion_cost": "router.costs",
    "cost_per_token": "router.costs",
    "Budget": "router.budget",
    "Router": "router.routing.router",
    "Catalog": "router.pricing.catalog",
    "InMemoryLedger": "router.ledger",
    "SqliteLedger": "router.ledger",
    "Timeouts": "providers.transport",
    "ClientPool": "providers.clients",
    "Registry": "providers.registry",
    "register_provider": "providers.registry",
    "default_registry": "providers.registry",
    "errors": "router.errors",
}

__all__ = [
    "AsyncStream",
    "Budget",
    "Catalog",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ClientPool",
    "EmbeddingResponse",
    "InMemoryLedger",
    "Registry",
    "ResponseMeta",
    "Router",
    "SqliteLedger",
    "Stream",
    "TextCompletion",
    "Timeouts",
    "acompletion",
    "aembedding",
    "atext_completion",
    "completion",
    "completion_cost",
    "cost_per_token",
    "default_registry",
    "embedding",
    "errors",
    "register_provider",
    "stream_chunk_builder",
    "text_completion",
    "token_counter",
]

if TYPE_CHECKING:
    from providers.clients import ClientPool
    from providers.registry import Registry, default_registry, register_provider
    from providers.transport import Timeouts

    from . import errors
    from .api import acompletion, completion
    from .budget import Budget
    from .completions import atext_completion, text_completion
    from .costs import completion_cost, cost_per_token
    from .embeddings import aembedding, embedding
    from .ledger import InMemoryLedger, SqliteLedger
    from .pricing.catalog import Catalog
    from .routing.router import Router
    from .streaming import AsyncStream, Stream, stream_chunk_builder
    from .tokens import token_counter
    from .types import ChatCompletion, ChatCompletionChunk, EmbeddingResponse, ResponseMeta, TextCompletion


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'router' has no attribute {name!r}")
    value = importlib.import_module(module) if name == "errors" else getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
