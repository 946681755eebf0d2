"""Fake Hugging Face router (``https://router.huggingface.co``)."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from .base import RECORD, Handler, Route
from .catalogs import hf_router_catalog
from .chat import BadRequest
from .chat_server import ChatUpstream
from .embeddings import feature_extraction

POLICIES = frozenset({"fastest", "cheapest", "preferred"})
# Provider-specific chat routes behind https://router.huggingface.co/{provider}
PROVIDER_CHAT_ROUTES = {
    "/deepinfra/v1/openai/chat/completions": "deepinfra",
    "/novita/v3/openai/chat/completions": "novita",
    "/fireworks-ai/inference/v1/chat/completions": "fireworks-ai",
    "/groq/openai/v1/chat/completions": "groq",
    "/cohere/compatibility/v1/chat/completions": "cohere",
    "/zai-org/api/paas/v4/chat/completions": "zai-org",
}
HF_INFERENCE_MODEL = "/hf-inference/models/{org}/{name}"


class HFRouterUpstream(ChatUpstream):
    """OpenAI-compatible chat with ``model[:policy|:provider]``, the catalog and provider routes.

    Attributes: ``catalog`` (``/v1/models`` data), ``unknown_models`` (400 model_not_supported on
    ``/v1/chat/completions``, 404 on provider routes), ``nested_models`` (feature extraction
    nests one level deeper), ``embedding_dim``, ``reasoning_field``, ``valid_tokens``.
    """

    family = "hf_router"

    def __init__(self, *, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self.catalog: list[dict[str, Any]] = hf_router_catalog()
        self.nested_models: set[str] = set()

    # ----------------------------------------------------------------- family shapes
    def response_headers(self) -> dict[str, str]:
        """HF's CloudFront-style request id and moon headers."""
        trace = f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"
        return {"x-request-id": trace, "x-powered-by": "huggingface-moon", "x-robots-tag": "none"}

    def unauthorized(self) -> web.Response:
        """HF's 401 body."""
        return self.respond({"error": "Invalid username or password."}, status=401)

    def resolve_model(self, model: Any) -> str | web.Response:
        """Strip the ``:suffix``; 404 without an org, 400 for ``unknown_models``."""
        if not isinstance(model, str) or not model:
            return self.bad_request("you must provide a model parameter", "model")
        base = model.partition(":")[0]
        if "/" not in base:
            return self.respond({"error": f"Model {base} does not exist"}, status=404)
        if base in self.unknown_models or model in self.unknown_models:
            message = f"The requested model '{base}' is not supported by any provider you have enabled."
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_supported",
            }
            return self.respond({"error": error}, status=400)
        return base

    def provider_for(self, model: str) -> str:
        """The ``x-inference-provider``: the pinned one, else the first live one in the catalog."""
        base, sep, suffix = model.partition(":")
        if sep and suffix and suffix not in POLICIES:
            return suffix
        for entry in self.catalog:
            if entry.get("id") == base:
                for provider in entry.get("providers", []):
                    if provider.get("status") == "live":
                        return str(provider["provider"])
        return "together"

    # ----------------------------------------------------------------- routes
    def routes(self) -> list[Route]:
        """Router chat, catalog, provider chat / embeddings and hf-inference feature extraction."""
        routes: list[Route] = [
            ("POST", "/v1/chat/completions", self._chat, True),
            ("GET", "/v1/models", self._models, False),
            ("GET", "/v1/models/{org}/{name}", self._model, False),
            ("POST", HF_INFERENCE_MODEL + "/v1/chat/completions", self._hf_inference_chat, True),
            ("POST", HF_INFERENCE_MODEL + "/pipeline/feature-extraction", self._feature_extraction, True),
            ("POST", "/deepinfra/v1/openai/embeddings", self._provider_embeddings("deepinfra"), True),
            ("POST", "/fireworks-ai/inference/v1/embeddings", self._provider_embeddings("fireworks-ai"), True),
            ("POST", "/{provider}/v1/embeddings", self._provider_embeddings(None), True),
        ]
        for path, provider in PROVIDER_CHAT_ROUTES.items():
            routes.append(("POST", path, self._provider_chat(provider), True))
        routes.append(("POST", "/{provider}/v1/chat/completions", self._provider_chat(None), True))
        return routes

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[RECORD].json
        model = body.get("model") if isinstance(body, dict) else None
        provider = self.provider_for(model) if isinstance(model, str) else "together"
        return await self.chat(request, headers={"x-inference-provider": provider})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return self.respond({"object": "list", "data": self.catalog})

    async def _model(self, request: web.Request) -> web.StreamResponse:
        model = f"{request.match_info['org']}/{request.match_info['name']}"
        for entry in self.catalog:
            if entry.get("id") == model:
                return self.respond(entry)
        return self.respond({"error": f"Model {model} does not exist"}, status=404)

    def _provider_model(self, model: Any) -> str | web.Response:
        """Provider routes take the provider's own id as-is (no ``:provider`` suffix to resolve)."""
        return ChatUpstream.resolve_model(self, model)

    def _provider_chat(self, fixed: str | None) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            provider = fixed or request.match_info["provider"]
            body = request[RECORD].json
            model = self._provider_model(body.get("model") if isinstance(body, dict) else None)
            if isinstance(model, web.Response):
                return model
            return await self.chat(request, model=model, headers={"x-inference-provider": provider})

        return handler

    def _provider_embeddings(self, fixed: str | None) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = request[RECORD].json
            model = self._provider_model(body.get("model") if isinstance(body, dict) else None)
            if isinstance(model, web.Response):
                return model
            return await self.embeddings(request, model=model)

        return handler

    def _path_model(self, request: web.Request) -> str | web.Response:
        model = f"{request.match_info['org']}/{request.match_info['name']}"
        if model in self.unknown_models:
            return self.unknown_model(model)
        return model

    async def _hf_inference_chat(self, request: web.Request) -> web.StreamResponse:
        model = self._path_model(request)
        if isinstance(model, web.Response):
            return model
        return await self.chat(request, model=model, headers={"x-inference-provider": "hf-inference"})

    async def _feature_extraction(self, request: web.Request) -> web.StreamResponse:
        model = self._path_model(request)
        if isinstance(model, web.Response):
            return model
        try:
            vectors = feature_extraction(request[RECORD].json, self.embedding_dim, model in self.nested_models)
        except BadRequest as exc:
            return self.respond({"error": exc.message}, status=400)
        return self.respond(vectors, headers={"x-inference-provider": "hf-inference"})
