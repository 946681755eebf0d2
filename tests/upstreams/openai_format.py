"""OpenAI-shaped chat completions and SSE chunks, with the per-family variations as a ``Flavor``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .chat import REASONING_TEXT, ChatPlan, ToolCall

Dumps = Callable[[Any], bytes]
USAGE_MODES = ("separate", "finish", "cumulative", "none")
DONE_FRAME = b"data: [DONE]\n\n"
FRAMES_PER_WRITE = 256


def completion_json(
    content: str, usage: tuple[int, int] | None = None, *, cid: str = "x", model: str = "m"
) -> dict[str, Any]:
    """A whole chat completion with one assistant message (finish ``stop``) and, given (prompt, completion) tokens,
    its usage: a scripted upstream answer."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if usage is not None:
        prompt, completion = usage
        body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return body


def _identity(usage: dict[str, Any]) -> dict[str, Any]:
    return usage


@dataclass(frozen=True)
class Flavor:
    """How one family spells OpenAI-style chat output.

    ``usage_mode``: ``separate`` (final ``choices: []`` chunk, only with include_usage), ``finish``
    (usage on the finish chunk), ``cumulative`` (growing usage on every chunk) or ``none``.
    ``legacy_tools``: TGI < 3.2 tool calls (object arguments, one object per delta, id "0").
    """

    data_prefix: bytes = b"data: "
    chunk_object: str = "chat.completion.chunk"
    usage_mode: str = "separate"
    usage_null: bool = False
    done: bool = True
    stop_reason: str = "stop"
    tools_reason: str = "tool_calls"
    role_every_chunk: bool = False
    fingerprint: str | None = None
    legacy_tools: bool = False


def split_arguments(arguments: str) -> list[str]:
    """Split a JSON string into at least three fragments (about 12 characters each)."""
    count = max(3, len(arguments) // 12)
    size = max(1, -(-len(arguments) // count))
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


@dataclass
class Render:
    """Formats one ``ChatPlan`` as a completion or as SSE frames."""

    plan: ChatPlan
    flavor: Flavor
    model: str
    cid: str
    created: int
    usage_hook: Callable[[dict[str, Any]], dict[str, Any]] = field(default=_identity)

    # ----------------------------------------------------------------- shared
    @property
    def finish_reason(self) -> str:
        """The finish reason in this family's spelling."""
        reason = self.plan.finish_reason
        if reason == "stop":
            return self.flavor.stop_reason
        if reason == "tool_calls":
            return self.flavor.tools_reason
        return reason

    def final_usage(self) -> dict[str, Any]:
        """The complete usage object (with family extras such as ``estimated_cost``)."""
        return self.usage_hook(self.plan.usage())

    def _calls(self) -> list[ToolCall]:
        return self.plan.tool_calls[:1] if self.flavor.legacy_tools else self.plan.tool_calls

    def _envelope(self, obj: str) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "id": self.cid,
            "object": obj,
            "created": self.created,
            "model": self.model,
        }
        if self.flavor.fingerprint is not None:
            envelope["system_fingerprint"] = self.flavor.fingerprint
        return envelope

    # ----------------------------------------------------------------- non-stream
    def message(self) -> dict[str, Any]:
        """The assistant message of a non-stream completion."""
        message: dict[str, Any] = {"role": "assistant", "content": self.plan.content}
        if self.plan.reasoning_field:
            message[self.plan.reasoning_field] = REASONING_TEXT
        calls = self._calls()
        if calls and self.flavor.legacy_tools:
            message["tool_calls"] = [
                {
                    "id": "0",
                    "type": "function",
                    "function": {
                        "description": None,
                        "name": call.name,
                        "arguments": orjson.loads(call.arguments),
                    },
                }
                for call in calls
            ]
        elif calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ]
        return message

    def completion(self) -> dict[str, Any]:
        """The whole non-stream response body."""
        body = self._envelope("chat.completion")
        body["choices"] = [
            {"index": 0, "message": self.message(), "logprobs": None, "finish_reason": self.finish_reason}
        ]
        body["usage"] = self.final_usage()
        return body

    # ----------------------------------------------------------------- stream
    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One ``chat.completion.chunk`` with a single choice."""
        chunk = self._envelope(self.flavor.chunk_object)
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if usage is not None:
            chunk["usage"] = usage
        elif self.flavor.usage_null:
            chunk["usage"] = None
        return chunk

    def _tool_deltas(self) -> Iterator[dict[str, Any]]:
        legacy = self.flavor.legacy_tools
        for index, call in enumerate(self._calls()):
            first: dict[str, Any] = {
                "index": index,
                "id": "0" if legacy else call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield {"tool_calls": first if legacy else [first]}
            for fragment in split_arguments(call.arguments):
                if legacy:
                    later: dict[str, Any] = {
                        "index": index,
                        "id": "0",
                        "type": "function",
                        "function": {"name": None, "arguments": fragment},
                    }
                    yield {"tool_calls": later}
                else:
                    yield {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}

    def deltas(self) -> Iterator[tuple[dict[str, Any], int]]:
        """Each delta with the number of content pieces produced so far."""
        plan = self.plan
        if plan.reasoning_field:
            for piece in plan.reasoning:
                yield {plan.reasoning_field: piece}, 0
        if plan.tool_calls:
            for delta in self._tool_deltas():
                yield delta, 0
            return
        for produced, piece in enumerate(plan.pieces, 1):
            yield {"content": piece}, produced

    def delta_chunk(self, delta: dict[str, Any], ordinal: int, produced: int) -> dict[str, Any]:
        """The chunk for the ``ordinal``-th delta (role on the first one, or on all for TGI)."""
        if ordinal == 0 or self.flavor.role_every_chunk:
            delta = {"role": "assistant", **delta}
        usage = self.plan.usage(produced) if self.flavor.usage_mode == "cumulative" else None
        return self.chunk(delta, None, usage)

    def tail_chunks(self, started: bool) -> Iterator[dict[str, Any]]:
        """The finish chunk and, for ``separate`` usage with include_usage, the usage chunk."""
        mode = self.flavor.usage_mode
        delta: dict[str, Any] = {"role": "assistant"} if not started or self.flavor.role_every_chunk else {}
        usage = self.final_usage() if mode in ("finish", "cumulative") else None
        yield self.chunk(delta, self.finish_reason, usage)
        if mode == "separate" and self.plan.include_usage:
            final = self._envelope(self.flavor.chunk_object)
            final["choices"] = []
            final["usage"] = self.final_usage()
            yield final

    def chunks(self) -> Iterator[dict[str, Any]]:
        """Every chunk of the stream, in order (without ``[DONE]``)."""
        ordinal = 0
        for ordinal, (delta, produced) in enumerate(self.deltas(), 1):
            yield self.delta_chunk(delta, ordinal - 1, produced)
        yield from self.tail_chunks(started=ordinal > 0)

    def frame(self, chunk: Any, dumps: Dumps) -> bytes:
        """One SSE event."""
        return self.flavor.data_prefix + dumps(chunk) + b"\n\n"

    def writes(self, dumps: Dumps) -> list[bytes]:
        """The socket writes of the stream: one frame per write, or batched for ``fake_chunks``."""
        fast = self.plan.fake_chunks is not None and not self.plan.tool_calls
        if fast and self.flavor.usage_mode != "cumulative":
            return self._fast_writes(dumps)
        frames = [self.frame(chunk, dumps) for chunk in self.chunks()]
        if self.flavor.done:
            frames.append(DONE_FRAME)
        if self.plan.fake_chunks is None:
            return frames
        return [b"".join(frames[i : i + FRAMES_PER_WRITE]) for i in range(0, len(frames), FRAMES_PER_WRITE)]

    def _fast_writes(self, dumps: Dumps) -> list[bytes]:
        """Prebuilt frames for the benchmark helper: N identical ``"tok "`` chunks, batched."""
        plan = self.plan
        count = plan.fake_chunks or 0
        field_name = plan.reasoning_field
        head = (
            [self.frame(self.delta_chunk({field_name: piece}, i, 0), dumps) for i, piece in enumerate(plan.reasoning)]
            if field_name
            else []
        )
        writes: list[bytes] = []
        if count:
            ordinal = len(head)
            first = self.frame(self.delta_chunk({"content": "tok "}, ordinal, 1), dumps)
            rest = self.frame(self.delta_chunk({"content": "tok "}, ordinal + 1, 2), dumps)
            writes.append(b"".join([*head, first]))
            full, remainder = divmod(count - 1, FRAMES_PER_WRITE)
            batch = rest * FRAMES_PER_WRITE
            writes.extend([batch] * full)
            if remainder:
                writes.append(rest * remainder)
        elif head:
            writes.append(b"".join(head))
        tail = b"".join(self.frame(chunk, dumps) for chunk in self.tail_chunks(started=bool(head) or count > 0))
        writes.append(tail + DONE_FRAME if self.flavor.done else tail)
        return writes
