"""Check ``completion()`` arguments and build the OpenAI request body, before any request.

Every bad input raises :class:`InvalidRequestArgumentError` saying what was wrong and how to fix it.
Images given as local paths or bytes become data URLs; a pydantic class as ``response_format``
becomes a strict ``json_schema``; legacy ``functions`` become ``tools``.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from providers.errors import InvalidRequestArgumentError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# OpenAI body parameters passed through as they are (after checks).
BODY_PARAMS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "n",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "parallel_tool_calls",
)


def _fail(message: str) -> InvalidRequestArgumentError:
    return InvalidRequestArgumentError(message)


def _check_number(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{name} must be a number between {lo} and {hi}, got {type(value).__name__} {_shown(value)}")
    if not lo <= value <= hi:
        raise _fail(f"{name} must be between {lo} and {hi}, got {value}")


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{name} must be an integer, got {type(value).__name__} {_shown(value)}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise _fail(f"{name} must be {bound}, got {value}")


def check_params(params: Mapping[str, Any]) -> None:
    """Type and range checks for the OpenAI parameters we pass through."""
    for name in ("max_tokens", "max_completion_tokens"):
        if params.get(name) is not None:
            _check_int(name, params[name], 1)
    if params.get("temperature") is not None:
        _check_number("temperature", params["temperature"], 0, 2)
    if params.get("top_p") is not None:
        _check_number("top_p", params["top_p"], 0, 1)
    for name in ("presence_penalty", "frequency_penalty"):
        if params.get(name) is not None:
            _check_number(name, params[name], -2, 2)
    if params.get("n") is not None:
        _check_int("n", params["n"], 1, 128)
    if params.get("seed") is not None:
        _check_int("seed", params["seed"], -(2**63))
    if params.get("top_logprobs") is not None:
        _check_int("top_logprobs", params["top_logprobs"], 0, 20)
    if params.get("logprobs") is not None and not isinstance(params["logprobs"], bool):
        raise _fail(f"logprobs must be True or False, got {_shown(params['logprobs'])}")
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _fail(f"stop must be a string or a list of strings, got {_shown(stop)}")
    if params.get("reasoning_effort") is not None and not isinstance(params["reasoning_effort"], str):
        raise _fail("reasoning_effort must be a string such as 'low', 'medium' or 'high'")
    if params.get("tools") is not None:
        _check_functions(params["tools"], "tools", TOOL_SHAPE)
    choice = params.get("tool_choice")
    if choice is not None and not (choice in ("none", "auto", "required") or _is_tool_choice(choice)):
        raise _fail(
            "tool_choice must be 'none', 'auto', 'required' or "
            f"{{'type': 'function', 'function': {{'name': ...}}}}, got {_shown(choice)}"
        )
    user = params.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail(f"user must be a string (an id for your end user), got {type(user).__name__}")
    if params.get("parallel_tool_calls") is not None and not isinstance(params["parallel_tool_calls"], bool):
        raise _fail(f"parallel_tool_calls must be true or false, got {_shown(params['parallel_tool_calls'])}")
    bias = params.get("logit_bias")
    if bias is not None:
        _check_logit_bias(bias)
    response_format = params.get("response_format")
    if isinstance(response_format, dict) and not isinstance(response_format.get("type"), str):
        raise _fail(
            "response_format must name its type, e.g. {'type': 'json_object'} or {'type': 'json_schema', "
            f"'json_schema': {{...}}}}, got {_shown(response_format)}"
        )


def _shown(value: Any, limit: int = 80) -> str:
    """A value for an error message, cut short (a client may send megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_tool_choice(choice: Any) -> bool:
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        return False
    fn = choice.get("function")
    return fn is None or (isinstance(fn, dict) and isinstance(fn.get("name"), str))


def _check_logit_bias(bias: Any) -> None:
    if not isinstance(bias, dict):
        raise _fail(f"logit_bias must map token ids to numbers between -100 and 100, got {type(bias).__name__}")
    for token, value in bias.items():
        if isinstance(token, bool) or not (isinstance(token, int) or (isinstance(token, str) and token.isdigit())):
            raise _fail(f"logit_bias keys must be token ids (digits), got {_shown(token)}")
        _check_number(f"logit_bias[{token!r}]", value, -100, 100)


# ---------------------------------------------------------------- messages and images

# Image URLs sent upstream as they are. Anything else is a local path (or bytes) that the library
# reads and inlines as a data: URL -- only when the caller allows local files (the proxy never does).
REMOTE_IMAGE_PREFIXES = ("http://", "https://", "data:")
_NO_LOCAL_FILES = (
    "must be an http(s) URL or a data: URL; this server does not read local files (send the image inline as "
    "data:image/png;base64,...)"
)

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _sniff_mime(data: bytes) -> str:
    for magic, mime in _IMAGE_MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise _fail("image bytes are not PNG, JPEG, GIF or WEBP; pass a data: URL with the right media type instead")


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_to_url(image: Any, where: str, *, local_files: bool = True) -> str:
    """An http(s) or data URL for an image given as URL, data URL, local path or bytes.

    With ``local_files=False`` only URLs are accepted: nothing is read, and a path is refused with the
    same message whether or not it exists."""
    if isinstance(image, str) and image.startswith(REMOTE_IMAGE_PREFIXES):
        return image
    if not local_files:
        raise _fail(f"{where} {_NO_LOCAL_FILES}")
    if isinstance(image, (bytes, bytearray, memoryview)):
        raw = bytes(image)
        return _data_url(raw, _sniff_mime(raw))
    if isinstance(image, Path):
        path = image
    elif isinstance(image, str):
        path = Path(image[len("file://") :] if image.startswith("file://") else image).expanduser()
    else:
        raise _fail(f"{where}: an image must be a URL string, a path or bytes, got {type(image).__name__}")
    if not path.is_file():
        shown = str(image)[:80]
        raise _fail(f"{where}: {shown!r} is not an http(s) URL, a data: URL or an existing file")
    raw = path.read_bytes()
    mime = mimetypes.guess_type(path.name)[0]
    if not mime or not mime.startswith("image/"):
        mime = _sniff_mime(raw)
    return _data_url(raw, mime)


def _refuse_file_urls(value: Any, where: str) -> None:
    """No string inside a content part may point at a local file (``file:`` URLs), at any depth."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if item[:5].lower() == "file:":
                raise _fail(f"{at} {_NO_LOCAL_FILES}")
        elif isinstance(item, dict):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


def _as_dict(value: Any, where: str, expected: str) -> dict[str, Any]:
    """``value`` as a dict: a dict, or a pydantic object (the OpenAI SDK's message and part types) dumped."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump(exclude_none=True)
        return dumped
    raise _fail(f"{where} must be {expected}, got {type(value).__name__}")


def _normalize_part(part: Any, where: str, local_files: bool) -> Any:
    part = _as_dict(part, where, "a dict like {'type': 'text', 'text': ...}")
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _fail(f"{where} needs a 'type' string ('text', 'image_url', ...), got {_shown(kind)}")
    if kind == "text" and not isinstance(part.get("text"), str):
        raise _fail(f"{where}.text must be a string, got {type(part.get('text')).__name__}")
    if kind == "image_url":
        spec = part.get("image_url")
        if isinstance(spec, dict):
            url = spec.get("url")
            new_url = image_to_url(url, f"{where}.image_url.url", local_files=local_files)
            if new_url is not url:
                part = {**part, "image_url": {**spec, "url": new_url}}
        else:
            part = {**part, "image_url": {"url": image_to_url(spec, f"{where}.image_url", local_files=local_files)}}
    if not local_files and kind != "text":
        _refuse_file_urls(part, where)
    return part


def has_local_images(messages: Any) -> bool:
    """True when some image is a path or bytes (reading and encoding it is blocking work)."""
    if not isinstance(messages, (list, tuple)):
        return False
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                spec = part.get("image_url")
                url = spec.get("url") if isinstance(spec, dict) else spec
                if not (isinstance(url, str) and url.startswith(REMOTE_IMAGE_PREFIXES)):
                    return True
    return False


# What a function-shaped item (a tool, a tool call) must hold: its example for the error message, and per field
# (in the item itself or in its "function", name, accepted types, required).
FunctionShape = tuple[str, tuple[tuple[bool, str, type | tuple[type, ...], bool], ...]]
TOOL_SHAPE: FunctionShape = (
    "{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}",
    (
        (False, "type", str, False),
        (True, "name", str, True),
        (True, "parameters", (dict, type(None)), False),
        (True, "description", (str, type(None)), False),
    ),
)
TOOL_CALL_SHAPE: FunctionShape = (
    "{'id': 'call_1', 'type': 'function', 'function': {'name': ..., 'arguments': '{...}'}}",
    (
        (False, "id", str, False),
        (False, "type", str, False),
        (True, "name", str, True),
        (True, "arguments", (str, dict), False),
    ),
)


def _check_functions(items: Any, where: str, shape: FunctionShape) -> None:
    """A list of function-shaped items (``tools``, a message's ``tool_calls``), each field of the right type."""
    example, fields = shape
    if not isinstance(items, list):
        raise _fail(f"{where} must be a list of {example} dicts, got {_shown(items)}")
    for i, item in enumerate(items):
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict) or not all(
            isinstance((fn if inner else item)[name], kinds) if name in (fn if inner else item) else not required
            for inner, name, kinds, required in fields
        ):
            raise _fail(f"{where}[{i}] must look like {example}, got {_shown(item)}")


def _check_message_fields(msg: dict[str, Any], i: int) -> None:
    """Types of the message fields other than role and content (the upstream would choke on others)."""
    for name in ("name", "tool_call_id"):
        value = msg.get(name)
        if value is not None and not isinstance(value, str):
            raise _fail(f"messages[{i}].{name} must be a string, got {type(value).__name__}")
    if msg.get("tool_calls") is not None:
        _check_functions(msg["tool_calls"], f"messages[{i}].tool_calls", TOOL_CALL_SHAPE)
    call = msg.get("function_call")
    if call is not None and not (isinstance(call, dict) and isinstance(call.get("name"), str)):
        raise _fail(
            f"messages[{i}].function_call must look like {{'name': ..., 'arguments': '...'}}, got {_shown(call)}"
        )


def normalize_messages(messages: Any, *, local_files: bool = True) -> list[dict[str, Any]]:
    """Checked messages as plain dicts; images turned into URLs.

    ``local_files=False`` (the proxy: content from its clients) refuses images given as paths or
    ``file:`` URLs without touching the file system; the messages come back unchanged."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise _fail(
            "messages must be a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}; e.g. messages=[{{'role': 'user', 'content': 'Hello'}}]"
        )
    if not messages:
        raise _fail("messages is empty; pass at least one message, e.g. [{'role': 'user', 'content': 'Hello'}]")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        msg = _as_dict(msg, f"messages[{i}]", "a dict with 'role' and 'content'")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise _fail(f"messages[{i}] has role {_shown(role)}; use one of {', '.join(sorted(ROLES))}")
        _check_message_fields(msg, i)
        content = msg.get("content")
        if content is None:
            if (
                role == "user"
                or (role in ("system", "developer"))
                or (role == "assistant" and not msg.get("tool_calls") and not msg.get("function_call"))
            ):
                raise _fail(f"messages[{i}] ({role}) has no content; add 'content': '...'")
        elif isinstance(content, list):
            new_parts = [_normalize_part(p, f"messages[{i}].content[{j}]", local_files) for j, p in enumerate(content)]
            if any(a is not b for a, b in zip(new_parts, content, strict=True)):
                msg = {**msg, "content": new_parts}
        elif not isinstance(content, str):
            raise _fail(
                f"messages[{i}].content must be a string or a list of content parts, got {type(content).__name__}"
            )
        out.append(msg)
    return out


# ---------------------------------------------------------------- response_format


def _strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI strict mode: every object closed and every property required, recursively."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("type") == "object" or "properties" in out:
        props = out.get("properties", {})
        out["properties"] = {k: _strict_schema(v) for k, v in props.items()}
        out["required"] = list(props)
        out["additionalProperties"] = False
    for key in ("items", "additionalItems"):
        if isinstance(out.get(key), dict):
            out[key] = _strict_schema(out[key])
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [_strict_schema(s) for s in out[key]]
    for key in ("$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _strict_schema(v) for k, v in out[key].items()}
    out.pop("default", None)  # strict mode rejects defaults
    return out


def response_format_param(value: Any) -> Any:
    """Pass dicts through; turn a pydantic model class into a strict ``json_schema`` format."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return {
            "type": "json_schema",
            "json_schema": {
                "name": value.__name__,
                "schema": _strict_schema(value.model_json_schema()),
                "strict": True,
            },
        }
    raise _fail(
        "response_format must be a dict like {'type': 'json_object'} or a pydantic model class, "
        f"got {type(value).__name__}"
    )


# ---------------------------------------------------------------- the body


def build_chat_body(
    messages: Any,
    params: Mapping[str, Any],
    *,
    stream: bool,
    stream_options: Any,
    functions: Any,
    function_call: Any,
    extra_body: Any,
    local_files: bool = True,
) -> dict[str, Any]:
    """The OpenAI request body (without ``model``) for a chat call.

    ``extra_body`` adds fields the named arguments do not cover; it may not set one of them (nor
    ``model``, ``messages``, ``stream`` or ``stream_options``): pass those as arguments. ``local_files=False``
    refuses images given as local paths (see :func:`normalize_messages`)."""
    check_params(params)
    body: dict[str, Any] = {"messages": normalize_messages(messages, local_files=local_files)}
    for name in BODY_PARAMS:
        value = params.get(name)
        if value is not None:
            body[name] = value
    if "response_format" in body:
        body["response_format"] = response_format_param(body["response_format"])
    if function_call is not None and functions is None:
        raise _fail("function_call= needs functions=[...]; with tools= use tool_choice= instead")
    if functions is not None:
        if "tools" in body:
            raise _fail("pass either tools= or the legacy functions=, not both")
        if not isinstance(functions, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) for f in functions
        ):
            raise _fail("functions must be a list of {'name': ..., 'parameters': {...}} dicts")
        body["tools"] = [{"type": "function", "function": f} for f in functions]
        if function_call is not None:
            if function_call in ("none", "auto"):
                body["tool_choice"] = function_call
            elif isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
                body["tool_choice"] = {"type": "function", "function": {"name": function_call["name"]}}
            else:
                raise _fail("function_call must be 'none', 'auto' or {'name': ...}")
    if stream:
        body["stream"] = True
        if stream_options is not None and not isinstance(stream_options, dict):
            raise _fail("stream_options must be a dict like {'include_usage': True}")
        # Always ask for usage: cost needs it. Whether the caller sees it is decided by the stream.
        body["stream_options"] = {**(stream_options or {}), "include_usage": True}
    merge_extra_body(extra_body, body, EXTRA_BODY_OWNED)
    return body


def merge_extra_body(extra_body: Any, body: dict[str, Any], owned: frozenset[str]) -> None:
    """Add the caller's ``extra_body`` to ``body`` once it is checked (never a field in ``owned``)."""
    if extra_body:
        if not isinstance(extra_body, dict):
            raise _fail(f"extra_body must be a dict, got {type(extra_body).__name__}")
        check_extra_body(extra_body, body, owned)
        body.update(extra_body)


# Fields extra_body may never set in a chat body: they come from the call's own arguments.
EXTRA_BODY_OWNED = frozenset({"model", "messages", "stream", "stream_options"})


def check_extra_body(extra_body: dict[str, Any], named: Mapping[str, Any], owned: frozenset[str]) -> None:
    """``extra_body`` adds fields; it never silently overrides a named argument or a field the call owns."""
    for name in extra_body:
        if name in owned:
            raise _fail(f"extra_body cannot set {name!r}: pass it as the {name}= argument of the call")
        if name in named:
            raise _fail(f"extra_body sets {name!r}, which this call already sets as the {name}= argument; pass it once")


def check_headers(extra_headers: Any) -> dict[str, str]:
    if not extra_headers:
        return {}
    if not isinstance(extra_headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra_headers.items()
    ):
        raise _fail("extra_headers must be a dict of str to str")
    return {k.lower(): v for k, v in extra_headers.items()}
