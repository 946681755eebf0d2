"""What a stream learns as it is read, and how it settles: everything of :class:`Stream` and
:class:`AsyncStream` but their I/O.

:class:`StreamCore` decodes the bytes read into chunks, times the first token, and when the stream
ends — however it ends — builds its meta (provider, model, latency, cost), marks the last attempt and
settles the budget reservation: the real cost, what arrived if the caller left early, nothing if the
call failed before any content.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol

from typing_extensions import TypeVar

from providers.errors import APIConnectionError, PolyrouteError
from providers.sse import SSEDecoder

from ..calibration import DEFAULT_MARGIN, with_margin
from ..pricing.cost import CostInfo, cost_of
from ..types import Attempt, ChatCompletionChunk, CompletionUsage, ResponseMeta

if TYPE_CHECKING:
    from providers.spec import Target

    from ..budget import Reservation
    from ..pricing.catalog import Catalog, PriceLookup

# The chunk type a stream yields: chat chunks unless said otherwise (text completions yield their own).
C = TypeVar("C", default=ChatCompletionChunk)


class Normalizer(Protocol[C]):
    """Upstream stream payloads in, one task's normalized chunks out (``ChunkNormalizer`` for chat,
    ``TextChunkNormalizer`` for text completions): what a stream needs of it to read, meter and settle."""

    target: Target
    model: str | None
    done: bool  # the upstream said the stream is over
    usage: dict[str, Any] | None  # the upstream's own usage, once it sent one
    final_usage: CompletionUsage | None  # set by finish(): the upstream's usage, else counted locally
    usage_estimated: bool

    def feed(self, payload: bytes) -> list[C]: ...

    def feed_document(self, body: bytes) -> list[C]: ...

    def finish(self, *, saw_eof: bool) -> list[C]: ...

    def partial_usage(self) -> dict[str, int]: ...

    def served_by(self, headers: Mapping[str, str]) -> str: ...


# What a reservation is settled with: the cost in pico-USD (None: keep the reserved amount), the
# upstream's own usage (None: it sent none) and the provider that served.
Settlement = tuple[int | None, dict[str, Any] | None, str]


class StreamCore(Generic[C]):
    """The state and logic a sync and an async stream share; subclasses add only the reading."""

    def __init__(
        self,
        normalizer: Normalizer[C],
        *,
        started: float,
        model_string: str,
        headers: Mapping[str, str],
        attempts: list[Attempt],
        catalog: Catalog,
        mock: bool = False,
        reservation: Reservation | None = None,
    ) -> None:
        self._norm = normalizer
        self._started = started
        self._model_string = model_string
        self._headers = headers
        self._attempts = attempts
        self._catalog = catalog
        self._mock = mock  # a mock stream prices only from what is loaded: it fetches nothing
        self._reservation = reservation  # settled when the stream ends, however it ends
        self._first_token_at: float | None = None
        self._decoder = SSEDecoder()
        self._pending_error: PolyrouteError | None = None
        self._error_before_content = False
        self.usage: CompletionUsage | None = None
        self._meta: ResponseMeta | None = None

    @property
    def provider(self) -> str:
        """The upstream serving this stream (known from the response headers, before the first chunk)."""
        return self._served

    @property
    def model(self) -> str:
        """The model id serving: as the upstream names it once a chunk said, else the target's."""
        return self._norm.model or self._norm.target.model

    @property
    def attempts(self) -> list[Attempt]:
        """Every upstream try behind this stream, its own last: ``meta.attempts`` and a failure's ``attempts``
        are this list. A router sets it to the whole request's list once it keeps the stream."""
        return self._attempts

    @attempts.setter
    def attempts(self, attempts: list[Attempt]) -> None:
        self._attempts = attempts

    @property
    def meta(self) -> ResponseMeta:
        """Filled when the stream ends (provider, model, latency, time to first token, attempts)."""
        if self._meta is None:
            raise AttributeError("stream.meta is available once the stream has been fully consumed")
        return self._meta

    # --- reading: bytes in, chunks out
    @property
    def _json_body(self) -> bool:
        # Some servers ignore stream=true (or fail) and answer with one JSON document.
        return "json" in (self._headers.get("content-type") or "")

    def _on_bytes(self, raw: bytes) -> list[C]:
        out: list[C] = []
        try:
            for payload in self._decoder.feed(raw):
                out.extend(self._norm.feed(payload))
        except PolyrouteError as err:
            # Chunks that arrived in the same read as an error frame still reach the caller first.
            if not out:
                raise
            self._pending_error = err
        if out and self._first_token_at is None:
            self._first_token_at = time.perf_counter()
        return out

    def _read_more(self) -> bool:
        """After the chunks of one read reached the caller: raise the error held back behind them;
        False once the upstream said the stream is done."""
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            raise err
        return not self._norm.done

    def _on_end(self) -> list[C]:
        out = []
        for payload in self._decoder.flush():
            out.extend(self._norm.feed(payload))
        out.extend(self._norm.finish(saw_eof=True))
        return out

    def _from_json_body(self, body: bytes) -> list[C]:
        out = self._norm.feed_document(body)
        if out and self._first_token_at is None:
            self._first_token_at = time.perf_counter()
        return out + self._norm.finish(saw_eof=True)

    # --- the end: meta, cost, attempts
    @property
    def _served(self) -> str:
        return self._norm.served_by(self._headers)

    def _price(self) -> PriceLookup:
        target = self._norm.target
        if self._mock:
            return self._catalog.lookup_cached(target, self._served)
        return self._catalog.lookup(target, self._served)

    def _meta_now(self, now: float) -> ResponseMeta:
        """The facts known at ``now`` whether or not the stream ended well (cost not yet set)."""
        target = self._norm.target
        return ResponseMeta(
            provider=self._served,
            model=self._norm.model or target.model,
            api_base=target.api_base,
            latency_ms=(now - self._started) * 1000,
            model_string=self._model_string,
            attempts=self._attempts,
        )

    def _complete(self, error: PolyrouteError | None, lookup: PriceLookup | None = None) -> None:
        now = time.perf_counter()
        if self._attempts:
            last = self._attempts[-1]
            last.latency_ms = (now - self._started) * 1000
            if error is not None:
                last.error = type(error).__name__
        if error is not None:
            return
        self.usage = usage = self._norm.final_usage
        meta = self._meta = self._meta_now(now)
        if self._first_token_at is not None:
            meta.time_to_first_token_ms = (self._first_token_at - self._started) * 1000
        meta.usage_estimated = self._norm.usage_estimated
        meta.upstream_request_id = self._headers.get("x-request-id")
        meta.set_cost(cost_of(lookup or self._price(), usage, estimated=self._norm.usage_estimated))

    def _failed(self, err: PolyrouteError) -> PolyrouteError:
        """The error to raise: a transport failure before the end says the stream was cut short."""
        target = self._norm.target
        self._error_before_content = self._first_token_at is None
        if type(err) is APIConnectionError and not self._norm.done:
            err = APIConnectionError(
                f"stream ended before completion ({err.message})",
                provider=target.label,
                model=target.model,
            )
        err.provider = err.provider or target.label
        err.model = err.model or target.model
        self._complete(err)
        err.attempts = self._attempts
        return err

    # --- a stream cut short
    def left_usage(self) -> dict[str, Any]:
        """Usage of a stream that ended before the upstream said: every token that arrived, and the prompt
        at the bound reserved for it, else at the deployment's learned overhead (the upstream bills its own
        count, which ours can be far below)."""
        usage = self._norm.usage or self._norm.partial_usage()
        if self._norm.usage is not None:
            return usage
        reservation = self._reservation
        local = int(usage["prompt_tokens"])
        completion = int(usage["completion_tokens"])
        if reservation is not None and reservation.prompt is not None:
            prompt = max(local, reservation.prompt.bound)
            if reservation.prompt.completion_cap:  # our count of the text may run past the upstream's own
                completion = min(completion, reservation.prompt.completion_cap)
        else:
            counts = self._catalog.prompt_counts
            known = counts.overhead(counts.key_of(self._norm.target, self._served))
            prompt = local if known is None else with_margin(local, DEFAULT_MARGIN) + known
        return {**usage, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _cost_so_far(self) -> CostInfo:
        """The cost of the prompt and of what arrived, at the price already loaded (no fetch)."""
        return cost_of(self._catalog.lookup_cached(self._norm.target, self._served), self.left_usage(), estimated=True)

    def partial_meta(self) -> ResponseMeta:
        """Facts of a stream cut short: who served, and the cost of the prompt and what arrived."""
        if self._meta is not None:
            return self._meta
        meta = self._meta_now(time.perf_counter())
        meta.usage_estimated = self._norm.usage is None
        meta.set_cost(self._cost_so_far())
        return meta

    # --- the budget
    def _reservation_open(self) -> Reservation | None:
        reservation = self._reservation
        return None if reservation is None or reservation.closed else reservation

    def _settlement(self) -> Settlement | None:
        """What the reservation is settled with: the real cost, or for a stream cut short the cost of the
        prompt and of what arrived. None: release it (the call failed before any content). Only the
        upstream's own usage is passed on: a local count teaches the budget nothing."""
        if self._meta is not None:
            return self._meta.cost_pico, self._norm.usage, self._served
        if self._error_before_content:
            return None
        return self._cost_so_far().cost_pico, self._norm.usage, self._served

    def _close_reservation(self) -> None:
        reservation = self._reservation_open()
        if reservation is not None:
            settlement = self._settlement()
            if settlement is None:
                reservation.release()
            else:
                reservation.settle(*settlement)

    async def _aclose_reservation(self) -> None:
        reservation = self._reservation_open()
        if reservation is not None:
            settlement = self._settlement()
            if settlement is None:
                await reservation.arelease()
            else:
                await reservation.asettle(*settlement)
