"""What the chat and the text-completion normalizers share: the stream's identity (id, created, model),
its usage (the upstream's own, else counted locally), its errors, and who served it.

Each task's normalizer adds how it reads choices and closes them (:mod:`.normalizer`, :mod:`.text`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from providers.errors import APIConnectionError, UnprocessableResponseError, error_from_stream_event, redact
from providers.frames import frame_usage
from providers.normalize import new_id

from ..types import CompletionUsage

if TYPE_CHECKING:
    from providers.spec import Target
    from providers.tasks.base import TaskHelper


class NormalizerBase:
    """The state and steps every normalizer shares; subclasses count their own usage (``_counted_usage``)."""

    id_prefix = "chatcmpl-"  # an id for streams whose upstream sent none (or an empty one)

    def __init__(self, target: Target, helper: TaskHelper, *, include_usage: bool, secrets: tuple[str, ...]) -> None:
        self.target = target
        self.include_usage = include_usage
        self.secrets = secrets
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.final_usage: CompletionUsage | None = None
        self.usage_estimated = False
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self._helper = helper

    def served_by(self, headers: Mapping[str, str]) -> str:
        """The provider that served, as the upstream's response headers say."""
        return self._helper.served_by(self.target, headers)

    # --- errors
    def _unprocessable(self, message: str, shown: bytes | None = None) -> UnprocessableResponseError:
        """The error for what no upstream should send, with its first bytes (secrets redacted) when given."""
        if shown is not None:
            message += f": {redact(shown[:200].decode('utf-8', 'replace'), self.secrets)!r}"
        return UnprocessableResponseError(message, provider=self.target.label, model=self.target.model)

    def _error(self, body: Mapping[str, Any]) -> Exception:
        """The typed error of an error frame inside the stream."""
        return error_from_stream_event(body, provider=self.target.label, model=self.target.model, secrets=self.secrets)

    def _cut(self, what: str) -> APIConnectionError:
        """The error of a stream that ended before the upstream said it was done."""
        return APIConnectionError(
            f"stream ended before completion ({what}; the connection closed early)",
            provider=self.target.label,
            model=self.target.model,
        )

    # --- identity and usage
    def _note(self, event: dict[str, Any]) -> None:
        """Learn the stream's id, creation time and model from its first events, and the latest usage."""
        if self.id is None:
            self.id = event.get("id") or new_id(self.id_prefix)  # TGI sends "" as its id
            created = event.get("created")
            self.created = created if isinstance(created, int) else int(time.time())
        if self.model is None and event.get("model"):
            self.model = event["model"]
        usage = frame_usage(event)  # top-level, or where an upstream puts it (under its own key)
        if usage is not None:
            self.usage = usage  # cumulative or final: the last one wins

    def _ensure_id(self) -> None:
        if self.id is None:
            self.id, self.created = new_id(self.id_prefix), int(time.time())

    def _counted_usage(self) -> tuple[int, int]:
        """Prompt and completion tokens counted locally."""
        raise NotImplementedError

    def partial_usage(self) -> dict[str, int]:
        """Counted locally: the prompt, and the answer so far (for a stream cut short)."""
        prompt, completion = self._counted_usage()
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _final_usage(self) -> CompletionUsage:
        if self.usage is not None:
            usage = dict(self.usage)
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            usage["prompt_tokens"], usage["completion_tokens"] = prompt, completion
            usage["total_tokens"] = int(usage.get("total_tokens") or prompt + completion)
            return CompletionUsage.model_validate(usage)
        self.usage_estimated = True
        prompt, completion = self._counted_usage()
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
