"""Fake Azure OpenAI resource (``https://<resource>.openai.azure.com``) and Ollama server.

Azure serves OpenAI's chat and embeddings bodies under ``/openai/deployments/{deployment}/...`` and insists on
what makes it Azure: the key in the ``api-key`` header (a bearer token is refused), an ``api-version`` query
it knows, and a deployment that exists. Its answers name the deployment's underlying model, not the deployment.
Ollama serves OpenAI's API under ``/v1`` and needs no key.
"""

from __future__ import annotations

from aiohttp import web

from .base import Route
from .chat_server import ChatUpstream
from .openai_compat import OpenAICompatUpstream

API_VERSIONS = frozenset({"2024-06-01", "2024-10-21", "2025-01-01-preview"})


class AzureUpstream(ChatUpstream):
    """``deployments``: deployment name -> the model it runs; ``keys``: the accepted ``api-key`` values."""

    family = "azure"

    def __init__(self) -> None:
        super().__init__()
        self.deployments = {"gpt4o-prod": "gpt-4o-2024-08-06", "embed-prod": "text-embedding-3-small"}
        self.keys = {"azure-key-0123456789"}

    def routes(self) -> list[Route]:
        base = "/openai/deployments/{deployment}"
        return [
            ("POST", f"{base}/chat/completions", self._chat, False),
            ("POST", f"{base}/embeddings", self._embeddings, False),
        ]

    def _refused(self, request: web.Request) -> web.Response | str:
        """Azure's error for a request it refuses, or the deployment's model."""
        if request.headers.get("authorization") or request.headers.get("api-key") not in self.keys:
            message = "Access denied due to invalid subscription key or wrong API endpoint."
            return self.respond({"error": {"code": "401", "message": message}}, status=401)
        if request.query.get("api-version") not in API_VERSIONS:
            return self.respond({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        model = self.deployments.get(request.match_info["deployment"])
        if model is None:
            message = "The API deployment for this resource does not exist."
            return self.respond({"error": {"code": "DeploymentNotFound", "message": message}}, status=404)
        return model

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        model = self._refused(request)
        return model if isinstance(model, web.Response) else await self.chat(request, model=model)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        model = self._refused(request)
        return model if isinstance(model, web.Response) else await self.embeddings(request, model=model)


class OllamaUpstream(OpenAICompatUpstream):
    """Ollama's OpenAI-compatible API at ``/v1``, no key."""

    family = "ollama"

    def __init__(self) -> None:
        super().__init__(prefix="/v1")
        self.require_auth = False
