"""Captured-style raw SSE streams from each upstream family, and what they must normalize to.

Each case: the raw bytes an upstream sends, the upstream family, and the expected normalized
chunks in a compact form: ``(role, content, reasoning, tool_calls, finish)`` per chunk, where
``tool_calls`` is a tuple of ``(index, has_id, name, arguments)``; plus the final usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Compact = tuple[Any, ...]


def _frame(obj: Any, *, space: bool = True, spaced_json: bool = False) -> bytes:
    text = json.dumps(obj) if spaced_json else json.dumps(obj, separators=(",", ":"))
    return (b"data: " if space else b"data:") + text.encode() + b"\n\n"


def _chunk(
    delta: dict[str, Any],
    finish: str | None = None,
    *,
    cid: str = "chatcmpl-1",
    model: str = "m",
    usage: Any = "absent",
    obj: str = "chat.completion.chunk",
    index: int = 0,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": cid,
        "object": obj,
        "created": 1737000000,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    if usage != "absent":
        out["usage"] = usage
    return out


def _usage(p: int, c: int, **extra: Any) -> dict[str, Any]:
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, **extra}


DONE = b"data: [DONE]\n\n"


@dataclass
class StreamCase:
    name: str
    raw: bytes
    family: str  # "openai" | "tgi" | "huggingface"
    expected: list[Compact]
    usage: dict[str, int] | None  # prompt/completion/total; None = must be estimated locally


def _c(
    role: str | None = None,
    content: str | None = None,
    reasoning: str | None = None,
    tools: tuple[Any, ...] | None = None,
    finish: str | None = None,
) -> Compact:
    return (role, content, reasoning, tools, finish)


def _stream(*frames: bytes) -> bytes:
    return b"".join(frames)


def _data(
    delta: dict[str, Any], finish: str | None = None, *, space: bool = True, spaced_json: bool = False, **chunk: Any
) -> bytes:
    """One ``data:`` frame holding one chunk with one choice."""
    return _frame(_chunk(delta, finish, **chunk), space=space, spaced_json=spaced_json)


def _usage_only(usage: dict[str, Any], **chunk: Any) -> bytes:
    """A ``data:`` frame holding a chunk with no choices, only the usage."""
    return _frame(_chunk({}, usage=usage, **chunk) | {"choices": [], "usage": usage})


def _tool(index: int, call_id: str, name: str | None, arguments: str) -> dict[str, Any]:
    return {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tgi2(delta: dict[str, Any], finish: str | None = None, **chunk: Any) -> bytes:
    """A frame as TGI 2.x sends it: no space after ``data:``, no id, object ``text_completion``."""
    return _data(delta, finish, space=False, cid="", obj="text_completion", **chunk)


OPENAI_SEPARATE_USAGE = StreamCase(
    "openai-separate-usage",
    _stream(
        _data({"role": "assistant", "content": ""}),
        _data({"content": "Hello"}),
        _data({"content": " world"}),
        _data({}, "stop"),
        _usage_only(_usage(10, 2)),
        DONE,
    ),
    "openai",
    [_c("assistant", ""), _c(content="Hello"), _c(content=" world"), _c(finish="stop")],
    _usage(10, 2),
)

TGI_MODEL = {"cid": "", "model": "tgi-org/tgi-model"}
TGI3 = StreamCase(
    "tgi-3.x",
    _stream(
        _frame(_chunk({"role": "assistant", "content": "Hi"}, **TGI_MODEL) | {"system_fingerprint": "3.2.1-native"}),
        _data({"role": "assistant", "content": " there"}, **TGI_MODEL),
        _data({"role": "assistant", "content": ""}, "stop", **TGI_MODEL),
        _usage_only(_usage(5, 2), **TGI_MODEL),
        DONE,
    ),
    "tgi",
    [_c("assistant", "Hi"), _c(content=" there"), _c(content="", finish="stop")],
    _usage(5, 2),
)

TGI2 = StreamCase(
    "tgi-2.x",
    _stream(  # no [DONE]: the stream just closes
        _tgi2({"role": "assistant", "content": "Old"}),
        _tgi2({"role": "assistant", "content": " server"}),
        _tgi2({"role": "assistant", "content": ""}, "eos_token", usage=_usage(4, 2)),
    ),
    "tgi",
    [_c("assistant", "Old"), _c(content=" server"), _c(content="", finish="stop")],
    _usage(4, 2),
)

DEEPINFRA = StreamCase(
    "deepinfra",
    _stream(
        _data({"role": "assistant", "content": ""}, usage=None, spaced_json=True),
        _data({"content": "Deep"}, usage=None, spaced_json=True),
        _data({"content": " infra"}, usage=None, spaced_json=True),
        _data({"content": ""}, "stop", usage=_usage(7, 2, estimated_cost=9.68e-05), spaced_json=True),
        DONE,
    ),
    "openai",
    [_c("assistant", ""), _c(content="Deep"), _c(content=" infra"), _c(content="", finish="stop")],
    _usage(7, 2),
)

TOGETHER = StreamCase(
    "together-eos",
    _stream(
        _data({"role": "assistant", "content": "To"}),
        _data({"content": "gether"}),
        _data({"content": ""}, "eos", usage=_usage(3, 2)),
        DONE,
    ),
    "openai",
    [_c("assistant", "To"), _c(content="gether"), _c(content="", finish="stop")],
    _usage(3, 2),
)

NOVITA_CUMULATIVE = StreamCase(
    "novita-cumulative-usage",
    _stream(
        _data({"role": "assistant", "content": "a"}, usage=_usage(6, 1)),
        _data({"content": "b"}, usage=_usage(6, 2)),
        _data({"content": "c"}, "stop", usage=_usage(6, 3)),
        DONE,
    ),
    "openai",
    [_c("assistant", "a"), _c(content="b"), _c(content="c", finish="stop")],
    _usage(6, 3),
)

VLLM_NO_USAGE = StreamCase(
    "vllm-no-usage-reasoning-field",
    _stream(
        _data({"role": "assistant", "reasoning": "Let me"}),
        _data({"reasoning": " think."}),
        _data({"content": "Done."}),
        _data({}, "stop"),
        DONE,
    ),
    "openai",
    [_c("assistant", None, "Let me"), _c(reasoning=" think."), _c(content="Done."), _c(finish="stop")],
    None,
)

DEEPSEEK_REASONING = StreamCase(
    "deepseek-reasoning-content-with-keepalive-and-crlf",
    _stream(
        b": keep-alive\r\n\r\n",
        _data({"role": "assistant", "reasoning_content": "Hmm", "content": None}).replace(b"\n", b"\r\n"),
        b": OPENROUTER PROCESSING\n\n",
        _data({"reasoning_content": " ok", "content": None}),
        _data({"content": "Three."}),
        _data({"content": ""}, "stop", usage=_usage(9, 4)),
        DONE,
    ),
    "openai",
    [_c("assistant", None, "Hmm"), _c(reasoning=" ok"), _c(content="Three."), _c(content="", finish="stop")],
    _usage(9, 4),
)

PARALLEL_TOOLS = StreamCase(
    "openai-parallel-tool-calls",
    _stream(
        _data({"role": "assistant", "content": None, "tool_calls": [_tool(0, "call_a", "get_weather", "")]}),
        _data({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        _data({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        _data({"tool_calls": [_tool(1, "call_b", "get_time", "")]}),
        _data({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}]}),
        _data({}, "tool_calls"),
        DONE,
    ),
    "openai",
    [
        _c("assistant", None, None, ((0, True, "get_weather", ""),)),
        _c(tools=((0, False, None, '{"city": '),)),
        _c(tools=((0, False, None, '"Paris"}'),)),
        _c(tools=((1, True, "get_time", ""),)),
        _c(tools=((1, False, None, '{"tz": "CET"}'),)),
        _c(finish="tool_calls"),
    ],
    None,
)

TGI2_TOOLS = StreamCase(
    "tgi-2.x-tool-call-object",
    _stream(
        _tgi2({"role": "assistant", "tool_calls": _tool(0, "0", "search", '{"q')}),
        _tgi2({"role": "assistant", "tool_calls": _tool(0, "0", None, '": "x"}')}),
        _tgi2({"role": "assistant", "content": ""}, "eos_token", usage=_usage(8, 5)),
    ),
    "tgi",
    [
        _c("assistant", None, None, ((0, True, "search", '{"q'),)),
        _c(tools=((0, False, None, '": "x"}'),)),
        _c(content="", finish="tool_calls"),
    ],
    _usage(8, 5),
)

IDENTICAL_CHUNKS = StreamCase(
    "identical-chunks-pass-through",
    _stream(
        _data({"role": "assistant", "content": "na"}),
        *[_data({"content": "na"}) for _ in range(60)],
        _data({}, "stop", usage=_usage(2, 61)),
        DONE,
    ),
    "openai",
    [_c("assistant", "na")] + [_c(content="na")] * 60 + [_c(finish="stop")],
    _usage(2, 61),
)

ALL_CASES = [
    OPENAI_SEPARATE_USAGE,
    TGI3,
    TGI2,
    DEEPINFRA,
    TOGETHER,
    NOVITA_CUMULATIVE,
    VLLM_NO_USAGE,
    DEEPSEEK_REASONING,
    PARALLEL_TOOLS,
    TGI2_TOOLS,
    IDENTICAL_CHUNKS,
]


def compact(chunk: Any) -> Compact:
    """The compact form of one normalized chunk with one choice."""
    choice = chunk.choices[0]
    d = choice.delta
    tools = None
    if d.tool_calls:
        tools = tuple(
            (t.index, bool(t.id), t.function.name if t.function else None, t.function.arguments if t.function else None)
            for t in d.tool_calls
        )
    return (d.role, d.content, getattr(d, "reasoning_content", None), tools, choice.finish_reason)
