"""Fake DeepInfra OpenAI-compatible API (``https://api.deepinfra.com/v1/openai``)."""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from .base import Route
from .catalogs import deepinfra_catalog
from .chat_server import ChatUpstream
from .openai_format import Flavor

DEFAULT_PRICE = (0.5, 1.5)  # USD per million input / output tokens
_FLAVOR = Flavor(usage_mode="finish", usage_null=True)


class DeepInfraUpstream(ChatUpstream):
    """DeepInfra: spaced JSON, ``estimated_cost`` in usage, usage on the finish chunk.

    Attributes: ``catalog`` (``/models`` entries), ``prices`` (model -> (input, output) USD per
    million tokens; other models cost ``DEFAULT_PRICE``), ``unknown_models``, ``embedding_dim``.
    """

    family = "deepinfra"

    def __init__(self, *, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self.catalog: list[dict[str, Any]] = deepinfra_catalog()
        self.prices: dict[str, tuple[float, float]] = {}

    def dumps(self, obj: Any) -> bytes:
        """Python ``json.dumps`` spacing (``", "`` and ``": "``)."""
        return json.dumps(obj).encode()

    def response_headers(self) -> dict[str, str]:
        """DeepInfra headers."""
        return {"x-request-id": os.urandom(16).hex(), "x-robots-tag": "noindex"}

    def flavor(self) -> Flavor:
        """Usage on the finish chunk, ``"usage": null`` elsewhere, then ``[DONE]``."""
        return _FLAVOR

    def unauthorized(self) -> web.Response:
        """DeepInfra's 401 body."""
        return self.respond({"detail": {"error": "Unauthorized"}}, status=401)

    def bad_request(self, message: str, param: str | None = None) -> web.Response:
        """FastAPI-style 422 validation error."""
        detail = {"loc": ["body", param or "body"], "msg": message, "type": "value_error"}
        return self.respond({"detail": [detail]}, status=422)

    def unknown_model(self, model: str) -> web.Response:
        """DeepInfra's unknown model error."""
        return self.respond({"error": {"message": f"The model `{model}` does not exist"}}, status=404)

    def usage_extra(self, model: str, usage: dict[str, Any]) -> dict[str, Any]:
        """Add ``estimated_cost`` (USD) from ``prices``."""
        price_in, price_out = self.prices.get(model, DEFAULT_PRICE)
        cost = (usage["prompt_tokens"] * price_in + usage.get("completion_tokens", 0) * price_out) / 1e6
        return {**usage, "estimated_cost": cost}

    def routes(self) -> list[Route]:
        """Chat, embeddings and the model list under ``/v1/openai``."""
        return self.openai_routes("/v1/openai", self._models)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        with_meta = request.query.get("filter") == "with_meta"
        data = [entry if with_meta else {**entry, "metadata": None} for entry in self.catalog]
        return self.respond({"object": "list", "data": data})
