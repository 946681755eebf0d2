"""The upstream call of one routing attempt, per task: the chosen deployment's params merged under the
request's arguments, split into the body and the call settings, and prepared for the pipeline."""

from __future__ import annotations

from typing import Any, Protocol

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry

from ..chat import prepare_chat
from ..completions import COMPLETION_PARAMS, completion_body, prepare_text_completion
from ..embeddings import embedding_params, prepare_embedding
from ..params import BODY_PARAMS
from ..pipeline import Call, check_unknown
from ..pricing.catalog import Catalog
from ..types import ChatCompletion, EmbeddingResponse, TextCompletion
from .deployment import merged_params
from .session import Choice


class Routes(Protocol):
    """What a call needs of the Router: its registry and catalog."""

    registry: Registry
    catalog: Catalog


BODY_KEYS = frozenset(BODY_PARAMS)
CALL_KEYS = (
    "api_key",
    "api_base",
    "timeout",
    "stream_options",
    "functions",
    "function_call",
    "extra_headers",
    "extra_body",
    "bill_to",
)


def chat_call(
    router: Routes, choice: Choice, messages: Any, stream: bool, kwargs: dict[str, Any]
) -> Call[ChatCompletion]:
    """The chat call of one attempt: the deployment's params under the request's, split into body and settings."""
    merged = merged_params(choice.deployment.params, kwargs) if kwargs else choice.deployment.params
    params: dict[str, Any] = {}
    call_args: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in merged.items():
        if key in BODY_KEYS:
            params[key] = value
        elif key in CALL_KEYS:
            call_args[key] = value
        elif key not in ("client", "budget"):
            extra[key] = value  # unknown: prepare_chat names it in its error
    return prepare_chat(
        choice.deployment.model,
        messages,
        stream,
        params,
        {**call_args, "catalog": router.catalog},  # type: ignore[typeddict-item]
        registry=router.registry,
        kwargs=extra,
        fn="Router.completion",
        target=choice.target,
    )


def embedding_call(router: Routes, input: Any, choice: Choice, kwargs: dict[str, Any]) -> Call[EmbeddingResponse]:
    """The embeddings call of one attempt."""
    merged = merged_params({k: v for k, v in choice.deployment.params.items() if k not in BODY_KEYS}, kwargs)
    params = embedding_params(
        merged.pop("dimensions", None),
        merged.pop("encoding_format", None),
        merged.pop("user", None),
        merged.pop("extra_body", None),
    )
    return prepare_embedding(
        choice.deployment.model,
        input,
        params,
        api_key=merged.pop("api_key", None),
        api_base=merged.pop("api_base", None),
        timeout=merged.pop("timeout", None),
        extra_headers=merged.pop("extra_headers", None),
        bill_to=merged.pop("bill_to", None),
        registry=router.registry,
        catalog=router.catalog,
        target=choice.target,
    )


def completion_call(
    router: Routes, prompt: Any, stream: bool, choice: Choice, kwargs: dict[str, Any]
) -> Call[TextCompletion]:
    """The text completion call of one attempt (streamed when ``stream``)."""
    merged = merged_params(choice.deployment.params, kwargs)
    params = {name: merged.pop(name, None) for name in COMPLETION_PARAMS}
    body = completion_body(params, merged.pop("extra_body", None))
    stream_options = merged.pop("stream_options", None)
    settings: Any = {name: merged.pop(name) for name in CALL_KEYS if name in merged}
    unknown = {k: v for k, v in merged.items() if k in kwargs and k not in ("client", "budget")}
    check_unknown(unknown, "Router.text_completion")
    if stream_options is not None and not stream:
        raise InvalidRequestArgumentError("stream_options is only for stream=True")
    return prepare_text_completion(
        choice.deployment.model,
        prompt,
        body,
        registry=router.registry,
        target=choice.target,
        stream_options=(stream_options or {}) if stream else None,
        **{**settings, "catalog": router.catalog},
    )
