"""One correct OpenAI text-completion stream (``/v1/completions``, ``stream: true``) from every upstream.

:class:`TextChunkNormalizer` turns upstream events into ``TextCompletion`` chunks as OpenAI sends them:
each choice's text as it arrives, exactly one finish reason per choice in OpenAI's names (TGI's
``eos_token``/``stop_sequence`` become ``stop``, its empty ``""`` while generating becomes ``null``), and
exactly one usage: the upstream's own when it sent one, else counted locally (``usage_estimated``), on a
final ``choices: []`` chunk when the caller asked with ``stream_options={"include_usage": True}``. A
stream that ends without a finish reason and without ``[DONE]`` was cut short: :class:`APIConnectionError`.

Example::

    norm = TextChunkNormalizer(target, helper, prompts=["Once upon a"], include_usage=True)
    for payload in SSEDecoder().feed(raw):
        for chunk in norm.feed(payload): ...
    for chunk in norm.finish(saw_eof=True): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from providers.frames import error_event_body, error_text_body, is_error_event, load_frame
from providers.normalize import map_finish_reason

from ..types import CompletionUsage, TextCompletion
from .base import NormalizerBase

if TYPE_CHECKING:
    from providers.spec import Target
    from providers.tasks.base import TaskHelper


class TextChunkNormalizer(NormalizerBase):
    """Upstream SSE payloads of a text completion in, ``TextCompletion`` chunks out (see the module doc)."""

    id_prefix = "cmpl-"

    def __init__(
        self,
        target: Target,
        helper: TaskHelper,
        *,
        prompts: list[str],
        include_usage: bool,
        secrets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(target, helper, include_usage=include_usage, secrets=secrets)
        self.prompts = prompts
        self._texts: dict[int, list[str]] = {}  # per choice index: the text so far
        self._finished: set[int] = set()

    # --- reading
    def feed(self, payload: bytes) -> list[TextCompletion]:
        """Chunks produced by one SSE data payload (raises the typed error for an error frame)."""
        if self.done:
            return []
        if payload.strip() == b"[DONE]":
            self.done = True
            return []
        if not payload.strip():
            return []
        try:
            event = load_frame(payload)
        except orjson.JSONDecodeError:
            if is_error_event(payload):
                raise self._error(error_text_body(payload)) from None
            raise self._unprocessable("malformed JSON in a stream event", payload) from None
        if not isinstance(event, dict):
            raise self._unprocessable("a stream event is not a JSON object", payload)
        chunk = self._event(event)
        return [] if chunk is None else [chunk]

    def feed_document(self, body: bytes) -> list[TextCompletion]:
        """A whole JSON answer where a stream was expected: an error, or a completion as one chunk."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not (data.get("error") or isinstance(data.get("choices"), list)):
            raise self._unprocessable(
                "expected an event stream, got a JSON document that is neither an error nor a completion", body
            )
        chunk = self._event(data)
        self.done = True
        return [] if chunk is None else [chunk]

    def _event(self, event: dict[str, Any]) -> TextCompletion | None:
        if event.get("error") or "error_message" in event:
            raise self._error(error_event_body(event) if event.get("error") else event)
        self._note(event)
        choices = []
        for pos, choice in enumerate(event.get("choices") or ()):
            if isinstance(choice, dict):
                choices.append(self._choice(choice, pos))
        return self._chunk(choices, None) if choices else None

    def _choice(self, choice: dict[str, Any], pos: int) -> dict[str, Any]:
        index = choice.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else pos
        text = choice.get("text")
        text = text if isinstance(text, str) else ""
        reason = map_finish_reason(choice.get("finish_reason") or None)  # TGI: "" until the end
        self._texts.setdefault(index, []).append(text)
        if reason is not None:
            self._finished.add(index)
        return {"index": index, "text": text, "logprobs": choice.get("logprobs"), "finish_reason": reason}

    def _chunk(self, choices: list[dict[str, Any]], usage: CompletionUsage | None) -> TextCompletion:
        return TextCompletion.model_validate(
            {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model or self.target.model,
                "choices": choices,
                "usage": usage,
            }
        )

    # --- the end
    def finish(self, *, saw_eof: bool) -> list[TextCompletion]:
        """Closing chunks (a missing finish reason, the usage chunk); raises if the stream was cut."""
        out: list[TextCompletion] = []
        unfinished = sorted(set(self._texts) - self._finished)
        if unfinished or not self._texts:
            if not self.done:
                raise self._cut("no finish reason" if self._texts else "no data")
            self._ensure_id()
            closing = [{"index": i, "text": "", "finish_reason": "stop"} for i in unfinished or [0]]
            self._finished.update(unfinished or [0])
            out.append(self._chunk(closing, None))
        self.final_usage = self._final_usage()
        if self.include_usage:
            out.append(self._chunk([], self.final_usage))
        return out

    def _counted_usage(self) -> tuple[int, int]:
        """The prompts and the text so far, counted locally."""
        from ..tokens import count_text

        prompt = sum(count_text(p) for p in self.prompts)
        return prompt, sum(count_text("".join(parts)) for parts in self._texts.values())
