"""Input rows: OpenAI Batch lines or bare request bodies, read one line at a time.

A line is either an OpenAI Batch request ``{"custom_id", "method", "url", "body"}`` or a bare body
(``messages`` for chat, ``input`` for embeddings; its ``custom_id`` is ``line-<n>`` unless it carries
one). Rows are keyed by their 1-based line number; blank lines are not rows. Nothing reads the whole
file into memory.

Example::

    for line_no, raw in iter_lines("requests.jsonl"):
        row = parse_row(raw, line_no)   # a Row, or a BadRow saying what is wrong with that line
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/embeddings": "embeddings",
}
# Call settings that belong to the job's config, not to a row (they would bypass its limits or keys).
CALL_LEVEL = (
    "api_key",
    "api_base",
    "base_url",
    "timeout",
    "extra_headers",
    "fallbacks",
    "priced_only",
    "client",
    "budget",
    "num_retries",
)
_CALL_LEVEL = frozenset(CALL_LEVEL)
# A batch row is answered whole: streaming flags do not apply to it; OpenAI-platform-only fields
# (stored completions, tiers) mean nothing to other providers.
_DROPPED = ("stream", "stream_options", "store", "metadata", "service_tier")
_DROPPED_SET = frozenset(_DROPPED)


@dataclass(slots=True)
class Row:
    line: int  # 1-based line number in the input
    custom_id: str
    endpoint: str  # "chat" | "embeddings"
    body: dict[str, Any]


@dataclass(slots=True)
class BadRow:
    line: int
    custom_id: str  # the line's own custom_id when it could be read, else line-<n>
    endpoint: str
    message: str


class SeenIds:
    """The custom_ids read so far, as 8-byte digests (~60 bytes a row, not the ids themselves)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def repeated(self, custom_id: str) -> bool:
        """Whether an earlier line used this custom_id (and remember it)."""
        digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
        if digest in self._seen:
            return True
        self._seen.add(digest)
        return False


INVALID_LINE = "invalid_line"  # the error code of a line that is not a valid request: never sent, never retried
FIX_LINE = (
    "; fix the line: it cannot succeed as it is, so --retry-failed does not send it again (this job's input "
    "cannot change: run the fixed lines as a new job)"
)


def invalid_line_message(row: Row | BadRow) -> str:
    """Why a line is recorded as an error (its own problem, or a custom_id an earlier line used), and what to do."""
    if isinstance(row, BadRow):
        return row.message + FIX_LINE
    return (
        f"line {row.line}: custom_id {row.custom_id!r} was already used by an earlier line; custom_ids must be unique"
        + FIX_LINE
    )


@dataclass(frozen=True, slots=True)
class InputFacts:
    """What identifies an input file: a resumed job refuses an input whose facts changed."""

    path: str
    size: int
    sha256: str
    rows: int  # non-blank lines


def scan_input(path: str | Path) -> InputFacts:
    """Hash the file and count its rows in one streaming pass."""
    digest = hashlib.sha256()
    size = rows = 0
    with open(path, "rb") as f:
        for raw in f:
            digest.update(raw)
            size += len(raw)
            if not raw.isspace():
                rows += 1
    return InputFacts(str(Path(path).resolve()), size, digest.hexdigest(), rows)


def iter_lines(path: str | Path, start_line: int = 1) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line, from ``start_line`` on."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number >= start_line and raw.strip():
                yield number, raw


def parse_row(raw: bytes, line: int) -> Row | BadRow:
    """One input line as a :class:`Row`, or a :class:`BadRow` whose message names the line and the fix."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return BadRow(
            line, f"line-{line}", "chat", f"line {line}: not valid JSON ({e}); each line must be one JSON object"
        )
    if not isinstance(obj, dict):
        return BadRow(line, f"line-{line}", "chat", f"line {line}: expected a JSON object, got {type(obj).__name__}")
    if "body" in obj or ("custom_id" in obj and "messages" not in obj and "input" not in obj):
        return _batch_request(obj, line)
    custom_id = obj.pop("custom_id") if "custom_id" in obj else f"line-{line}"
    if not isinstance(custom_id, str) or not custom_id:
        return BadRow(line, f"line-{line}", "chat", f"line {line}: custom_id must be a non-empty string")
    endpoint = _endpoint_of_body(obj)
    if endpoint is None:
        return BadRow(
            line,
            custom_id,
            "chat",
            f"line {line}: neither an OpenAI Batch request ({{custom_id, method, url, body}}) nor a request body "
            "(chat bodies have 'messages', embedding bodies have 'input')",
        )
    return _checked(Row(line, custom_id, endpoint, obj))


def _endpoint_of_body(body: dict[str, Any]) -> str | None:
    if "messages" in body:
        return "chat"
    if "input" in body:
        return "embeddings"
    return None


def _batch_request(obj: dict[str, Any], line: int) -> Row | BadRow:
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BadRow(line, f"line-{line}", "chat", f"line {line}: custom_id must be a non-empty string")
    body = obj.get("body")
    if not isinstance(body, dict):
        return BadRow(line, custom_id, "chat", f"line {line}: 'body' must be a JSON object (the request body)")
    method = obj.get("method", "POST")
    if method != "POST":
        return BadRow(line, custom_id, "chat", f"line {line}: method must be POST, got {method!r}")
    url = obj.get("url")
    if url is None:
        endpoint = _endpoint_of_body(body)
        if endpoint is None:
            return BadRow(line, custom_id, "chat", f"line {line}: no 'url' and the body has neither messages nor input")
    elif url in ENDPOINTS:
        endpoint = ENDPOINTS[url]
    else:
        return BadRow(
            line,
            custom_id,
            "chat",
            f"line {line}: url {url!r} is not supported; use /v1/chat/completions or /v1/embeddings",
        )
    return _checked(Row(line, custom_id, endpoint, body))


def _checked(row: Row) -> Row | BadRow:
    body = row.body
    if row.endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return BadRow(
                row.line,
                row.custom_id,
                row.endpoint,
                f"line {row.line}: 'messages' must be a non-empty list of message objects",
            )
    else:
        value = body.get("input")
        if not (isinstance(value, str) and value) and not (
            isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        ):
            message = f"line {row.line}: 'input' must be a non-empty string or list of non-empty strings"
            return BadRow(row.line, row.custom_id, row.endpoint, message)
    for key in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return BadRow(
                row.line,
                row.custom_id,
                row.endpoint,
                f"line {row.line}: {key} must be a positive integer, got {value!r}",
            )
    if not _CALL_LEVEL.isdisjoint(body):
        set_here = [k for k in CALL_LEVEL if k in body]
        return BadRow(
            row.line,
            row.custom_id,
            row.endpoint,
            f"line {row.line}: {', '.join(set_here)} cannot be set per row; set it on the candidate "
            "(params:) or in router_settings",
        )
    if not _DROPPED_SET.isdisjoint(body):
        for key in _DROPPED:
            body.pop(key, None)
    return row
