"""Rebuild a whole ``ChatCompletion`` from the chunks of a stream (LiteLLM's ``stream_chunk_builder``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tokens import count_completion, count_messages
from ..types import ChatCompletion

# Delta fields whose text arrives in pieces, joined into the message field of the same name.
_TEXT_FIELDS = ("content", "reasoning_content", "refusal")


class _ChoiceParts:
    """One choice's pieces across chunks."""

    __slots__ = ("finish", "logprobs", "role", "text", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.text: dict[str, list[str]] = {name: [] for name in _TEXT_FIELDS}
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.logprobs: dict[str, Any] | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("role"):
            self.role = delta["role"]
        for name, pieces in self.text.items():
            if delta.get(name):
                pieces.append(delta[name])
        for call in delta.get("tool_calls") or ():
            tool = self.tools.setdefault(call.get("index", 0), {"id": None, "name": None, "args": []})
            fn = call.get("function") or {}
            tool["id"] = call.get("id") or tool["id"]
            tool["name"] = fn.get("name") or tool["name"]
            if fn.get("arguments"):
                tool["args"].append(fn["arguments"])
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = self.logprobs = self.logprobs or {"content": None, "refusal": None}
            for key in ("content", "refusal"):
                if logprobs.get(key):
                    merged[key] = (merged[key] or []) + list(logprobs[key])

    def choice(self, index: int) -> dict[str, Any]:
        text = {name: "".join(pieces) for name, pieces in self.text.items()}
        message: dict[str, Any] = {"role": self.role, "content": text["content"] or None}
        if text["refusal"]:
            message["refusal"] = text["refusal"]
        if text["reasoning_content"]:
            message["reasoning_content"] = text["reasoning_content"]
        if self.tools:
            message["tool_calls"] = [
                {"id": t["id"], "type": "function", "function": {"name": t["name"], "arguments": "".join(t["args"])}}
                for _, t in sorted(self.tools.items())
            ]
        return {"finish_reason": self.finish, "index": index, "logprobs": self.logprobs, "message": message}


def _as_dict(chunk: Any) -> dict[str, Any]:
    if isinstance(chunk, dict):
        return chunk
    return chunk.model_dump()  # type: ignore[no-any-return]


def stream_chunk_builder(chunks: Iterable[Any], messages: list[dict[str, Any]] | None = None) -> ChatCompletion:
    """Rebuild the full ``ChatCompletion`` from a stream's chunks (LiteLLM's name).

    Content, reasoning, tool calls with complete arguments, finish reason and usage. When no chunk
    carries usage and ``messages`` is given, usage is counted locally.

    Example::

        chunks = list(completion(model=..., messages=msgs, stream=True))
        full = stream_chunk_builder(chunks)
    """
    first: dict[str, Any] | None = None
    usage: Any = None
    choices: dict[int, _ChoiceParts] = {}
    for raw in chunks:
        chunk = _as_dict(raw)
        if first is None:
            first = chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            parts = choices.get(index)
            if parts is None:
                parts = choices[index] = _ChoiceParts()
            parts.add(choice)
    if first is None:
        raise ValueError("stream_chunk_builder needs at least one chunk")
    out_choices = [choices[index].choice(index) for index in sorted(choices)]
    if usage is None and messages is not None:
        prompt = count_messages(messages)
        completion_tokens = sum(count_completion(c["message"]) for c in out_choices)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }
    data = {
        "id": first.get("id"),
        "choices": out_choices,
        "created": first.get("created"),
        "model": first.get("model"),
        "object": "chat.completion",
        "system_fingerprint": first.get("system_fingerprint"),
        "usage": usage,
    }
    return ChatCompletion.model_validate(data)
