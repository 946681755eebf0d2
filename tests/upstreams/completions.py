"""Legacy text completions (``/completions``) as OpenAI-compatible servers answer them.

The answer continues each prompt with its words echoed back (``max_tokens`` words at most, 16 when
unset, as OpenAI's default): deterministic, so tests can assert on the text and the usage.
"""

from __future__ import annotations

import time
from typing import Any

from .base import request_id
from .chat import BadRequest, count_words

DEFAULT_MAX_TOKENS = 16


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    raise BadRequest("prompt must be a string or a list of strings", "prompt")


def text_completion(body: Any, model: str) -> dict[str, Any]:
    """OpenAI's ``text_completion`` object for ``body``; raises :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    prompts = _prompts(body)
    n = body.get("n") or 1
    limit = body.get("max_tokens") or DEFAULT_MAX_TOKENS
    choices, completion_tokens = [], 0
    for i, prompt in enumerate(prompts):
        words = prompt.split()
        for j in range(n):
            said = words[:limit]
            text = " " + " ".join(said)
            completion_tokens += len(said)
            finish = "length" if len(words) >= limit else "stop"
            choices.append({"text": text, "index": i * n + j, "logprobs": None, "finish_reason": finish})
    prompt_tokens = sum(count_words(p) for p in prompts)
    return {
        "id": "cmpl-" + request_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
