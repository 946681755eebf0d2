"""Fake text-generation-inference server / HF Inference Endpoint (versions 3.x and 2.x)."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from .base import Route
from .chat import ChatPlan
from .chat_server import ChatUpstream
from .completions import TGI_TEXT_STREAM
from .openai_format import Flavor, Render

VERSIONS = {"3.x": "3.2.1", "2.x": "2.4.1"}
_FLAVORS = {
    "3.x": Flavor(role_every_chunk=True, fingerprint="3.2.1-native"),
    "2.x": Flavor(
        data_prefix=b"data:",
        chunk_object="text_completion",
        usage_mode="finish",
        done=False,
        stop_reason="eos_token",
        tools_reason="eos_token",
        role_every_chunk=True,
        fingerprint="2.4.1-native",
        legacy_tools=True,
    ),
}


class TGIUpstream(ChatUpstream):
    """TGI Messages API plus ``/info``, ``/health`` and ``/v1/models``, all under ``prefix``.

    Attributes: ``model_id`` (the response ``model``), ``max_input_tokens``, ``max_total_tokens``,
    ``require_auth`` (False; True mimics a protected endpoint), ``stream_error_after`` (send an
    error event after that many content chunks), ``reasoning_field``.
    """

    family = "tgi"

    def __init__(self, version: str = "3.x", *, prefix: str = "", model_id: str = "tgi-org/tgi-model") -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {sorted(VERSIONS)}")
        super().__init__(prefix=prefix)
        self.version = version
        self.model_id = model_id
        self.max_input_tokens = 4095
        self.max_total_tokens = 4096
        self.require_auth = False
        self.stream_error_after: int | None = None
        self.text_stream_style = TGI_TEXT_STREAM

    # ----------------------------------------------------------------- family shapes
    def flavor(self) -> Flavor:
        """3.x: OpenAI framing; 2.x: ``data:{``, ``text_completion``, ``eos_token``, no ``[DONE]``."""
        return _FLAVORS[self.version]

    def completion_id(self) -> str:
        """TGI leaves ``id`` empty."""
        return ""

    def response_headers(self) -> dict[str, str]:
        """TGI / Inference Endpoint headers."""
        return {"x-request-id": os.urandom(16).hex(), "x-compute-type": "gpu+optimized"}

    def unauthorized(self) -> web.Response:
        """Inference Endpoints' 401 body."""
        return self.respond({"error": "Authorization header is correct, but the token seems invalid"}, status=401)

    def bad_request(self, message: str, param: str | None = None) -> web.Response:
        """axum's JSON extractor rejection: 422 text/plain."""
        return self.respond_text(f"Failed to deserialize the JSON body into the target type: {message}", 422)

    def resolve_model(self, model: Any) -> str | web.Response:
        """The request's model is ignored (``"tgi"`` is normal)."""
        return self.model_id

    def _validation_error(self, message: str) -> web.Response:
        return self.respond({"error": f"Input validation error: {message}", "error_type": "validation"}, 422)

    def validate(self, plan: ChatPlan) -> web.Response | None:
        """Token limits, as TGI's validation stage checks them."""
        if plan.prompt_tokens > self.max_input_tokens:
            return self._validation_error(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {plan.prompt_tokens}"
            )
        if plan.max_tokens is not None and plan.prompt_tokens + plan.max_tokens > self.max_total_tokens:
            return self._validation_error(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {plan.prompt_tokens} `inputs` tokens and {plan.max_tokens} `max_new_tokens`"
            )
        return None

    def stream_writes(self, render: Render) -> list[bytes]:
        """Default frames, cut by an error event when ``stream_error_after`` is set."""
        limit = self.stream_error_after
        if limit is None:
            return render.writes(self.dumps)
        frames: list[bytes] = []
        sent = 0
        for chunk in render.chunks():
            if sent >= limit:
                break
            frames.append(render.frame(chunk, self.dumps))
            choices = chunk["choices"]
            if choices and choices[0]["delta"].get("content"):
                sent += 1
        error = {
            "error": {
                "message": "Input validation error: simulated failure mid-stream",
                "http_status_code": 422,
            }
        }
        frames.append(render.frame(error, self.dumps))
        return frames

    # ----------------------------------------------------------------- routes
    def routes(self) -> list[Route]:
        """Messages API, model list, info and health (auth only when ``require_auth``)."""
        return [
            ("POST", "/v1/chat/completions", self.chat_handler, True),
            ("POST", "/v1/completions", self.completions_handler, True),
            ("GET", "/v1/models", self._models, True),
            ("GET", "/info", self._info, True),
            ("GET", "/health", self._health, True),
        ]

    async def _models(self, request: web.Request) -> web.StreamResponse:
        entry = {"id": self.model_id, "object": "model", "created": 0, "owned_by": self.model_id}
        return self.respond({"object": "list", "data": [entry]})

    async def _info(self, request: web.Request) -> web.StreamResponse:
        return self.respond(
            {
                "model_id": self.model_id,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSIONS[self.version],
                "sha": None,
                "docker_label": None,
            }
        )

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, headers=self.response_headers())
