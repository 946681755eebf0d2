"""Legacy text completions (``/completions``) as OpenAI-compatible servers answer them.

The answer continues each prompt with its words echoed back (``max_tokens`` words at most, 16 when
unset, as OpenAI's default): deterministic, so tests can assert on the text and the usage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

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


@dataclass(frozen=True)
class TextStreamStyle:
    """How a server spells a streamed text completion.

    OpenAI (and vLLM, DeepInfra): ``data: {...}`` frames, ``finish_reason: null`` until the last text, the
    usage on a final ``choices: []`` frame only with ``stream_options.include_usage``, then ``[DONE]``.
    TGI: ``finish_reason: ""`` until the last token, then ``eos_token``/``length``, an empty ``id``, no usage.
    ``cut_after``: close the connection after that many text frames (no finish, no ``[DONE]``).
    """

    pending_reason: str | None = None
    stop_reason: str = "stop"
    usage: bool = True
    cut_after: int | None = None


OPENAI_TEXT_STREAM = TextStreamStyle()
TGI_TEXT_STREAM = TextStreamStyle(pending_reason="", stop_reason="eos_token", usage=False)


def text_completion_frames(body: dict[str, Any], result: dict[str, Any], style: TextStreamStyle) -> list[bytes]:
    """``result`` (a whole text completion) as the SSE frames a server streams: one frame per word of each
    choice, then each choice's finish, then the usage when asked (and the style sends it), then ``[DONE]``."""
    envelope = {k: result[k] for k in ("id", "object", "created", "model")}
    frames: list[dict[str, Any]] = []
    for choice in result["choices"]:
        words = choice["text"].split(" ")[1:]  # the answer is " w1 w2 ...": one frame per " w"
        for word in words:
            text_choice = {"index": choice["index"], "text": " " + word, "logprobs": None}
            frames.append({**envelope, "choices": [{**text_choice, "finish_reason": style.pending_reason}]})
    if style.cut_after is not None:
        return [b"data: " + orjson.dumps(f) + b"\n\n" for f in frames[: style.cut_after]]
    for choice in result["choices"]:
        reason = style.stop_reason if choice["finish_reason"] == "stop" else choice["finish_reason"]
        frames.append({**envelope, "choices": [{"index": choice["index"], "text": "", "finish_reason": reason}]})
    options = body.get("stream_options")
    if style.usage and isinstance(options, dict) and options.get("include_usage"):
        frames.append({**envelope, "choices": [], "usage": result["usage"]})
    return [b"data: " + orjson.dumps(f) + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]
