"""Text Generation Inference servers and HF Inference Endpoints (``huggingface/tgi`` + api_base).

TGI speaks OpenAI's Messages API at ``/v1/chat/completions``; the request model is ``"tgi"`` and
the server answers with its real model id. Endpoint URLs come with or without ``/v1`` — both work.
Older servers (< 3.2) send tool-call deltas as one object rather than a list, and 1.4 numbered
each chunk's choice by its token; both are fixed here, the rest of their stream quirks are handled
by the shared stream normalizer. Text Embeddings Inference serves OpenAI's embeddings route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..spec import Target
from .base import ChatHelper, EmbeddingsHelper


def endpoint_root(api_base: str) -> str:
    """``https://x.endpoints.huggingface.cloud/v1/`` -> ``https://x.endpoints.huggingface.cloud``."""
    root = api_base.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


class OnTGI:
    """The steps every TGI/TEI route shares: its path under the endpoint root (``api_base`` with or
    without ``/v1``), the request model ``"tgi"``, and "tgi" as who served."""

    route: ClassVar[str] = ""

    def url(self, target: Target, upstream_model: str | None) -> str:
        return endpoint_root(target.api_base) + self.route

    def model(self, target: Target, upstream_model: str | None) -> str:
        return "tgi"

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        return "tgi"


class TGIChat(OnTGI, ChatHelper):
    route = "/v1/chat/completions"

    def normalize_chunk(self, target: Target, chunk: dict[str, Any]) -> dict[str, Any]:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            # TGI writes one answer per request (its ``n`` is documented as unused), yet 1.4 builds
            # numbered each chunk by its token (index 1, 2, ... with speculative decoding): all are choice 0.
            choice["index"] = 0
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), dict):
                call = delta["tool_calls"]
                call.setdefault("index", 0)
                delta["tool_calls"] = [call]
        return chunk


class TEIEmbeddings(OnTGI, EmbeddingsHelper):
    """Text Embeddings Inference's OpenAI route. TEI takes token ids, but in its model's own vocabulary:
    cl100k_base ids from a client reach it decoded to text by the router."""

    token_id_hosts: ClassVar[frozenset[str]] = frozenset()
    route = "/v1/embeddings"
