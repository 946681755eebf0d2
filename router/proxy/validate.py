"""Checks of a proxy client's request body before anything is routed: every bad input is a 400 naming
the field, never a 500, and nothing a client sends chooses the upstream, its credentials, or the
fields the proxy owns.

- The body is a JSON object nested at most ``MAX_DEPTH`` levels.
- Fields naming an upstream, a URL, a key or a header (``api_base``, ``extra_headers``, ``webhook_url``,
  any spelling) are refused (or dropped with ``client_upstream_fields: ignore``).
- ``model``, ``stream``, ``stream_options`` and an endpoint's input fields (``messages``, ``input``) come
  from the named fields only: ``extra_body`` cannot set them, and another endpoint's input is a 400.
  Other fields of ``extra_body`` are checked like the named ones (its ``max_tokens`` is the request's
  ``max_tokens``); a field set both in ``extra_body`` and beside it is a 400.
  Unknown top-level fields go upstream as extra body fields, under the same rules.
- Field types and ranges are the library's own checks (``router.params`` / ``router.embeddings``), run
  with local files refused: an image given as a path or ``file:`` URL is a 400 that reads nothing.

Example::

    rules = BodyRules("chat", ("messages",), CHAT_FIELDS, PROXY_OWNED | {"input"}, streams=True, check=check_chat)
    body = parse_body(raw)
    model = model_of(body, drop_upstream=False)
    request = rules.checked(body)      # raises ClientError
    router.acompletion(request.model, *request.inputs, stream=request.stream, **request.named,
                       extra_body=request.extra or None)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.errors import InvalidRequestArgumentError

from ..embeddings import check_request as check_embedding_request
from ..params import BODY_PARAMS, build_chat_body

MAX_DEPTH = 64


class ClientError(Exception):
    """A client's mistake, sent as OpenAI's error JSON with ``status``.

    ``close``: the connection carries no further request (its body was not read; aiohttp still reads
    and discards what the client sends for a few seconds so that it can see the answer); ``drop``: the
    connection is closed right after the answer (a client too slow to send its body gets no more time)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str = "invalid_request",
        status: int = 400,
        close: bool = False,
        drop: bool = False,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status
        self.close, self.drop, self.retry_after = close or drop, drop, retry_after


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


# Fields that would let a client pick the upstream or its credentials (any spelling: apiBase, API_KEY...).
UPSTREAM_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "custom_llm_provider",
        "organization",
        "litellm_params",
        "extra_headers",
        "bill_to",
        "client",
        "registry",
        "catalog",
        "budget",
        "azure_endpoint",
        "headers",
        "api_type",
    }
)
_UPSTREAM_SQUASHED = frozenset(_squash(n) for n in UPSTREAM_FIELDS)
# ... and any name containing one of these (webhook_url, x_headers, secret_key, endpoint_id...).
_UPSTREAM_PARTS = ("url", "header", "endpoint", "apikey", "apibase", "secret", "password", "credential", "authoriz")

CHAT_FIELDS = frozenset(BODY_PARAMS) | {"stream_options", "functions", "function_call"}
EMBEDDING_FIELDS = frozenset({"dimensions", "encoding_format", "user"})
# Set by the proxy (or from its inputs' own fields) only: extra_body may not set them, and an endpoint
# whose inputs they are not refuses them (the endpoint table adds every endpoint's input fields).
PROXY_OWNED = frozenset({"model", "stream", "stream_options", "extra_body"})


def is_upstream_field(name: str) -> bool:
    """Whether a body field names an upstream, a URL, a credential or a header, however it is spelled."""
    squashed = _squash(name)
    return squashed in _UPSTREAM_SQUASHED or any(part in squashed for part in _UPSTREAM_PARTS)


@dataclass
class Checked:
    """A checked request: what to pass to the Router."""

    model: str
    inputs: tuple[Any, ...] = ()  # the endpoint's input fields (messages, input...), in its order
    stream: bool = False
    named: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the call
    extra: dict[str, Any] = field(default_factory=dict)  # other body fields, sent upstream as they are


@dataclass(frozen=True)
class BodyRules:
    """What one endpoint's JSON body may hold.

    ``inputs``: the fields carrying the task's input, passed to the router in this order after the model;
    ``fields``: the named fields a client may set, passed by name; ``streams``: whether ``stream: true``
    is allowed; ``owned``: fields only the proxy sets (refused here unless they are this endpoint's
    inputs); ``check``: the library's own check of the request (raises :class:`InvalidRequestArgumentError`
    or :class:`ClientError`)."""

    task: str
    inputs: tuple[str, ...]
    fields: frozenset[str]
    owned: frozenset[str]
    streams: bool = False
    check: Callable[[Checked], None] | None = None

    def checked(self, body: dict[str, Any]) -> Checked:
        """The request in ``body`` (after :func:`model_of`) checked under these rules."""
        checked = _split(body, self.inputs, self.fields, self.owned - set(self.inputs))
        if checked.stream and not self.streams:
            raise ClientError(f"{self.task} cannot be streamed: omit 'stream'", param="stream")
        checked.inputs = tuple(body.get(name) for name in self.inputs)
        if self.check is not None:
            try:
                self.check(checked)
            except InvalidRequestArgumentError as err:
                raise from_library(err, self.fields | set(self.inputs)) from None
        return checked


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, nested at most ``MAX_DEPTH`` levels."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ClientError(f"malformed JSON body: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ClientError("the JSON body must be an object", code="invalid_json")
    check_depth(body)
    return body


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (without recursion: a deep body cannot blow the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            raise ClientError(
                f"the JSON body is nested more than {limit} levels deep; no request field needs that",
                code="too_deep",
            )
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def upstream_fields(body: dict[str, Any]) -> list[str]:
    """Body fields (and ``extra_body`` fields) that name an upstream, a URL, a credential or a header."""
    found = [name for name in body if is_upstream_field(name)]
    extra = body.get("extra_body")
    if isinstance(extra, dict):
        found += [f"extra_body.{name}" for name in extra if is_upstream_field(name)]
    return sorted(found)


def model_of(body: dict[str, Any], *, drop_upstream: bool) -> str:
    """The requested model alias, after refusing (or dropping) the fields that would pick an upstream."""
    extra = body.get("extra_body")
    if extra is not None and not isinstance(extra, dict):
        raise ClientError(f"extra_body must be an object, got {_kind(extra)}", param="extra_body")
    upstream = upstream_fields(body)
    if upstream and not drop_upstream:
        raise ClientError(
            f"{', '.join(upstream)} cannot be set by clients: the proxy's config chooses upstreams, URLs, "
            "credentials and headers",
            param=upstream[0],
            code="forbidden_field",
        )
    for name in upstream:
        if name.startswith("extra_body."):
            body["extra_body"].pop(name[len("extra_body.") :])
        else:
            body.pop(name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError(
            "the body needs a 'model' string (one of GET /v1/models)", param="model", code="missing_model"
        )
    return model


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _split(
    body: dict[str, Any], inputs: tuple[str, ...], named_fields: frozenset[str], owned: frozenset[str]
) -> Checked:
    """Named fields, and the rest (unknown top-level fields + ``extra_body``) with the fence applied."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ClientError(f"stream must be true or false (a JSON boolean), got {_kind(stream)}", param="stream")
    named: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("model", "stream", "extra_body") or name in inputs:
            continue
        if name in named_fields:
            named[name] = value
        elif name in owned:
            raise ClientError(f"{name!r} is not a field of this endpoint", param=name, code="unknown_field")
        else:
            extra[name] = value
    for name, value in (body.get("extra_body") or {}).items():
        where = f"extra_body.{name}"
        if name in owned or name in inputs:
            raise ClientError(
                f"{where} cannot be set: the proxy owns {name!r} (set it as the request's own field)",
                param=where,
                code="forbidden_field",
            )
        if name in named or name in extra:
            raise ClientError(f"{name!r} is set both in extra_body and as a request field; set it once", param=where)
        if name in named_fields:
            named[name] = value  # checked like the named field it is
        else:
            extra[name] = value
    return Checked(body["model"], (), bool(stream), named, extra)


def check_stream_options(checked: Checked) -> Any:
    """The request's ``stream_options``: only ``include_usage``, and only on a stream."""
    options = checked.named.get("stream_options")
    if options is not None and not (
        isinstance(options, dict)
        and set(options) <= {"include_usage"}
        and isinstance(options.get("include_usage", False), bool)
    ):
        raise ClientError(
            'stream_options may only be {"include_usage": true} or {"include_usage": false}', param="stream_options"
        )
    return options


def check_chat(checked: Checked) -> None:
    """The library's checks of a chat completion request (see the module doc)."""
    options = check_stream_options(checked)
    (messages,) = checked.inputs
    build_chat_body(
        messages,
        {k: v for k, v in checked.named.items() if k in BODY_PARAMS},
        stream=checked.stream,
        stream_options=options,
        functions=checked.named.get("functions"),
        function_call=checked.named.get("function_call"),
        extra_body=checked.extra,
        local_files=False,
    )


def check_embedding(checked: Checked) -> None:
    """The library's checks of an embeddings request."""
    named = checked.named
    (payload,) = checked.inputs
    check_embedding_request(
        payload, named.get("dimensions"), named.get("encoding_format"), named.get("user"), checked.extra
    )


_PARAM = re.compile(r"(?:extra_body sets |extra_body cannot set )?'?([A-Za-z_]\w*)((?:\[\d+\]|\.[A-Za-z_]\w*)*)")


def from_library(err: InvalidRequestArgumentError, fields: frozenset[str] | set[str]) -> ClientError:
    """The library's own check, as a 400 naming the field its message starts with (one of ``fields``)."""
    match = _PARAM.match(err.message)
    param = match.group(1) + match.group(2) if match and match.group(1) in fields else None
    return ClientError(err.message, param=param)
