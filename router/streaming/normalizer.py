"""The chunk normalizer: upstream SSE payloads in, one correct OpenAI chunk stream out.

Role on the first delta, reasoning as ``reasoning_content``, tool-call deltas with stable index and
unique ids, exactly one finish reason (OpenAI's names), and exactly one usage — a final ``choices: []``
chunk, only when the caller asked for ``include_usage``. No I/O: :mod:`router.streaming.streams`
feeds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from providers.frames import error_event_body, error_text_body, is_error_event, load_frame
from providers.normalize import arguments_to_str, map_finish_reason, new_id
from providers.tasks import chat_helper

from ..tokens import count_completion, count_messages
from ..types import ChatCompletionChunk
from .base import NormalizerBase

if TYPE_CHECKING:
    from providers.spec import Target


class _ToolState:
    __slots__ = ("args", "id", "name", "upstream_id")

    def __init__(self, call_id: str, upstream_id: str | None, name: str | None) -> None:
        self.id = call_id
        self.upstream_id = upstream_id
        self.name = name
        self.args: list[str] = []


class _ChoiceState:
    __slots__ = ("content", "finished", "reasoning", "role_sent", "tool_index_map", "tools")

    def __init__(self) -> None:
        self.role_sent = False
        self.finished = False
        self.tools: dict[int, _ToolState] = {}
        self.tool_index_map: dict[int, int] = {}  # upstream index -> our index
        self.content: list[str] = []  # kept for local usage estimates only
        self.reasoning: list[str] = []

    def message(self) -> dict[str, Any]:
        """The answer so far, shaped like a message (for the shared usage estimator)."""
        return {
            "content": "".join(self.content),
            "reasoning_content": "".join(self.reasoning),
            "tool_calls": [{"function": {"name": t.name, "arguments": "".join(t.args)}} for t in self.tools.values()],
        }


class ChunkNormalizer(NormalizerBase):
    """Upstream SSE payloads in, normalized ``ChatCompletionChunk``s out.

    Example::

        norm = ChunkNormalizer(target, include_usage=True, messages=msgs)
        for payload in SSEDecoder().feed(raw):
            for chunk in norm.feed(payload): ...
        for chunk in norm.finish(saw_eof=True): ...
    """

    def __init__(
        self,
        target: Target,
        *,
        include_usage: bool,
        messages: list[dict[str, Any]],
        secrets: tuple[str, ...] = (),
        answers: int = 0,
    ) -> None:
        helper = chat_helper(target)
        super().__init__(target, helper, include_usage=include_usage, secrets=secrets)
        # One answer asked for: every choice is choice 0, however the upstream numbers them (some older
        # servers number each chunk by its token). 0: unknown, indices kept.
        self.one_answer = answers == 1
        self.messages = messages
        self.system_fingerprint: str | None = None
        self._choices: dict[int, _ChoiceState] = {}
        self._used_ids: set[str] = set()
        self._normalize_chunk = helper.normalize_chunk

    # --- parsing
    def _load(self, payload: bytes) -> list[dict[str, Any]]:
        try:
            event = load_frame(payload)
        except orjson.JSONDecodeError:
            if is_error_event(payload):
                return [error_text_body(payload)]
            # Some servers omit the blank line between events: one JSON object per line.
            if b"\n" in payload:
                return [obj for line in payload.split(b"\n") if line.strip() for obj in self._load(line)]
            raise self._unprocessable("malformed JSON in a stream event", payload) from None
        if not isinstance(event, dict):
            raise self._unprocessable(f"a stream event is {type(event).__name__}, expected a JSON object")
        return [error_event_body(event) if is_error_event(payload) else event]

    def feed(self, payload: bytes) -> list[ChatCompletionChunk]:
        """Chunks produced by one SSE data payload (raises the typed error for an error frame)."""
        if self.done:
            return []
        if payload == b"[DONE]" or payload == b" [DONE]":
            self.done = True
            return []
        if not payload.strip() and not is_error_event(payload):
            return []
        out = []
        for event in self._load(payload):
            chunk = self._event(event)
            if chunk is not None:
                out.append(chunk)
        return out

    def feed_document(self, body: bytes) -> list[ChatCompletionChunk]:
        """A whole JSON answer where a stream was expected: an error, or a completion turned into chunks."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and ("detail" in data and "choices" not in data):
            data = {"error": data}
        if not isinstance(data, dict) or not (data.get("error") or isinstance(data.get("choices"), list)):
            raise self._unprocessable(
                "expected an event stream, got a JSON document that is neither an error nor a completion", body
            )
        choices = []
        for pos, choice in enumerate(data.get("choices") or ()):
            message = choice.get("message") or {}
            delta = {k: message.get(k) for k in ("role", "content", "reasoning_content", "reasoning", "refusal")}
            calls = message.get("tool_calls")
            if calls:
                delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(calls) if isinstance(call, dict)]
            finish, logprobs = choice.get("finish_reason"), choice.get("logprobs")
            choices.append(
                {"index": choice.get("index", pos), "delta": delta, "finish_reason": finish, "logprobs": logprobs}
            )
        chunk = self._event({**data, "choices": choices})
        self.done = True
        return [] if chunk is None else [chunk]

    def _event(self, event: dict[str, Any]) -> ChatCompletionChunk | None:
        if event.get("error") or "error_message" in event:
            body = error_event_body(event) if event.get("error") else event  # status beside the error read too
            raise self._error(body)
        event = self._normalize_chunk(self.target, event)
        self._note(event)
        if self.system_fingerprint is None and event.get("system_fingerprint"):
            self.system_fingerprint = event["system_fingerprint"]
        choices = event.get("choices")
        if not choices:
            return None
        out_choices = []
        for pos, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            normalized = self._choice(choice, pos)
            if normalized is not None:
                out_choices.append(normalized)
        if not out_choices:
            return None
        return self._chunk(out_choices, None)

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> ChatCompletionChunk:
        data: dict[str, Any] = {
            "id": self.id,
            "choices": choices,
            "created": self.created,
            "model": self.model or self.target.model,
            "object": "chat.completion.chunk",
        }
        if self.system_fingerprint:
            data["system_fingerprint"] = self.system_fingerprint
        if usage is not None:
            data["usage"] = usage
        return ChatCompletionChunk.model_validate(data)

    def _choice(self, choice: dict[str, Any], pos: int) -> dict[str, Any] | None:
        index = 0 if self.one_answer else choice.get("index")
        if not isinstance(index, int):
            index = pos
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _ChoiceState()
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        out: dict[str, Any] = {}
        has_payload = False
        if not state.role_sent:
            out["role"] = delta.get("role") or "assistant"
            state.role_sent = True
            has_payload = True
        content = delta.get("content")
        if content is not None:
            out["content"] = content
            state.content.append(content)
            has_payload = True
        reasoning = delta.get("reasoning_content")
        if reasoning is None:
            reasoning = delta.get("reasoning")
        if reasoning:
            out["reasoning_content"] = reasoning
            state.reasoning.append(reasoning)
            has_payload = True
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            calls = self._tool_deltas(state, tool_calls)
            if calls:
                out["tool_calls"] = calls
                has_payload = True
        for key in ("refusal", "function_call"):
            if delta.get(key) is not None:
                out[key] = delta[key]
                has_payload = True
        finish = choice.get("finish_reason")
        finish_out = None
        if finish and not state.finished:
            finish_out = map_finish_reason(finish)
            if state.tools and finish_out == "stop":
                finish_out = "tool_calls"
            state.finished = True
            has_payload = True
        if not has_payload:
            return None
        result: dict[str, Any] = {"delta": out, "finish_reason": finish_out, "index": index}
        if choice.get("logprobs") is not None:
            result["logprobs"] = choice["logprobs"]
        return result

    def _good_upstream_id(self, call_id: Any) -> bool:
        return isinstance(call_id, str) and call_id not in ("", "0") and call_id not in self._used_ids

    def _tool_deltas(self, state: _ChoiceState, tool_calls: Any) -> list[dict[str, Any]]:
        if isinstance(tool_calls, dict):  # some older servers: one object instead of a list
            tool_calls = [tool_calls]
        out = []
        for pos, call in enumerate(tool_calls):
            if not isinstance(call, dict):
                continue
            up_index = call.get("index")
            if not isinstance(up_index, int):
                up_index = pos
            fn = call.get("function") or {}
            args = fn.get("arguments")
            args = args if isinstance(args, str) else arguments_to_str(args)
            up_id = call.get("id")
            index = state.tool_index_map.get(up_index)
            tool = state.tools.get(index) if index is not None else None
            if tool is not None and self._good_upstream_id(up_id) and tool.upstream_id != up_id:
                tool = None  # a new call reusing an upstream index: give it the next index
            if tool is None:
                index = len(state.tools)
                state.tool_index_map[up_index] = index
                call_id = up_id if isinstance(up_id, str) and self._good_upstream_id(up_id) else new_id("call_")
                self._used_ids.add(call_id)
                tool = state.tools[index] = _ToolState(call_id, up_id, fn.get("name"))
                out.append(
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": fn.get("name"), "arguments": args},
                    }
                )
                tool.args.append(args)
                continue
            delta_fn: dict[str, Any] = {"arguments": args}
            if tool.name is None and fn.get("name"):
                tool.name = delta_fn["name"] = fn["name"]
            if args or "name" in delta_fn:
                out.append({"index": index, "function": delta_fn})
                tool.args.append(args)
        return out

    # --- the end
    def finish(self, *, saw_eof: bool) -> list[ChatCompletionChunk]:
        """Closing chunks (a missing finish reason, the usage chunk); raises if the stream was cut."""
        out: list[ChatCompletionChunk] = []
        unfinished = [i for i, s in self._choices.items() if not s.finished]
        if unfinished or not self._choices:
            if not self.done:
                raise self._cut("no finish reason" if self._choices else "no data")
            self._ensure_id()
            closing = []
            for i in unfinished or [0]:
                state = self._choices.setdefault(i, _ChoiceState())
                state.finished = True
                delta = {} if state.role_sent else {"role": "assistant"}
                state.role_sent = True
                closing.append({"delta": delta, "finish_reason": "tool_calls" if state.tools else "stop", "index": i})
            out.append(self._chunk(closing, None))
        self.final_usage = self._final_usage()
        if self.include_usage:
            out.append(self._chunk([], self.final_usage.model_dump(exclude_none=True)))
        return out

    def _counted_usage(self) -> tuple[int, int]:
        """Prompt and completion tokens counted locally."""
        prompt = count_messages(self.messages)
        return prompt, sum(count_completion(s.message()) for s in self._choices.values())
