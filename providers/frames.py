"""One upstream stream frame, read as the upstream meant it (no I/O; used by the chunk normalizer).

- An SSE ``event: error`` frame is an error, whatever its data looks like: a JSON object with or
  without an ``error`` key (Groq: ``{"error": {"message": ..., "status_code": 400}}``), or plain text.
  The status inside it picks the typed error; a frame without one stays a server-side error.
- Usage is top-level ``usage`` or, where an upstream puts it elsewhere, ``x_groq.usage`` (Groq, on
  the last chunk of some streams).
"""

from __future__ import annotations

from typing import Any

import orjson

from .sse import ErrorEventData

_STATUS_KEYS = ("http_status_code", "status_code", "status", "code")


def load_frame(payload: bytes) -> Any:
    """The JSON of one SSE data payload (an ``event: error`` payload included).

    Raises ``orjson.JSONDecodeError`` when it is not JSON.
    """
    if type(payload) is not bytes:  # orjson takes exact bytes only; a view costs no copy
        return orjson.loads(memoryview(payload))
    return orjson.loads(payload)


def is_error_event(payload: bytes) -> bool:
    """True for the data of an SSE ``event: error`` frame."""
    return isinstance(payload, ErrorEventData)


def error_event_body(event: Any) -> dict[str, Any]:
    """An error frame's JSON as an error body, ``{"error": ...}``, with its HTTP status where the
    upstream put one (inside the error object or beside it). Without a status it stays a server error.
    """
    if not isinstance(event, dict):
        return {"error": {"message": orjson.dumps(event).decode()}}
    err = event.get("error")
    if isinstance(err, dict):
        status = _status_of(err) or _status_of(event)
        if status is not None and status not in (err.get("http_status_code"), err.get("status_code")):
            return {**event, "error": {**err, "status_code": status}}
        return event
    if isinstance(err, str) and err:
        status = _status_of(event)
        # Without a status, keep the frame as sent: its other keys (TGI's error_type) still classify it.
        return {**event, "error": {"message": err, "status_code": status}} if status is not None else event
    status = _status_of(event)
    return {"error": event if status is None else {**event, "status_code": status}}


def error_text_body(payload: bytes) -> dict[str, Any]:
    """An ``event: error`` frame whose data is not JSON: its text is the message."""
    text = bytes(payload).decode("utf-8", "replace").strip()
    return {"error": {"message": text[:2000] or "the upstream sent an empty error event"}}


def _status_of(event: dict[str, Any]) -> int | None:
    for key in _STATUS_KEYS:
        value = event.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
            return value
    return None


def frame_usage(event: dict[str, Any]) -> dict[str, Any] | None:
    """The usage a chunk carries: top-level ``usage``, else ``x_groq.usage``; None when it has none."""
    usage = event.get("usage")
    if isinstance(usage, dict):
        return usage
    extra = event.get("x_groq")
    if isinstance(extra, dict):
        usage = extra.get("usage")
        if isinstance(usage, dict):
            return usage
    return None
