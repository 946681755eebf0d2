"""One correct OpenAI chunk stream from every upstream's SSE variant.

:class:`ChunkNormalizer` turns upstream events into ``ChatCompletionChunk``s: role on the first
delta, reasoning as ``reasoning_content``, tool-call deltas with stable index and unique ids,
exactly one finish reason (OpenAI's names), and exactly one usage — a final ``choices: []``
chunk, only when the caller asked for ``include_usage``. :class:`Stream` / :class:`AsyncStream`
drive it over a transport and close the upstream connection when the caller leaves early.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from providers.errors import (
    APIConnectionError,
    PolyrouteError,
    UnprocessableResponseError,
    error_from_stream_event,
    redact,
)
from providers.frames import error_event_body, error_text_body, frame_usage, is_error_event, load_frame
from providers.normalize import arguments_to_str, map_finish_reason, new_id
from providers.sse import SSEDecoder

from .calibration import DEFAULT_MARGIN, with_margin
from .pricing.catalog import Catalog, PriceLookup
from .pricing.cost import cost_of
from .tokens import encoding_loaded, load_encoding
from .types import Attempt, ChatCompletion, ChatCompletionChunk, CompletionUsage, ResponseMeta

if TYPE_CHECKING:
    from providers.spec import Target
    from providers.transport import AsyncStreamResponse, SyncStreamResponse

    from .budget import Reservation


class _ToolState:
    __slots__ = ("args", "id", "name", "upstream_id")

    def __init__(self, call_id: str, upstream_id: str | None, name: str | None) -> None:
        self.id = call_id
        self.upstream_id = upstream_id
        self.name = name
        self.args: list[str] = []


class _ChoiceState:
    __slots__ = ("content", "finished", "reasoning", "role_sent", "tool_index_map", "tools")

    def __init__(self) -> None:
        self.role_sent = False
        self.finished = False
        self.tools: dict[int, _ToolState] = {}
        self.tool_index_map: dict[int, int] = {}  # upstream index -> our index
        self.content: list[str] = []  # kept for local usage estimates only
        self.reasoning: list[str] = []

    def message(self) -> dict[str, Any]:
        """The answer so far, shaped like a message (for the shared usage estimator)."""
        return {
            "content": "".join(self.content),
            "reasoning_content": "".join(self.reasoning),
            "tool_calls": [{"function": {"name": t.name, "arguments": "".join(t.args)}} for t in self.tools.values()],
        }


class ChunkNormalizer:
    """Upstream SSE payloads in, normalized ``ChatCompletionChunk``s out.

    Example::

        norm = ChunkNormalizer(target, include_usage=True, messages=msgs)
        for payload in SSEDecoder().feed(raw):
            for chunk in norm.feed(payload): ...
        for chunk in norm.finish(saw_eof=True): ...
    """

    def __init__(
        self,
        target: Target,
        *,
        include_usage: bool,
        messages: list[dict[str, Any]],
        secrets: tuple[str, ...] = (),
        answers: int = 0,
    ) -> None:
        self.target = target
        # One answer asked for: every choice is choice 0, however the upstream numbers them (older TGI
        # builds behind any route numbered each chunk by its token). 0: unknown, indices kept.
        self.one_answer = answers == 1
        self.include_usage = include_usage
        self.messages = messages
        self.secrets = secrets
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.final_usage: CompletionUsage | None = None
        self.usage_estimated = False
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self._choices: dict[int, _ChoiceState] = {}
        self._used_ids: set[str] = set()
        self._normalize_chunk = target.adapter.normalize_chunk

    # --- parsing
    def _load(self, payload: bytes) -> list[dict[str, Any]]:
        try:
            event = load_frame(payload)
        except orjson.JSONDecodeError:
            if is_error_event(payload):
                return [error_text_body(payload)]
            # Some servers omit the blank line between events: one JSON object per line.
            if b"\n" in payload:
                return [obj for line in payload.split(b"\n") if line.strip() for obj in self._load(line)]
            shown = redact(payload[:200].decode("utf-8", "replace"), self.secrets)
            raise UnprocessableResponseError(
                f"malformed JSON in a stream event: {shown!r}",
                provider=self.target.label,
                model=self.target.model,
            ) from None
        if not isinstance(event, dict):
            raise UnprocessableResponseError(
                f"a stream event is {type(event).__name__}, expected a JSON object",
                provider=self.target.label,
                model=self.target.model,
            )
        return [error_event_body(event) if is_error_event(payload) else event]

    def feed(self, payload: bytes) -> list[ChatCompletionChunk]:
        """Chunks produced by one SSE data payload (raises the typed error for an error frame)."""
        if self.done:
            return []
        if payload == b"[DONE]" or payload == b" [DONE]":
            self.done = True
            return []
        if not payload.strip() and not is_error_event(payload):
            return []
        out = []
        for event in self._load(payload):
            chunk = self._event(event)
            if chunk is not None:
                out.append(chunk)
        return out

    def feed_document(self, body: bytes) -> list[ChatCompletionChunk]:
        """A whole JSON answer where a stream was expected: an error, or a completion turned into chunks."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and ("detail" in data and "choices" not in data):
            data = {"error": data}
        if not isinstance(data, dict) or not (data.get("error") or isinstance(data.get("choices"), list)):
            shown = redact(body[:200].decode("utf-8", "replace"), self.secrets)
            raise UnprocessableResponseError(
                f"expected an event stream, got a JSON document that is neither an error nor a completion: {shown!r}",
                provider=self.target.label,
                model=self.target.model,
            )
        choices = []
        for pos, choice in enumerate(data.get("choices") or ()):
            message = choice.get("message") or {}
            delta = {k: message.get(k) for k in ("role", "content", "reasoning_content", "reasoning", "refusal")}
            calls = message.get("tool_calls")
            if calls:
                delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(calls) if isinstance(call, dict)]
            finish, logprobs = choice.get("finish_reason"), choice.get("logprobs")
            choices.append(
                {"index": choice.get("index", pos), "delta": delta, "finish_reason": finish, "logprobs": logprobs}
            )
        chunk = self._event({**data, "choices": choices})
        self.done = True
        return [] if chunk is None else [chunk]

    def _event(self, event: dict[str, Any]) -> ChatCompletionChunk | None:
        if event.get("error") or "error_message" in event:
            body = error_event_body(event) if event.get("error") else event  # status beside the error read too
            raise error_from_stream_event(
                body, provider=self.target.label, model=self.target.model, secrets=self.secrets
            )
        event = self._normalize_chunk(self.target, event)
        if self.id is None:
            self.id = event.get("id") or new_id("chatcmpl-")
            created = event.get("created")
            self.created = created if isinstance(created, int) else int(time.time())
        if self.model is None and event.get("model"):
            self.model = event["model"]
        if self.system_fingerprint is None and event.get("system_fingerprint"):
            self.system_fingerprint = event["system_fingerprint"]
        usage = frame_usage(event)  # top-level, or where an upstream puts it (x_groq.usage)
        if usage is not None:
            self.usage = usage  # cumulative or final: the last one wins
        choices = event.get("choices")
        if not choices:
            return None
        out_choices = []
        for pos, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            normalized = self._choice(choice, pos)
            if normalized is not None:
                out_choices.append(normalized)
        if not out_choices:
            return None
        return self._chunk(out_choices, None)

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> ChatCompletionChunk:
        data: dict[str, Any] = {
            "id": self.id,
            "choices": choices,
            "created": self.created,
            "model": self.model or self.target.model,
            "object": "chat.completion.chunk",
        }
        if self.system_fingerprint:
            data["system_fingerprint"] = self.system_fingerprint
        if usage is not None:
            data["usage"] = usage
        return ChatCompletionChunk.model_validate(data)

    def _choice(self, choice: dict[str, Any], pos: int) -> dict[str, Any] | None:
        index = 0 if self.one_answer else choice.get("index")
        if not isinstance(index, int):
            index = pos
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _ChoiceState()
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        out: dict[str, Any] = {}
        has_payload = False
        if not state.role_sent:
            out["role"] = delta.get("role") or "assistant"
            state.role_sent = True
            has_payload = True
        content = delta.get("content")
        if content is not None:
            out["content"] = content
            state.content.append(content)
            has_payload = True
        reasoning = delta.get("reasoning_content")
        if reasoning is None:
            reasoning = delta.get("reasoning")
        if reasoning:
            out["reasoning_content"] = reasoning
            state.reasoning.append(reasoning)
            has_payload = True
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            calls = self._tool_deltas(state, tool_calls)
            if calls:
                out["tool_calls"] = calls
                has_payload = True
        for key in ("refusal", "function_call"):
            if delta.get(key) is not None:
                out[key] = delta[key]
                has_payload = True
        finish = choice.get("finish_reason")
        finish_out = None
        if finish and not state.finished:
            finish_out = map_finish_reason(finish)
            if state.tools and finish_out == "stop":
                finish_out = "tool_calls"
            state.finished = True
            has_payload = True
        if not has_payload:
            return None
        result: dict[str, Any] = {"delta": out, "finish_reason": finish_out, "index": index}
        if choice.get("logprobs") is not None:
            result["logprobs"] = choice["logprobs"]
        return result

    def _good_upstream_id(self, call_id: Any) -> bool:
        return isinstance(call_id, str) and call_id not in ("", "0") and call_id not in self._used_ids

    def _tool_deltas(self, state: _ChoiceState, tool_calls: Any) -> list[dict[str, Any]]:
        if isinstance(tool_calls, dict):  # older TGI: one object instead of a list
            tool_calls = [tool_calls]
        out = []
        for pos, call in enumerate(tool_calls):
            if not isinstance(call, dict):
                continue
            up_index = call.get("index")
            if not isinstance(up_index, int):
                up_index = pos
            fn = call.get("function") or {}
            args = fn.get("arguments")
            args = args if isinstance(args, str) else arguments_to_str(args)
            up_id = call.get("id")
            index = state.tool_index_map.get(up_index)
            tool = state.tools.get(index) if index is not None else None
            if tool is not None and self._good_upstream_id(up_id) and tool.upstream_id != up_id:
                tool = None  # a new call reusing an upstream index: give it the next index
            if tool is None:
                index = len(state.tools)
                state.tool_index_map[up_index] = index
                call_id = up_id if isinstance(up_id, str) and self._good_upstream_id(up_id) else new_id("call_")
                self._used_ids.add(call_id)
                tool = state.tools[index] = _ToolState(call_id, up_id, fn.get("name"))
                out.append(
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": fn.get("name"), "arguments": args},
                    }
                )
                tool.args.append(args)
                continue
            delta_fn: dict[str, Any] = {"arguments": args}
            if tool.name is None and fn.get("name"):
                tool.name = delta_fn["name"] = fn["name"]
            if args or "name" in delta_fn:
                out.append({"index": index, "function": delta_fn})
                tool.args.append(args)
        return out

    # --- the end
    def finish(self, *, saw_eof: bool) -> list[ChatCompletionChunk]:
        """Closing chunks (a missing finish reason, the usage chunk); raises if the stream was cut."""
        out: list[ChatCompletionChunk] = []
        unfinished = [i for i, s in self._choices.items() if not s.finished]
        if unfinished or not self._choices:
            if not self.done:
                what = "no finish reason" if self._choices else "no data"
                raise APIConnectionError(
                    f"stream ended before completion ({what}; the connection closed early)",
                    provider=self.target.label,
                    model=self.target.model,
                )
            if self.id is None:
                self.id, self.created = new_id("chatcmpl-"), int(time.time())
            closing = []
            for i in unfinished or [0]:
                state = self._choices.setdefault(i, _ChoiceState())
                state.finished = True
                delta = {} if state.role_sent else {"role": "assistant"}
                state.role_sent = True
                closing.append({"delta": delta, "finish_reason": "tool_calls" if state.tools else "stop", "index": i})
            out.append(self._chunk(closing, None))
        self.final_usage = self._final_usage()
        if self.include_usage:
            out.append(self._chunk([], self.final_usage.model_dump(exclude_none=True)))
        return out

    def partial_usage(self) -> dict[str, int]:
        """Counted locally: the prompt, and the answer so far (for a stream cut short)."""
        from .tokens import count_completion, count_messages

        prompt = count_messages(self.messages)
        completion = sum(count_completion(s.message()) for s in self._choices.values())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _final_usage(self) -> CompletionUsage:
        if self.usage is not None:
            usage = dict(self.usage)
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            usage["prompt_tokens"], usage["completion_tokens"] = prompt, completion
            usage["total_tokens"] = int(usage.get("total_tokens") or prompt + completion)
            return CompletionUsage.model_validate(usage)
        from .tokens import count_completion, count_messages

        self.usage_estimated = True
        prompt = count_messages(self.messages)
        completion = sum(count_completion(s.message()) for s in self._choices.values())
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class _StreamBase:
    def __init__(
        self,
        normalizer: ChunkNormalizer,
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
    def _json_body(self) -> bool:
        # Some servers ignore stream=true (or fail) and answer with one JSON document.
        return "json" in (self._headers.get("content-type") or "")

    def _on_bytes(self, raw: bytes) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
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

    def _raise_pending(self) -> None:
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            raise err

    def _on_end(self) -> list[ChatCompletionChunk]:
        out = []
        for payload in self._decoder.flush():
            out.extend(self._norm.feed(payload))
        out.extend(self._norm.finish(saw_eof=True))
        return out

    def _from_json_body(self, body: bytes) -> list[ChatCompletionChunk]:
        out = self._norm.feed_document(body)
        if out and self._first_token_at is None:
            self._first_token_at = time.perf_counter()
        return out + self._norm.finish(saw_eof=True)

    def _close_reservation(self) -> None:
        """Settle the budget: the real cost; what arrived if the caller left early; nothing if the
        call failed before any content (a failed call releases its reservation)."""
        reservation = self._reservation
        if reservation is None or reservation.closed:
            return
        if self._meta is None and self._error_before_content:
            reservation.release()
        else:
            reservation.settle(self._spent_pico(), self._reported_usage(), self._served)

    async def _aclose_reservation(self) -> None:
        reservation = self._reservation
        if reservation is None or reservation.closed:
            return
        if self._meta is None and self._error_before_content:
            await reservation.arelease()
        else:
            await reservation.asettle(self._spent_pico(), self._reported_usage(), self._served)

    def _reported_usage(self) -> dict[str, Any] | None:
        """The upstream's own usage, when it sent one (a local count teaches the budget nothing)."""
        return self._norm.usage

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

    @property
    def meta(self) -> ResponseMeta:
        """Filled when the stream ends (provider, model, latency, time to first token, attempts)."""
        if self._meta is None:
            raise AttributeError("stream.meta is available once the stream has been fully consumed")
        return self._meta

    def partial_meta(self) -> ResponseMeta:
        """Facts of a stream cut short: who served, and the cost of the prompt and what arrived."""
        if self._meta is not None:
            return self._meta
        target = self._norm.target
        meta = ResponseMeta(
            provider=self._served,
            model=self._norm.model or target.model,
            api_base=target.api_base,
            latency_ms=(time.perf_counter() - self._started) * 1000,
            model_string=self._model_string,
            attempts=self._attempts,
            usage_estimated=self._norm.usage is None,
        )
        usage = self.left_usage()
        meta.set_cost(cost_of(self._catalog.lookup_cached(target, self._served), usage, estimated=True))
        return meta

    def _spent_pico(self) -> int | None:
        """What to settle the budget with: the real cost, or for a stream cut short, the cost of
        the prompt and of what arrived (None: no price, keep the reserved amount)."""
        if self._meta is not None:
            return self._meta.cost_pico
        usage = self.left_usage()
        return cost_of(self._catalog.lookup_cached(self._norm.target, self._served), usage, estimated=True).cost_pico

    @property
    def _served(self) -> str:
        target = self._norm.target
        return target.adapter.served_by(target, self._headers)

    def _price(self) -> PriceLookup:
        target = self._norm.target
        if self._mock:
            return self._catalog.lookup_cached(target, self._served)
        return self._catalog.lookup(target, self._served)

    def _complete(self, error: PolyrouteError | None, lookup: PriceLookup | None = None) -> None:
        now = time.perf_counter()
        target = self._norm.target
        if self._attempts:
            last = self._attempts[-1]
            last.latency_ms = (now - self._started) * 1000
            if error is not None:
                last.error = type(error).__name__
        if error is not None:
            return
        self.usage = usage = self._norm.final_usage
        meta = self._meta = ResponseMeta(
            provider=self._served,
            model=self._norm.model or target.model,
            api_base=target.api_base,
            latency_ms=(now - self._started) * 1000,
            model_string=self._model_string,
            attempts=self._attempts,
            time_to_first_token_ms=(
                None if self._first_token_at is None else (self._first_token_at - self._started) * 1000
            ),
            usage_estimated=self._norm.usage_estimated,
            upstream_request_id=self._headers.get("x-request-id"),
        )
        meta.set_cost(cost_of(lookup or self._price(), usage, estimated=self._norm.usage_estimated))


class Stream(_StreamBase):
    """A sync stream of ``ChatCompletionChunk``. Iterate it; ``with`` it or ``close()`` it to leave early.

    Example::

        with completion(model=..., messages=..., stream=True) as stream:
            for chunk in stream:
                print(chunk.choices[0].delta.content or "", end="")
        stream.usage, stream.meta.provider
    """

    def __init__(self, response: SyncStreamResponse, normalizer: ChunkNormalizer, **kw: Any) -> None:
        super().__init__(normalizer, headers=response.headers, **kw)
        self._response = response
        self._gen = self._iterate()

    def _iterate(self) -> Generator[ChatCompletionChunk, None, None]:
        try:
            raw_iter = self._response.iter_bytes()
            if self._json_body:
                yield from self._from_json_body(b"".join(raw_iter))
            else:
                for raw in raw_iter:
                    yield from self._on_bytes(raw)
                    self._raise_pending()
                    if self._norm.done:
                        break
                yield from self._on_end()
            self._complete(None)
            if self._norm.done:
                # Read the body's end so the connection goes back to the pool (as the OpenAI SDK does).
                with contextlib.suppress(PolyrouteError):
                    for _ in raw_iter:
                        pass
        except PolyrouteError as err:
            raise self._failed(err) from None
        finally:
            self._response.close()
            self._close_reservation()

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return next(self._gen)

    def close(self) -> None:
        """Stop reading and close the upstream connection (the upstream sees the client leave)."""
        self._gen.close()
        self._response.close()  # also when iteration never started
        self._close_reservation()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_gen"):
            self.close()


class AsyncStream(_StreamBase):
    """An async stream of ``ChatCompletionChunk``; ``async with`` it or ``await aclose()`` to leave early.

    Example::

        stream = await acompletion(model=..., messages=..., stream=True)
        async for chunk in stream:
            ...
    """

    def __init__(self, response: AsyncStreamResponse, normalizer: ChunkNormalizer, **kw: Any) -> None:
        super().__init__(normalizer, headers=response.headers, **kw)
        self._response = response
        self._agen = self._iterate()
        self._closed = False

    async def _iterate(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        try:
            raw_iter = self._response.aiter_bytes()
            if self._json_body:
                for chunk in self._from_json_body(b"".join([raw async for raw in raw_iter])):
                    yield chunk
            else:
                async for raw in raw_iter:
                    for chunk in self._on_bytes(raw):
                        yield chunk
                    self._raise_pending()
                    if self._norm.done:
                        break
                if self._norm.usage is None and not encoding_loaded():
                    await asyncio.to_thread(load_encoding)  # counting usage locally: never block the loop
                for chunk in self._on_end():
                    yield chunk
            lookup = None if self._mock else await self._catalog.alookup(self._norm.target, self._served)
            self._complete(None, lookup)
            if self._norm.done:
                # Read the body's end so the connection is reused, but never wait long for it.
                with contextlib.suppress(PolyrouteError, asyncio.TimeoutError):
                    await asyncio.wait_for(_drain(raw_iter), 1.0)
        except PolyrouteError as err:
            raise self._failed(err) from None
        finally:
            self._closed = True
            await self._response.aclose()
            await self._aclose_reservation()

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop reading and close the upstream connection."""
        await self._agen.aclose()
        if not self._closed:  # iteration never started
            self._closed = True
            await self._response.aclose()
            await self._aclose_reservation()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._response.abort()
            self._close_reservation()


async def _drain(raw_iter: AsyncIterator[bytes]) -> None:
    async for _ in raw_iter:
        pass


def _as_dict(chunk: Any) -> dict[str, Any]:
    if isinstance(chunk, dict):
        return chunk
    return chunk.model_dump()  # type: ignore[no-any-return]


def stream_chunk_builder(chunks: Iterable[Any], messages: list[dict[str, Any]] | None = None) -> ChatCompletion:
    """Rebuild the full ``ChatCompletion`` from a stream's chunks (LiteLLM's name).

    Content, reasoning, tool calls with complete arguments, finish reason and usage. When no chunk
    carries usage and ``messages`` is given, usage is counted locally.

    Example::

        chunks = list(completion(model=..., messages=msgs, stream=True))
        full = stream_chunk_builder(chunks)
    """
    first: dict[str, Any] | None = None
    usage: Any = None
    choices: dict[int, dict[str, Any]] = {}
    for raw in chunks:
        chunk = _as_dict(raw)
        if first is None:
            first = chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            acc = choices.setdefault(
                choice.get("index", 0),
                {
                    "content": [],
                    "reasoning": [],
                    "tools": {},
                    "finish": None,
                    "role": "assistant",
                    "refusal": [],
                    "logprobs": None,
                },
            )
            delta = choice.get("delta") or {}
            if delta.get("role"):
                acc["role"] = delta["role"]
            if delta.get("content"):
                acc["content"].append(delta["content"])
            if delta.get("reasoning_content"):
                acc["reasoning"].append(delta["reasoning_content"])
            if delta.get("refusal"):
                acc["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                tool = acc["tools"].setdefault(call.get("index", 0), {"id": None, "name": None, "args": []})
                if call.get("id"):
                    tool["id"] = call["id"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    tool["name"] = fn["name"]
                if fn.get("arguments"):
                    tool["args"].append(fn["arguments"])
            if choice.get("finish_reason"):
                acc["finish"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                merged = acc["logprobs"] = acc["logprobs"] or {"content": None, "refusal": None}
                for key in ("content", "refusal"):
                    if logprobs.get(key):
                        merged[key] = (merged[key] or []) + list(logprobs[key])
    if first is None:
        raise ValueError("stream_chunk_builder needs at least one chunk")
    out_choices = []
    for index in sorted(choices):
        acc = choices[index]
        message: dict[str, Any] = {"role": acc["role"], "content": "".join(acc["content"]) or None}
        if acc["refusal"]:
            message["refusal"] = "".join(acc["refusal"])
        if acc["reasoning"]:
            message["reasoning_content"] = "".join(acc["reasoning"])
        if acc["tools"]:
            message["tool_calls"] = [
                {"id": t["id"], "type": "function", "function": {"name": t["name"], "arguments": "".join(t["args"])}}
                for _, t in sorted(acc["tools"].items())
            ]
        out_choices.append(
            {"finish_reason": acc["finish"], "index": index, "logprobs": acc["logprobs"], "message": message}
        )
    if usage is None and messages is not None:
        from .tokens import count_completion, count_messages

        prompt = count_messages(messages)
        completion_tokens = sum(count_completion(c["message"]) for c in out_choices)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }
    data = {
        "id": first.get("id"),
        "choices": out_choices,
        "created": first.get("created"),
        "model": first.get("model"),
        "object": "chat.completion",
        "system_fingerprint": first.get("system_fingerprint"),
        "usage": usage,
    }
    return ChatCompletion.model_validate(data)
