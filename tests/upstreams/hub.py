"""Fake Hugging Face Hub (``https://huggingface.co``): the inference provider mapping API."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from aiohttp import web

from .base import FakeUpstream, Route, bearer_token
from .catalogs import hub_mappings


class HubUpstream(FakeUpstream):
    """``GET /api/models/{org}/{model}[?expand[]=inferenceProviderMapping]``.

    Auth is optional (public repos): the token is only recorded, except that a token outside
    ``valid_tokens`` (when set) gets 401. ``mappings``: model id -> provider -> mapping entry.
    """

    family = "hub"

    def __init__(self, *, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self.require_auth = False
        self.mappings: dict[str, dict[str, dict[str, Any]]] = hub_mappings()

    def response_headers(self) -> dict[str, str]:
        """Hub headers."""
        return {
            "x-request-id": f"Root=1-{os.urandom(4).hex()}-{os.urandom(12).hex()}",
            "x-powered-by": "huggingface-moon",
        }

    def unauthorized(self) -> web.Response:
        """The Hub's 401 for a bad token."""
        return self.respond(
            {"error": "Invalid credentials in Authorization header"},
            status=401,
            headers={"x-error-message": "Invalid credentials in Authorization header"},
        )

    def routes(self) -> list[Route]:
        """The model info route (org/name or a bare name)."""
        return [
            ("GET", "/api/models/{org}/{name}", self._model_info, False),
            ("GET", "/api/models/{name}", self._model_info, False),
        ]

    async def _model_info(self, request: web.Request) -> web.StreamResponse:
        token = bearer_token(request)
        if token is not None and self.valid_tokens is not None and token not in self.valid_tokens:
            return self.unauthorized()
        org = request.match_info.get("org")
        name = request.match_info["name"]
        model = f"{org}/{name}" if org else name
        mapping = self.mappings.get(model)
        if mapping is None:
            return self.respond(
                {"error": "Repository not found"},
                status=404,
                headers={"x-error-code": "RepoNotFound", "x-error-message": "Repository not found"},
            )
        info: dict[str, Any] = {"_id": hashlib.sha1(model.encode()).hexdigest()[:24], "id": model}
        expand = request.query.getall("expand[]", []) + request.query.getall("expand", [])
        if not expand:
            info.update({"modelId": model, "private": False, "gated": False, "tags": []})
        if "inferenceProviderMapping" in expand:
            info["inferenceProviderMapping"] = mapping
        return self.respond(info)
