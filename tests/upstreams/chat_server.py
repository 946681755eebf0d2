"""``ChatUpstream``: a ``FakeUpstream`` with OpenAI-style chat and embeddings handlers.

Families customise it through small hooks: ``flavor`` (stream spelling), ``resolve_model``,
``validate``, ``usage_extra``, ``bad_request`` and ``unknown_model`` (error shapes).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .base import RECORD, SSE_TYPE, FakeUpstream, Handler, Route, request_id
from .chat import BadRequest, ChatPlan, plan_chat, template_prompt_tokens
from .completions import OPENAI_TEXT_STREAM, TextStreamStyle, text_completion, text_completion_frames
from .embeddings import openai_embeddings
from .openai_format import Flavor, Render


class ChatUpstream(FakeUpstream):
    """Base of the families that serve ``/chat/completions`` (and usually ``/embeddings``)."""

    def __init__(self, *, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self.embedding_dim = 8
        self.text_stream_style: TextStreamStyle = OPENAI_TEXT_STREAM  # how /completions streams

    # ----------------------------------------------------------------- hooks
    def flavor(self) -> Flavor:
        """How this family spells chat output (may depend on mutable attributes)."""
        return Flavor()

    def completion_id(self) -> str:
        """The ``id`` of a completion."""
        return "chatcmpl-" + request_id()

    def bad_request(self, message: str, param: str | None = None) -> web.Response:
        """The family's response to a malformed request."""
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
        return self.respond({"error": error}, status=400)

    def unknown_model(self, model: str) -> web.Response:
        """The family's response for a model listed in ``unknown_models``."""
        return self.respond({"error": f"Model {model} does not exist"}, status=404)

    def resolve_model(self, model: Any) -> str | web.Response:
        """The response ``model`` for the requested one, or an error response."""
        if not isinstance(model, str) or not model:
            return self.bad_request("you must provide a model parameter", "model")
        if model in self.unknown_models:
            return self.unknown_model(model)
        return model

    def openai_routes(self, prefix: str, models: Handler) -> list[Route]:
        """Chat, embeddings and the model list under ``prefix``, laid out as OpenAI's API."""
        return [
            ("POST", f"{prefix}/chat/completions", self.chat_handler, True),
            ("POST", f"{prefix}/embeddings", self.embeddings_handler, True),
            ("POST", f"{prefix}/completions", self.completions_handler, True),
            ("GET", f"{prefix}/models", models, True),
        ]

    def validate(self, plan: ChatPlan) -> web.Response | None:
        """Family-specific limits; an error response rejects the request."""
        return None

    def usage_extra(self, model: str, usage: dict[str, Any]) -> dict[str, Any]:
        """Add family fields to a final usage object."""
        return usage

    def stream_writes(self, render: Render) -> list[bytes]:
        """The socket writes of a default stream."""
        return render.writes(self.dumps)

    # ----------------------------------------------------------------- handlers
    async def chat(
        self, request: web.Request, *, model: str | None = None, headers: Mapping[str, str] | None = None
    ) -> web.StreamResponse:
        """Answer a chat completion request with the default echo behaviour."""
        body = request[RECORD].json
        if not isinstance(body, dict):
            return self.bad_request("Request body must be a JSON object")
        if model is None:
            resolved = self.resolve_model(body.get("model"))
            if isinstance(resolved, web.Response):
                return resolved
            model = resolved
        try:
            plan = plan_chat(body, reasoning_field=self.reasoning_field)
        except BadRequest as exc:
            return self.bad_request(exc.message, exc.param)
        rejected = self.validate(plan)
        if rejected is not None:
            return rejected
        if self.template_tokens:
            plan.prompt_tokens = template_prompt_tokens(body["messages"])
        render = Render(
            plan=plan,
            flavor=self.flavor(),
            model=model,
            cid=self.completion_id(),
            created=int(time.time()),
            usage_hook=functools.partial(self.usage_extra, model),
        )
        out = self.response_headers()
        if headers:
            out.update(headers)
        if not plan.stream:
            return self.respond(render.completion(), headers=out)
        out.update({"content-type": SSE_TYPE, "cache-control": "no-cache", "x-accel-buffering": "no"})
        return await self.stream(request, self.stream_writes(render), headers=out, delay=self.stream_delay)

    async def embeddings(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        """Answer an OpenAI ``/embeddings`` request with ``fake_embedding`` vectors."""
        body = request[RECORD].json
        if model is None:
            resolved = self.resolve_model(body.get("model") if isinstance(body, dict) else None)
            if isinstance(resolved, web.Response):
                return resolved
            model = resolved
        try:
            result = openai_embeddings(body, model, self.embedding_dim)
        except BadRequest as exc:
            return self.bad_request(exc.message, exc.param)
        result["usage"] = self.usage_extra(model, result["usage"])
        return self.respond(result)

    async def completions_handler(self, request: web.Request) -> web.StreamResponse:
        """Answer a legacy ``/completions`` request (see :mod:`tests.upstreams.completions`)."""
        body = request[RECORD].json
        resolved = self.resolve_model(body.get("model") if isinstance(body, dict) else None)
        if isinstance(resolved, web.Response):
            return resolved
        try:
            result = text_completion(body, resolved)
        except BadRequest as exc:
            return self.bad_request(exc.message, exc.param)
        if not body.get("stream"):
            return self.respond(result)
        frames = text_completion_frames(body, result, self.text_stream_style)
        out = {**self.response_headers(), "content-type": SSE_TYPE, "cache-control": "no-cache"}
        return await self.stream(request, frames, headers=out, delay=self.stream_delay)

    async def chat_handler(self, request: web.Request) -> web.StreamResponse:
        """Route handler for the family's main chat path."""
        return await self.chat(request)

    async def embeddings_handler(self, request: web.Request) -> web.StreamResponse:
        """Route handler for the family's main embeddings path."""
        return await self.embeddings(request)
