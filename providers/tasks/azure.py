"""Azure OpenAI: OpenAI's chat and embeddings bodies at a deployment's own URL, authenticated by ``api-key``.

``azure/<deployment>`` posts to ``{api_base}/openai/deployments/<deployment>/chat/completions?api-version=...``
(``/embeddings`` likewise). The API version is the ``api-version`` query of ``api_base`` (a model_list entry's
``api_version`` puts it there), else ``AZURE_API_VERSION``, else :data:`DEFAULT_API_VERSION`. The key goes in
the ``api-key`` header, not as a bearer token. Only the URL and the headers differ from OpenAI's helpers.
"""

from __future__ import annotations

import os
from typing import ClassVar
from urllib.parse import parse_qsl, quote, urlencode

from ..spec import Target
from .base import JSON_HEADERS, SSE_HEADERS, Auth, ChatHelper, EmbeddingsHelper

DEFAULT_API_VERSION = "2024-10-21"  # Azure OpenAI's data-plane GA release
API_VERSION_ENV = "AZURE_API_VERSION"


def api_version(query: str) -> str:
    """The ``api-version`` of a base URL's query, else ``AZURE_API_VERSION``, else the GA default."""
    given = dict(parse_qsl(query)).get("api-version")
    return given or os.environ.get(API_VERSION_ENV) or DEFAULT_API_VERSION


class OnAzure:
    """The steps every Azure OpenAI route shares: the deployment's URL with its api-version, the api-key header."""

    route: ClassVar[str] = ""

    def url(self, target: Target, upstream_model: str | None) -> str:
        base, _, query = target.api_base.partition("?")
        params = [(k, v) for k, v in parse_qsl(query) if k != "api-version"]
        params.append(("api-version", api_version(query)))
        deployment = quote(target.model, safe="")
        return f"{base.rstrip('/')}/openai/deployments/{deployment}{self.route}?{urlencode(params)}"

    def headers(self, target: Target, auth: Auth, stream: bool) -> dict[str, str]:
        headers = dict(SSE_HEADERS if stream else JSON_HEADERS)
        if auth.api_key:
            headers["api-key"] = auth.api_key
        headers.update(auth.headers)
        return headers


class AzureChat(OnAzure, ChatHelper):
    route = "/chat/completions"


class AzureEmbeddings(OnAzure, EmbeddingsHelper):
    """Azure's OpenAI embedding models read cl100k_base token ids, as OpenAI's do."""

    route = "/embeddings"

    def takes_token_ids(self, target: Target) -> bool:
        return True
