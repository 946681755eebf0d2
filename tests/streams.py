"""Captured-style raw SSE streams from each upstream family, and what they must normalize to.

Each case: the raw bytes an upstream sends, the adapter family, and the expected normalized
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


OPENAI_SEPARATE_USAGE = StreamCase(
    "openai-separate-usage",
    b"".join(
        [
            _frame(_chunk({"role": "assistant", "content": ""})),
            _frame(_chunk({"content": "Hello"})),
            _frame(_chunk({"content": " world"})),
            _frame(_chunk({}, "stop")),
            _frame(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 1737000000,
                    "model": "m",
                    "choices": [],
                    "usage": _usage(10, 2),
                }
            ),
            DONE,
        ]
    ),
    "openai",
    [_c("assistant", ""), _c(content="Hello"), _c(content=" world"), _c(finish="stop")],
    {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
)

TGI3 = StreamCase(
    "tgi-3.x",
    b"".join(
        [
            _frame(
                _chunk({"role": "assistant", "content": "Hi"}, cid="", model="tgi-org/tgi-model")
                | {"system_fingerprint": "3.2.1-native"}
            ),
            _frame(_chunk({"role": "assistant", "content": " there"}, cid="", model="tgi-org/tgi-model")),
            _frame(_chunk({"role": "assistant", "content": ""}, "stop", cid="", model="tgi-org/tgi-model")),
            _frame(
                {
                    "id": "",
                    "object": "chat.completion.chunk",
                    "created": 1737000000,
                    "model": "tgi-org/tgi-model",
                    "choices": [],
                    "usage": _usage(5, 2),
                }
            ),
            DONE,
        ]
    ),
    "tgi",
    [_c("assistant", "Hi"), _c(content=" there"), _c(content="", finish="stop")],
    {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
)

TGI2 = StreamCase(
    "tgi-2.x",
    b"".join(
        [
            _frame(_chunk({"role": "assistant", "content": "Old"}, cid="", obj="text_completion"), space=False),
            _frame(_chunk({"role": "assistant", "content": " server"}, cid="", obj="text_completion"), space=False),
            _frame(
                _chunk(
                    {"role": "assistant", "content": ""}, "eos_token", cid="", obj="text_completion", usage=_usage(4, 2)
                ),
                space=False,
            ),
        ]
    ),  # no [DONE]: the stream just closes
    "tgi",
    [_c("assistant", "Old"), _c(content=" server"), _c(content="", finish="stop")],
    {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
)

DEEPINFRA = StreamCase(
    "deepinfra",
    b"".join(
        [
            _frame(_chunk({"role": "assistant", "content": ""}, usage=None), spaced_json=True),
            _frame(_chunk({"content": "Deep"}, usage=None), spaced_json=True),
            _frame(_chunk({"content": " infra"}, usage=None), spaced_json=True),
            _frame(_chunk({"content": ""}, "stop", usage=_usage(7, 2, estimated_cost=9.68e-05)), spaced_json=True),
            DONE,
        ]
    ),
    "openai",
    [_c("assistant", ""), _c(content="Deep"), _c(content=" infra"), _c(content="", finish="stop")],
    {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
)

TOGETHER = StreamCase(
    "together-eos",
    b"".join(
        [
            _frame(_chunk({"role": "assistant", "content": "To"})),
            _frame(_chunk({"content": "gether"})),
            _frame(_chunk({"content": ""}, "eos", usage=_usage(3, 2))),
            DONE,
        ]
    ),
    "openai",
    [_c("assistant", "To"), _c(content="gether"), _c(content="", finish="stop")],
    {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
)

NOVITA_CUMULATIVE = StreamCase(
    "novita-cumulative-usage",
    b"".join(
        [
            _frame(_chunk({"role": "assistant", "content": "a"}, usage=_usage(6, 1))),
            _frame(_chunk({"content": "b"}, usage=_usage(6, 2))),
            _frame(_chunk({"content": "c"}, "stop", usage=_usage(6, 3))),
            DONE,
        ]
    ),
    "openai",
    [_c("assistant", "a"), _c(content="b"), _c(content="c", finish="stop")],
    {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9},
)

VLLM_NO_USAGE = StreamCase(
    "vllm-no-usage-reasoning-field",
    b"".join(
        [
            _frame(_chunk({"role": "assistant", "reasoning": "Let me"})),
            _frame(_chunk({"reasoning": " think."})),
            _frame(_chunk({"content": "Done."})),
            _frame(_chunk({}, "stop")),
            DONE,
        ]
    ),
    "openai",
    [_c("assistant", None, "Let me"), _c(reasoning=" think."), _c(content="Done."), _c(finish="stop")],
    None,
)

DEEPSEEK_REASONING = StreamCase(
    "deepseek-reasoning-content-with-keepalive-and-crlf",
    b"".join(
        [
            b": keep-alive\r\n\r\n",
            _frame(_chunk({"role": "assistant", "reasoning_content": "Hmm", "content": None})).replace(b"\n", b"\r\n"),
            b": OPENROUTER PROCESSING\n\n",
            _frame(_chunk({"reasoning_content": " ok", "content": None})),
            _frame(_chunk({"content": "Three."})),
            _frame(_chunk({"content": ""}, "stop", usage=_usage(9, 4))),
            DONE,
        ]
    ),
    "openai",
    [_c("assistant", None, "Hmm"), _c(reasoning=" ok"), _c(content="Three."), _c(content="", finish="stop")],
    {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
)

PARALLEL_TOOLS = StreamCase(
    "openai-parallel-tool-calls",
    b"".join(
        [
            _frame(
                _chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    }
                )
            ),
            _frame(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})),
            _frame(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})),
            _frame(
                _chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": ""},
                            }
                        ]
                    }
                )
            ),
            _frame(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}]})),
            _frame(_chunk({}, "tool_calls")),
            DONE,
        ]
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
    b"".join(
        [
            _frame(
                _chunk(
                    {
                        "role": "assistant",
                        "tool_calls": {
                            "index": 0,
                            "id": "0",
                            "type": "function",
                            "function": {"name": "search", "arguments": '{"q'},
                        },
                    },
                    cid="",
                    obj="text_completion",
                ),
                space=False,
            ),
            _frame(
                _chunk(
                    {
                        "role": "assistant",
                        "tool_calls": {
                            "index": 0,
                            "id": "0",
                            "type": "function",
                            "function": {"name": None, "arguments": '": "x"}'},
                        },
                    },
                    cid="",
                    obj="text_completion",
                ),
                space=False,
            ),
            _frame(
                _chunk(
                    {"role": "assistant", "content": ""}, "eos_token", cid="", obj="text_completion", usage=_usage(8, 5)
                ),
                space=False,
            ),
        ]
    ),
    "tgi",
    [
        _c("assistant", None, None, ((0, True, "search", '{"q'),)),
        _c(tools=((0, False, None, '": "x"}'),)),
        _c(content="", finish="tool_calls"),
    ],
    {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13},
)

IDENTICAL_CHUNKS = StreamCase(
    "identical-chunks-pass-through",
    b"".join(
        [_frame(_chunk({"role": "assistant", "content": "na"}))]
        + [_frame(_chunk({"content": "na"})) for _ in range(60)]
        + [_frame(_chunk({}, "stop", usage=_usage(2, 61))), DONE]
    ),
    "openai",
    [_c("assistant", "na")] + [_c(content="na")] * 60 + [_c(finish="stop")],
    {"prompt_tokens": 2, "completion_tokens": 61, "total_tokens": 63},
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
