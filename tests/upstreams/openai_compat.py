"""Fake plain OpenAI-compatible server (OpenAI itself, Together, Novita, vLLM ...)."""

from __future__ import annotations

import os

from aiohttp import web

from .base import Route
from .chat_server import ChatUpstream
from .openai_format import USAGE_MODES, Flavor


class OpenAICompatUpstream(ChatUpstream):
    """``{prefix}/chat/completions``, ``{prefix}/embeddings`` and ``{prefix}/models``.

    ``prefix`` defaults to ``/v1``. ``usage_mode`` picks where streamed usage goes: ``separate``
    (OpenAI; final ``choices: []`` chunk with include_usage), ``finish`` (on the finish chunk),
    ``cumulative`` (Novita; growing usage on every chunk) or ``none``. ``together_style`` spells
    the stop finish reason ``"eos"``. ``models`` lists the ids of ``/models``.
    """

    family = "openai"

    def __init__(self, *, prefix: str = "/v1", usage_mode: str = "separate", together_style: bool = False) -> None:
        super().__init__(prefix=prefix)
        self.usage_mode = usage_mode
        self.together_style = together_style
        self.models: list[str] = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]

    def flavor(self) -> Flavor:
        """Built from ``usage_mode`` / ``together_style`` at request time."""
        if self.usage_mode not in USAGE_MODES:
            raise ValueError(f"usage_mode must be one of {USAGE_MODES}")
        return Flavor(
            usage_mode=self.usage_mode,
            stop_reason="eos" if self.together_style else "stop",
            fingerprint="fp_" + "0a1b2c3d4e",
        )

    def response_headers(self) -> dict[str, str]:
        """OpenAI headers."""
        return {
            "x-request-id": "req_" + os.urandom(16).hex(),
            "openai-version": "2020-10-01",
            "openai-processing-ms": "42",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
        }

    def _error(self, status: int, message: str, param: str | None, code: str | None) -> web.Response:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        return self.respond({"error": error}, status=status)

    def unauthorized(self) -> web.Response:
        """OpenAI's 401 body."""
        return self._error(401, "Incorrect API key provided", None, "invalid_api_key")

    def bad_request(self, message: str, param: str | None = None) -> web.Response:
        """OpenAI's 400 body."""
        return self._error(400, message, param, None)

    def unknown_model(self, model: str) -> web.Response:
        """OpenAI's 404 model_not_found."""
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self._error(404, message, None, "model_not_found")

    def routes(self) -> list[Route]:
        """Chat, embeddings and the model list."""
        return self.openai_routes("", self._models)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": model, "object": "model", "created": 1700000000, "owned_by": "system"} for model in self.models]
        return self.respond({"object": "list", "data": data})
