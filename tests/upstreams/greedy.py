"""An OpenAI-compatible upstream that bills the way real ones do when nobody checks.

- ``prompt_overhead``: tokens added to every prompt count (chat templates, injected system prompts:
  gpt-oss adds ~70, so a one-word prompt is billed at 100 tokens);
- ``honour_max_tokens``: ``max_tokens`` wins over ``max_completion_tokens`` (TGI does), and the model
  always writes up to the cap it honours (the most expensive answer allowed);
- the base class's ``stream_delay`` (slow streams), ``fail_rate`` / ``enqueue`` (faults on demand).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .base import RECORD
from .openai_compat import OpenAICompatUpstream


class GreedyUpstream(OpenAICompatUpstream):
    """See the module docstring. ``billed`` holds (prompt, completion) of every answer it sent."""

    family = "openai"

    def __init__(self, *, prompt_overhead: int = 0, honour_max_tokens: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.prompt_overhead = prompt_overhead
        self.honour_max_tokens = honour_max_tokens
        self.billed: list[dict[str, int]] = []
        self.answer_delay = 0.0  # seconds each chat request is held (counted as in flight)
        self.in_flight = 0
        self.most_in_flight = 0
        self.spans: list[tuple[float, float]] = []  # (arrived, answered) of each chat request, monotonic

    def _cap(self, body: dict[str, Any]) -> int | None:
        first = ("max_tokens", "max_completion_tokens") if self.honour_max_tokens else ("max_completion_tokens",)
        for name in (*first, "max_tokens"):
            value = body.get(name)
            if type(value) is int and value > 0:
                return value
        return None

    async def chat(
        self, request: web.Request, *, model: str | None = None, headers: Mapping[str, str] | None = None
    ) -> web.StreamResponse:
        record = request[RECORD]
        body = record.json
        if isinstance(body, dict) and not body.get("tools"):
            cap = self._cap(body)
            if cap is not None:  # answer with exactly as many tokens as the honoured cap allows
                planned = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}
                planned["fake_chunks"] = cap
                request[RECORD] = dataclasses.replace(record, json=planned)
        arrived = time.monotonic()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)
            return await super().chat(request, model=model, headers=headers)
        finally:
            self.in_flight -= 1
            self.spans.append((arrived, time.monotonic()))

    def usage_extra(self, model: str, usage: dict[str, Any]) -> dict[str, Any]:
        prompt = int(usage["prompt_tokens"]) + self.prompt_overhead
        out = {**usage, "prompt_tokens": prompt, "total_tokens": prompt + int(usage["completion_tokens"])}
        self.billed.append({"prompt_tokens": prompt, "completion_tokens": int(usage["completion_tokens"])})
        return out
