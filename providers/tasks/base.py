"""The task interface every upstream implements, with OpenAI-shaped defaults.

A :class:`TaskHelper` does one task (chat, embeddings, ...) on one upstream. It builds the request
for (target, inputs, params, auth) and parses the response; for an asynchronous upstream it also says
what to poll next. It never does I/O: the pipeline in :mod:`router.pipeline` sends what it builds.
Every step is a small method, so a helper for a quirky upstream overrides just the step that
differs (URL, model id, payload, response), like ``huggingface_hub``'s provider helpers.
See ARCHITECTURE.md ("Adding a provider or a task").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from ..errors import InvalidRequestArgumentError, UnprocessableResponseError, redact, sanitize_body
from ..normalize import normalize_chat_completion
from ..spec import Target
from ..transport import HttpRequest, HttpResponse

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


@dataclass(slots=True)
class Auth:
    """What authenticates and annotates one call: the API key (or None) and extra headers (made per call:
    not frozen, a frozen dataclass costs twice as much to build on the hot path)."""

    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)

    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error message: the key."""
        return (self.api_key,) if self.api_key else ()


def auth_headers(auth: Auth, base: Mapping[str, str]) -> dict[str, str]:
    headers = dict(base)
    if auth.api_key:
        headers["authorization"] = f"Bearer {auth.api_key}"
    if auth.headers:
        headers.update(auth.headers)
    return headers


def load_json_object(target: Target, response: HttpResponse, what: str, secrets: tuple[str, ...]) -> Any:
    """The response's JSON, or an error quoting (redacted) what came instead."""
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


def not_shaped(target: Target, response: HttpResponse, message: str, data: Any = None) -> UnprocessableResponseError:
    """A 200 answer that is not what the task expects."""
    return UnprocessableResponseError(
        message, status_code=response.status, provider=target.label, model=target.model, body=data
    )


class TaskHelper:
    """One task on one upstream, OpenAI-shaped: POST JSON ``{"model": ..., **payload}`` to a path.

    ``inputs`` is what the task works on (chat: the messages; embeddings: the texts); ``params`` are
    the other body fields, already checked. ``upstream_model`` is the provider's own model id when
    :meth:`needs_model_mapping` asked the pipeline to look it up (HF providers' native routes).
    """

    task: ClassVar[str] = ""
    default_path: ClassVar[str] = ""
    what: ClassVar[str] = "response"  # for messages: "chat completion", "embedding response", ...
    inputs_field: ClassVar[str] = "input"  # the body field carrying the inputs ("messages" for chat)
    listed: ClassVar[str] = "data"  # the list an OpenAI-shaped answer of the task carries
    poll_wait: ClassVar[tuple[float, float]] = (0.25, 2.0)  # asynchronous upstreams: first and longest wait

    def path(self, target: Target) -> str:
        return target.spec.paths.get(self.task, self.default_path)

    def url(self, target: Target, upstream_model: str | None) -> str:
        base, _, query = target.api_base.partition("?")  # a query on the base URL goes after the path
        return base.rstrip("/") + self.path(target) + (f"?{query}" if query else "")

    def headers(self, target: Target, auth: Auth, stream: bool) -> dict[str, str]:
        """The request's headers: JSON (or SSE), the key as a bearer token, the call's extra headers."""
        return auth_headers(auth, SSE_HEADERS if stream else JSON_HEADERS)

    def model(self, target: Target, upstream_model: str | None) -> str:
        return upstream_model or target.model

    def payload(self, target: Target, inputs: Any, params: Mapping[str, Any], upstream_model: str | None) -> Any:
        return {"model": self.model(target, upstream_model), self.inputs_field: inputs, **params}

    def request(
        self,
        target: Target,
        inputs: Any,
        params: Mapping[str, Any],
        auth: Auth,
        *,
        stream: bool = False,
        upstream_model: str | None = None,
    ) -> HttpRequest:
        body = self.payload(target, inputs, params, upstream_model)
        return HttpRequest(
            "POST",
            self.url(target, upstream_model),
            self.headers(target, auth, stream),
            orjson.dumps(body),
        )

    def parse(self, target: Target, inputs: Any, response: HttpResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
        return self.load(target, response, secrets)

    def load(self, target: Target, response: HttpResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
        """The answer's JSON object, which must carry the task's list (``listed``: OpenAI's shape)."""
        listed = self.listed
        data = load_json_object(target, response, self.what, secrets)
        if not isinstance(data, dict) or not isinstance(data.get(listed), list):
            raise not_shaped(
                target,
                response,
                f"the upstream's 200 response has no {listed!r} list; it is not an OpenAI {self.what} "
                f"(keys: {sorted(data)[:10] if isinstance(data, dict) else type(data).__name__})",
                sanitize_body(data, secrets) if isinstance(data, dict) else None,
            )
        return data

    def served_by(self, target: Target, headers: Mapping[str, str]) -> str:
        """Who served the call, for the bill: the family, or the sub-provider a gateway names."""
        return target.provider

    def needs_model_mapping(self, target: Target) -> bool:
        """Whether the request needs the provider's own model id (looked up by the pipeline)."""
        return False

    def poll(self, target: Target, response: HttpResponse, auth: Auth) -> HttpRequest | None:
        """For asynchronous upstreams: the next request to send (a status or result URL), or None
        when ``response`` is the answer. Synchronous upstreams (every OpenAI-shaped one) answer at once."""
        return None


class ChatHelper(TaskHelper):
    """OpenAI chat completions (``/chat/completions``), streaming or not."""

    task, default_path, what = "chat", "/chat/completions", "chat completion"
    inputs_field, listed = "messages", "choices"

    def parse(self, target: Target, inputs: Any, response: HttpResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
        return normalize_chat_completion(self.load(target, response, secrets), target.model)

    def normalize_chunk(self, target: Target, chunk: dict[str, Any]) -> dict[str, Any]:
        """Fix one upstream stream chunk before the shared normalizer sees it (default: as is)."""
        return chunk


class EmbeddingsHelper(TaskHelper):
    """OpenAI embeddings (``/embeddings``): ``data[i].embedding`` back in input order.

    Token-id inputs (``[int, ...]`` or ``[[int, ...], ...]``) are cl100k_base ids, as OpenAI's API and
    the clients that tokenize with tiktoken (LangChain's ``OpenAIEmbeddings``) mean them. They go upstream
    as they are only to the hosts in ``token_id_hosts``, whose embedding models read cl100k_base ids
    (OpenAI's own API). Every other upstream gets them decoded to text by the router: OpenAI-compatible
    servers (vLLM, TEI, DeepInfra...) accept id arrays but read them in their own model's vocabulary,
    which would embed some other text without any error.

    ``refused_params`` names body parameters the upstream does not take, with what to do instead.

    Example::

        helper = EmbeddingsHelper()
        helper.takes_token_ids(target)   # True for https://api.openai.com/v1
        helper.check_params(target, {"dimensions": 256})   # raises where dimensions is refused
    """

    task, default_path, what = "embeddings", "/embeddings", "embedding response"
    token_id_hosts: ClassVar[frozenset[str]] = frozenset({"api.openai.com"})
    refused_params: ClassVar[Mapping[str, str]] = {}

    def takes_token_ids(self, target: Target) -> bool:
        """Whether token-id inputs go upstream as they are (else the router decodes them to text)."""
        return (urlsplit(target.api_base).hostname or "") in self.token_id_hosts

    def check_params(self, target: Target, params: Mapping[str, Any]) -> None:
        """Refuse, before anything is sent, a body parameter this upstream does not take."""
        for name in params:
            reason = self.refused_params.get(name)
            if reason is not None:
                raise InvalidRequestArgumentError(f"{name} is not supported by {target.model_string!r}: {reason}")

    def parse(self, target: Target, inputs: Any, response: HttpResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
        data = self.load(target, response, secrets)
        items = sorted(data["data"], key=lambda item: item.get("index", 0))
        if len(items) != len(inputs):
            raise not_shaped(
                target, response, f"asked for {len(inputs)} embeddings, the upstream returned {len(items)}"
            )
        data["data"] = [
            {"object": "embedding", "index": i, "embedding": item.get("embedding")} for i, item in enumerate(items)
        ]
        data["object"] = "list"
        data.setdefault("model", target.model)
        return data
