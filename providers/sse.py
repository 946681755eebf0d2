"""Incremental Server-Sent Events decoding, tolerant of what real upstreams send.

Works on bytes (a read may end inside a multi-byte UTF-8 character or a line); accepts ``data:``
with or without a space, LF / CRLF / CR line ends, ``:`` comment and keep-alive lines, blank
``data:`` lines, and a last event without its closing blank line.
"""

from __future__ import annotations


class ErrorEventData(bytes):
    """The data of an ``event: error`` SSE event (the JSON may lack an ``error`` key, or not be JSON).

    A ``bytes`` subclass, which orjson refuses: parse it with :func:`providers.frames.load_frame`.
    """


class SSEDecoder:
    """Feed raw bytes, get back the ``data`` payload of each complete event.

    Example::

        dec = SSEDecoder()
        dec.feed(b'data: {"a": 1}\\n\\nda')  # [b'{"a": 1}']
        dec.feed(b'ta: [DONE]\\n\\n')         # [b'[DONE]']
    """

    __slots__ = ("_buf", "_cr", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._cr = False  # the last read ended with CR: an LF starting the next read belongs to it
        self._data: list[bytes] = []
        self._event: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._cr:
            self._cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            self._cr = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(self._dispatch(data))
                    data = self._data = []
                else:
                    self._event = None  # an event with no data is dropped, its type with it (SSE spec)
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                if value.startswith(b" "):
                    value = value[1:]
                data.append(value)
            elif line.startswith(b":"):
                continue
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
            # id:, retry: and unknown fields are ignored, as the SSE spec says.
        return events

    def _dispatch(self, data: list[bytes]) -> bytes:
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        if self._event is not None:
            event, self._event = self._event, None
            if event == b"error":
                return ErrorEventData(payload)
        return payload

    def flush(self) -> list[bytes]:
        """Events left when the stream closed without a final blank line."""
        events = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        return events
