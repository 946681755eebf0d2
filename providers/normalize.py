"""Turn the small differences between upstream response bodies into OpenAI's shape.

Applied to every non-streamed chat response (it costs a few dict lookups): finish reasons mapped
to OpenAI's set, ``reasoning`` renamed ``reasoning_content``, tool-call arguments given as JSON
objects serialized, missing tool-call ids synthesized, an empty response id replaced.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

FINISH_REASONS: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "function_call",
    "content_filter": "content_filter",
    "eos_token": "stop",
    "eos": "stop",
    "stop_sequence": "stop",
    "end_turn": "stop",
    "max_tokens": "length",
    "model_length": "length",
    "tool_use": "tool_calls",
}


def map_finish_reason(reason: Any) -> str | None:
    """OpenAI's finish reason for an upstream's spelling (unknown values pass through)."""
    if reason is None:
        return None
    return FINISH_REASONS.get(str(reason), str(reason))


def new_id(prefix: str) -> str:
    """A random id in OpenAI's style: ``chatcmpl-…``, ``call_…``."""
    return prefix + os.urandom(12).hex()


def arguments_to_str(arguments: Any) -> str:
    """Tool-call arguments as the JSON string OpenAI sends (older TGI sends an object)."""
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return orjson.dumps(arguments).decode()


def normalize_tool_calls(tool_calls: Any) -> list[dict[str, Any]] | None:
    """A list of OpenAI tool calls with string arguments, ids and ``type``."""
    if not tool_calls:
        return None
    if isinstance(tool_calls, dict):
        tool_calls = [tool_calls]
    out = []
    seen: set[str] = set()
    for i, call in enumerate(tool_calls):
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        call_id = call.get("id")
        if not call_id or call_id in seen or call_id == str(i) or call_id == "0":
            call_id = new_id("call_")
        seen.add(call_id)
        out.append(
            {
                "id": call_id,
                "type": call.get("type") or "function",
                "function": {"name": fn.get("name"), "arguments": arguments_to_str(fn.get("arguments"))},
            }
        )
    return out or None


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    if "reasoning" in message and "reasoning_content" not in message:
        reasoning = message.pop("reasoning")
        if reasoning is not None:
            message["reasoning_content"] = reasoning
    if "tool_calls" in message:
        message["tool_calls"] = normalize_tool_calls(message["tool_calls"])
        if message["tool_calls"] is None:
            del message["tool_calls"]
    message.setdefault("role", "assistant")
    message.setdefault("content", None)
    return message


def normalize_chat_completion(data: dict[str, Any], fallback_model: str) -> dict[str, Any]:
    """Make an upstream chat completion body OpenAI-shaped, in place; returns it."""
    if not data.get("id"):
        data["id"] = new_id("chatcmpl-")
    data["object"] = "chat.completion"
    if not isinstance(data.get("created"), int):
        data["created"] = int(time.time())
    if not data.get("model"):
        data["model"] = fallback_model
    for choice in data.get("choices") or ():
        message = choice.get("message")
        if not isinstance(message, dict):
            message = choice["message"] = {"role": "assistant", "content": choice.pop("text", None)}
        normalize_message(message)
        reason = map_finish_reason(choice.get("finish_reason"))
        if message.get("tool_calls") and reason in ("stop", None):
            reason = "tool_calls"
        choice["finish_reason"] = reason
    return data
