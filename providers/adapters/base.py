"""The narrow interface every upstream implements, and the OpenAI-compatible implementation.

Every step is a small method, so an adapter for a quirky upstream overrides just the step that
differs (URL, payload, response), like ``huggingface_hub``'s provider helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from ..errors import UnprocessableResponseError, redact, sanitize_body
from ..normalize import normalize_chat_completion
from ..spec import Target
from ..transport import HttpRequest, HttpResponse

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


class Adapter(Protocol):
    """What the router needs from an upstream family: build requests, parse responses."""

    name: str

    def chat_request(
        self, target: Target, body: dict[str, Any], api_key: str | None, headers: Mapping[str, str], stream: bool
    ) -> HttpRequest: ...

    def parse_chat(self, target: Target, response: HttpResponse, secrets: tuple[str, ...] = ()) -> dict[str, Any]: ...

    def normalize_chunk(self, target: Target, chunk: dict[str, Any]) -> dict[str, Any]: ...

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str: ...

    def embedding_needs_mapping(self, target: Target) -> bool: ...

    def embedding_request(
        self,
        target: Target,
        inputs: list[str],
        params: dict[str, Any],
        api_key: str | None,
        headers: Mapping[str, str],
        provider_model_id: str | None,
    ) -> HttpRequest: ...

    def parse_embedding(
        self, target: Target, inputs: list[str], response: HttpResponse, secrets: tuple[str, ...] = ()
    ) -> dict[str, Any]: ...


def auth_headers(api_key: str | None, base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    headers = dict(base)
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


def load_json_object(target: Target, response: HttpResponse, what: str, secrets: tuple[str, ...]) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        snippet = redact(response.content[:200].decode("utf-8", "replace"), secrets)
        raise UnprocessableResponseError(
            f"expected a JSON {what} but got {snippet!r}",
            status_code=response.status,
            provider=target.label,
            model=target.model,
        ) from None


class OpenAICompatAdapter:
    """Any server that speaks OpenAI's chat-completions and embeddings API."""

    name = "openai"

    # --- chat
    def chat_url(self, target: Target) -> str:
        return target.api_base + target.spec.chat_path

    def chat_model(self, target: Target) -> str:
        return target.model

    def chat_request(
        self, target: Target, body: dict[str, Any], api_key: str | None, headers: Mapping[str, str], stream: bool
    ) -> HttpRequest:
        payload = {"model": self.chat_model(target), **body}
        return HttpRequest(
            "POST",
            self.chat_url(target),
            auth_headers(api_key, SSE_HEADERS if stream else JSON_HEADERS, headers),
            orjson.dumps(payload),
        )

    def parse_chat(self, target: Target, response: HttpResponse, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
        data = load_json_object(target, response, "chat completion", secrets)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UnprocessableResponseError(
                "the upstream's 200 response has no 'choices' list; it is not an OpenAI chat completion "
                f"(keys: {sorted(data)[:10] if isinstance(data, dict) else type(data).__name__})",
                status_code=response.status,
                provider=target.label,
                model=target.model,
                body=sanitize_body(data, secrets) if isinstance(data, dict) else None,
            )
        return normalize_chat_completion(data, target.model)

    def normalize_chunk(self, target: Target, chunk: dict[str, Any]) -> dict[str, Any]:
        return chunk

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        return target.provider

    # --- embeddings
    def embedding_needs_mapping(self, target: Target) -> bool:
        return False

    def embedding_url(self, target: Target, provider_model_id: str | None) -> str:
        return target.api_base + target.spec.embeddings_path

    def embedding_request(
        self,
        target: Target,
        inputs: list[str],
        params: dict[str, Any],
        api_key: str | None,
        headers: Mapping[str, str],
        provider_model_id: str | None,
    ) -> HttpRequest:
        payload = {"model": provider_model_id or target.model, "input": inputs, **params}
        return HttpRequest(
            "POST",
            self.embedding_url(target, provider_model_id),
            auth_headers(api_key, JSON_HEADERS, headers),
            orjson.dumps(payload),
        )

    def parse_embedding(
        self, target: Target, inputs: list[str], response: HttpResponse, secrets: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        data = load_json_object(target, response, "embedding response", secrets)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UnprocessableResponseError(
                "the upstream's 200 response has no 'data' list; it is not an OpenAI embedding response",
                status_code=response.status,
                provider=target.label,
                model=target.model,
            )
        items = sorted(data["data"], key=lambda item: item.get("index", 0))
        if len(items) != len(inputs):
            raise UnprocessableResponseError(
                f"asked for {len(inputs)} embeddings, the upstream returned {len(items)}",
                status_code=response.status,
                provider=target.label,
                model=target.model,
            )
        data["data"] = [
            {"object": "embedding", "index": i, "embedding": item.get("embedding")} for i, item in enumerate(items)
        ]
        data["object"] = "list"
        data.setdefault("model", target.model)
        return data
