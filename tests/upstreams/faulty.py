"""An OpenAI-compatible upstream that fails the way real ones do, and logs what it did to every request.

Faults, drawn per chat request from a seeded RNG (``fault_rate`` of the requests, ``faults`` weighting the kinds):

- ``429``: ``Retry-After: 0`` (``retry_after_429``), OpenAI's rate-limit error body;
- ``500`` / ``502`` / ``503``: OpenAI's server-error body, no ``Retry-After`` (``retry_after_5xx``);
- ``reset``: the request is read, then the connection is reset (``SO_LINGER`` 0: a TCP RST) before any byte of
  a response;
- ``cut``: the answer starts and the connection is dropped part-way: a stream after 1..``cut_after`` SSE frames
  (never its finish, usage or ``[DONE]`` frame), a JSON answer after half of its body (its ``Content-Length``
  promised all of it).

A request may also ask for its fault by name in a body field ``fault`` (``"none"`` for a clean answer): tests
pick one without relying on the RNG. Slow upstreams: ``answer_delay`` holds every non-stream chat request (and
every status or reset fault) before it is answered, ``chunk_delay`` spaces the frames of streams, whose first
frame goes out at once; requests pile up in flight, ``in_flight`` counts them (``wait_in_flight``).

``events`` holds one :class:`FaultEvent` per chat request, in arrival order: its ``tag`` (the body's ``user``
field, which clients can use to tie attempts to their requests), the fault served, what was sent and whether
the answer went out whole (``complete``). Scripted replies (``enqueue``) and the base class's ``fail_rate``
still apply first and are not in ``events``.

Example::

    with FaultyUpstream(fault_rate=0.2, seed=7) as up:
        ...  # requests with {"user": "req-17", ...}
        [e.fault for e in up.events if e.tag == "req-17"]   # e.g. ["503", None]
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import RECORD
from .openai_compat import OpenAICompatUpstream

FAULT_KINDS = ("429", "500", "502", "503", "reset", "cut")
DEFAULT_FAULTS: dict[str, float] = {"429": 1, "500": 1, "502": 1, "503": 1, "reset": 1, "cut": 1}


@dataclass
class FaultEvent:
    """What the upstream did with one chat request."""

    seq: int  # arrival order, from 0
    tag: str | None  # the request body's ``user`` field
    model: str | None
    stream: bool
    fault: str | None  # one of FAULT_KINDS, or None: a clean answer
    status: int | None = None  # HTTP status sent (None: reset before any response)
    frames_total: int = 0  # SSE frames of the whole stream (including [DONE])
    frames_sent: int = 0  # SSE frames written before the end (or the cut)
    bytes_total: int = 0  # bytes of the whole answer (body, or all frames)
    bytes_sent: int = 0
    complete: bool = False  # the whole answer was written and ended (False for faults and client disconnects)
    client_left: bool = False  # the client went away before the answer was written
    prompt_tokens: int | None = None  # usage the answer carried (None: no usage was built for it)
    completion_tokens: int | None = None
    arrived: float = 0.0  # time.monotonic()
    ended: float = 0.0

    @property
    def billable(self) -> bool:
        """Whether a real upstream would bill this request: it generated (some of) an answer."""
        return self.fault in (None, "cut") and self.status == 200


_EVENT: contextvars.ContextVar[FaultEvent | None] = contextvars.ContextVar("faulty_event", default=None)


def _split_frames(writes: Iterable[bytes]) -> list[bytes]:
    """The SSE frames of a stream's writes (each frame ends with a blank line)."""
    frames: list[bytes] = []
    for write in writes:
        for piece in write.split(b"\n\n"):
            if piece:
                frames.append(piece + b"\n\n")
    return frames


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (a FIN where the socket option cannot be set)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, TypeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultyUpstream(OpenAICompatUpstream):
    """See the module docstring."""

    family = "openai"

    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        faults: Mapping[str, float] | None = None,
        seed: int = 0,
        cut_after: int = 4,
        answer_delay: float = 0.0,
        chunk_delay: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.fault_rate = fault_rate
        self.faults: dict[str, float] = dict(faults if faults is not None else DEFAULT_FAULTS)
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.cut_after = max(1, cut_after)
        self.answer_delay = answer_delay
        self.chunk_delay = chunk_delay
        self.retry_after_429: str | None = "0"
        self.retry_after_5xx: str | None = None
        self.rng = random.Random(seed)
        self.events: list[FaultEvent] = []
        self.in_flight = 0

    # ----------------------------------------------------------------- reading the log
    def snapshot(self) -> list[FaultEvent]:
        """A copy of ``events`` (safe while the server runs)."""
        with self._cond:
            return list(self.events)

    def wait_in_flight(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` chat requests are being held or answered at once; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight >= count, timeout)

    def clear_events(self) -> None:
        with self._cond:
            self.events.clear()

    # ----------------------------------------------------------------- decisions
    def _draw(self, body: Any) -> str | None:
        asked = body.get("fault") if isinstance(body, dict) else None
        with self._cond:
            if isinstance(asked, str) and (asked in FAULT_KINDS or asked == "none"):
                return None if asked == "none" else asked
            if not self.fault_rate or self.rng.random() >= self.fault_rate:
                return None
            kinds = [k for k, w in self.faults.items() if w > 0]
            if not kinds:
                return None
            return self.rng.choices(kinds, weights=[self.faults[k] for k in kinds])[0]

    def _fault_response(self, status: int) -> web.Response:
        if status == 429:
            error = {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
            retry = self.retry_after_429
        else:
            error = {
                "message": "The server had an error while processing your request",
                "type": "server_error",
                "param": None,
                "code": None,
            }
            retry = self.retry_after_5xx
        return self.respond(
            {"error": error}, status=status, headers={"retry-after": retry} if retry is not None else None
        )

    # ----------------------------------------------------------------- handlers
    async def chat(
        self, request: web.Request, *, model: str | None = None, headers: Mapping[str, str] | None = None
    ) -> web.StreamResponse:
        body = request[RECORD].json
        fault = self._draw(body)
        is_dict = isinstance(body, dict)
        with self._cond:
            event = FaultEvent(
                seq=len(self.events),
                tag=str(body.get("user")) if is_dict and body.get("user") is not None else None,
                model=str(body.get("model")) if is_dict and body.get("model") is not None else None,
                stream=is_dict and body.get("stream") is True,
                fault=fault,
                arrived=time.monotonic(),
            )
            self.events.append(event)
            self.in_flight += 1
            self._cond.notify_all()
        token = _EVENT.set(event)
        try:
            if self.answer_delay and not (event.stream and fault in (None, "cut")):
                await asyncio.sleep(self.answer_delay)
            if fault == "reset":
                _reset(request)
                return web.Response(status=200)  # never sent: aiohttp finds the connection closed
            if fault is not None and fault != "cut":
                event.status = int(fault)
                return self._fault_response(event.status)
            response = await super().chat(request, model=model, headers=headers)
            if event.status is None:  # not a stream: a JSON answer (or the fake's own 4xx)
                return await self._send_body(request, response, event)
            return response
        except (ConnectionError, asyncio.CancelledError):
            event.client_left = True
            raise
        finally:
            _EVENT.reset(token)
            event.ended = time.monotonic()
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    async def _send_body(
        self, request: web.Request, response: web.StreamResponse, event: FaultEvent
    ) -> web.StreamResponse:
        event.status = response.status
        if not isinstance(response, web.Response) or response.body is None:
            event.complete = True
            return response
        body = bytes(response.body)  # type: ignore[arg-type]
        event.bytes_total = len(body)
        if event.fault != "cut":
            out = web.StreamResponse(status=response.status, headers=response.headers)
            out.content_length = len(body)
            try:
                await out.prepare(request)
                await out.write(body)
                await out.write_eof()
            except ConnectionError:
                event.client_left = True
                return out
            event.bytes_sent = len(body)
            event.complete = request.transport is not None and not request.transport.is_closing()
            return out
        out = web.StreamResponse(status=response.status, headers=response.headers)
        out.content_length = len(body)  # promised whole, sent half
        half = max(1, len(body) // 2)
        with contextlib.suppress(ConnectionError):
            await out.prepare(request)
            await out.write(body[:half])
            await request.writer.drain()
            event.bytes_sent = half
        _reset(request)
        return out

    async def stream(self, request: web.Request, writes: Iterable[bytes], **options: Any) -> web.StreamResponse:
        """Frame by frame, ``chunk_delay`` apart; a ``cut`` drops the connection after 1..cut_after frames
        (never past the last content frame), everything else ends with ``[DONE]``. The options are
        FakeUpstream.stream's (status, headers, delay, drop)."""
        event = _EVENT.get()
        if event is None:  # a scripted reply of the base class
            return await super().stream(request, writes, **options)
        status: int = options.get("status", 200)
        headers: Mapping[str, str] | None = options.get("headers")
        delay: float = options.get("delay", 0.0)
        frames = _split_frames(writes)
        event.status = status
        event.frames_total = len(frames)
        event.bytes_total = sum(len(f) for f in frames)
        stop = len(frames)
        cut = event.fault == "cut"
        if cut:
            # Keep the tail (finish chunk, usage chunk, [DONE]) unsent: up to cut_after frames, at least one.
            content_frames = max(1, len(frames) - 3)
            with self._cond:
                stop = min(content_frames, self.rng.randint(1, self.cut_after))

        def sent(frame: bytes) -> None:
            event.frames_sent += 1
            event.bytes_sent += len(frame)

        def left() -> None:
            event.client_left = True

        response = await self.write_stream(
            request,
            frames[:stop],
            status=status,
            headers=headers,
            delay=self.chunk_delay or delay,
            cut=_reset if cut else None,
            sent=sent,
            left=left,
        )
        if not cut and not event.client_left:
            event.complete = request.transport is not None and not request.transport.is_closing()
        return response

    def usage_extra(self, model: str, usage: dict[str, Any]) -> dict[str, Any]:
        event = _EVENT.get()
        if event is not None:
            event.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            event.completion_tokens = int(usage.get("completion_tokens") or 0)
        return super().usage_extra(model, usage)
