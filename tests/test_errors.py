"""Upstream error bodies of every known shape map to the right typed error; secrets never leak."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import pickle
import time

import aiohttp
import httpx
import orjson
import pytest

from providers.errors import error_from_response, error_from_stream_event
from providers.transport import (
    AiohttpTransport,
    AsyncTransport,
    HttpRequest,
    HttpxAsyncTransport,
    HttpxSyncTransport,
    Timeouts,
)
from router import errors as E
from tests.upstreams import OpenAICompatUpstream, Reply
from tests.upstreams.faulty import FaultyUpstream


def _err(
    status: int, body: object, headers: dict[str, str] | None = None, secrets: tuple[str, ...] = ()
) -> E.PolyrouteError:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return error_from_response(status, headers or {}, content, provider="huggingface", model="m", secrets=secrets)


@pytest.mark.parametrize(
    ("status", "body", "cls", "needle"),
    [
        (401, {"error": "Invalid username or password."}, E.AuthenticationError, "Invalid username"),
        (
            403,
            {"error": "This authentication method does not have sufficient permissions to call Inference Providers"},
            E.PermissionDeniedError,
            "sufficient permissions",
        ),
        (
            402,
            {"error": "You have exceeded your monthly included credits for Inference Providers."},
            E.PaymentRequiredError,
            "monthly included credits",
        ),
        (
            400,
            {
                "error": {
                    "message": "The requested model 'X' is not supported by any provider you have enabled.",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_supported",
                }
            },
            E.BadRequestError,
            "not supported by any provider",
        ),
        (404, {"error": "Model X does not exist"}, E.NotFoundError, "does not exist"),
        (
            422,
            {"error": "Template error: template not found", "error_type": "template_error"},
            E.BadRequestError,
            "Template error",
        ),
        (422, b"Failed to deserialize the JSON body", E.BadRequestError, "deserialize"),
        (
            422,
            {
                "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 12",
                "error_type": "validation",
            },
            E.ContextWindowExceededError,
            "must be <= 4096",
        ),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                }
            },
            E.ContextWindowExceededError,
            "maximum context",
        ),
        (
            400,
            {
                "error": {
                    "message": "Your request was flagged by our content management policy",
                    "code": "content_policy_violation",
                }
            },
            E.ContentPolicyViolationError,
            "content management",
        ),
        (429, {"error": {"message": "Model busy, retry later"}}, E.RateLimitError, "Model busy"),
        (500, {"detail": "Internal error"}, E.InternalServerError, "Internal error"),
        (502, b"<html>Bad Gateway</html>", E.InternalServerError, "Bad Gateway"),
        (409, {"error": "conflict"}, E.ConflictError, "conflict"),
        (
            400,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            E.BadRequestError,
            "field required (body.messages)",
        ),
    ],
)
def test_error_shapes(status: int, body: object, cls: type[E.PolyrouteError], needle: str) -> None:
    err = _err(status, body)
    assert type(err) is cls
    assert err.status_code == status
    assert needle in err.message
    assert err.provider == "huggingface" and err.model == "m"
    assert isinstance(err, E.PolyrouteError)


def test_hf_model_loading_503_carries_estimated_time() -> None:
    err = _err(503, {"error": "Model X is currently loading", "estimated_time": 20.0})
    assert isinstance(err, E.ServiceUnavailableError) and err.retry_after == 20.0


def test_retry_after_seconds_and_http_date() -> None:
    assert isinstance(err := _err(429, {"error": "slow down"}, {"retry-after": "7"}), E.RateLimitError)
    assert err.retry_after == 7.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    err2 = _err(429, {"error": "slow down"}, {"retry-after": future})
    assert isinstance(err2, E.RateLimitError) and err2.retry_after is not None and 25 <= err2.retry_after <= 31
    err3 = _err(429, {"error": "slow down"}, {"retry-after": "garbage"})
    assert isinstance(err3, E.RateLimitError) and err3.retry_after is None


def test_secrets_are_scrubbed_from_message_body_and_repr() -> None:
    key = "hf_abcdefghijklmnopqrstuvwxyz"
    err = _err(401, {"error": f"token {key} is invalid", "echo": {"authorization": f"Bearer {key}"}}, secrets=(key,))
    for text in (str(err), repr(err), err.message, orjson.dumps(err.body).decode()):
        assert key not in text
    custom = _err(401, {"error": "bad key sk-live-123456789 given"}, secrets=("custom-secret-xyz",))
    assert "sk-live-123456789" not in custom.message


def test_stream_error_frames() -> None:
    tgi = error_from_stream_event(
        {"error": {"message": "Input validation error", "http_status_code": 422}}, provider="tgi", model="m"
    )
    assert isinstance(tgi, E.BadRequestError) and tgi.status_code == 422
    native = error_from_stream_event(
        {"error": "Request failed during generation", "error_type": "generation"}, provider="tgi", model="m"
    )
    assert isinstance(native, E.InternalServerError)
    deepinfra = error_from_stream_event(
        {"error_type": "validation_error", "error_message": '{"detail": "bad"}'}, provider="deepinfra", model="m"
    )
    assert isinstance(deepinfra, E.BadRequestError) and "bad" in deepinfra.message


def test_errors_pickle_with_their_fields() -> None:
    err = _err(429, {"error": "slow"}, {"retry-after": "3"})
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is E.RateLimitError
    assert (clone.status_code, clone.retry_after, clone.provider, clone.message) == (429, 3.0, "huggingface", "slow")


@pytest.mark.parametrize(
    "message",
    ["temperature must be <= 2", "n must have less than 5 choices", "flagged as spam by the rate filter"],
)
def test_ordinary_400s_stay_bad_request(message: str) -> None:
    assert type(_err(400, {"error": {"message": message}})) is E.BadRequestError


def test_deepinfra_stream_error_message_json_is_unwrapped() -> None:
    err = error_from_stream_event(
        {"error_type": "validation_error", "error_message": '{"detail": "prompt is too long"}'},
        provider="deepinfra",
        model="m",
    )
    assert err.message == "prompt is too long" and isinstance(err, E.ContextWindowExceededError)


# ---------------------------------------------------------------- the contract the router decides from

_ERROR_CLASSES = sorted(
    (c for c in vars(E).values() if isinstance(c, type) and issubclass(c, E.PolyrouteError)), key=lambda c: c.__name__
)
# What the router did with each class when these facts were tuples in router/routing/session.py.
_RETRIED = (E.RateLimitError, E.ServiceUnavailableError, E.InternalServerError, E.ConflictError, E.APIConnectionError)
_DEPLOYMENT = (
    E.AuthenticationError,
    E.PermissionDeniedError,
    E.PaymentRequiredError,
    E.NotFoundError,
    E.MissingCredentialsError,
    E.UnpricedCallError,
)
_COOLING = (*_RETRIED, E.AuthenticationError, E.PermissionDeniedError, E.PaymentRequiredError, E.NotFoundError)


@pytest.mark.parametrize("cls", _ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_states_what_the_router_does_with_it(cls: type[E.PolyrouteError]) -> None:
    assert cls.is_retryable is issubclass(cls, _RETRIED)
    assert cls.is_deployment_specific is issubclass(cls, _DEPLOYMENT)
    assert cls.counts_toward_cooldown is issubclass(cls, _COOLING)


def test_budget_refusals_are_never_retried_whatever_their_status() -> None:
    for cls in (E.BudgetExceededError, E.BudgetUnavailableError):
        assert cls.status_code in (429, 503)
        assert not (cls.is_retryable or cls.counts_toward_cooldown or cls.is_deployment_specific)


@pytest.mark.parametrize(
    "status", [400, 401, 402, 403, 404, 405, 408, 409, 413, 418, 422, 429, 500, 501, 502, 503, 529]
)
def test_retryable_means_408_409_429_and_5xx(status: int) -> None:
    assert _err(status, {"error": "nope"}).is_retryable is (status in (408, 409, 429) or status >= 500)


def test_an_error_keeps_its_attempts_through_pickle_and_copy() -> None:
    from router.types import Attempt

    err = _err(503, {"error": "loading"}, {"retry-after": "2"})
    assert err.attempts == []
    err.attempts = [
        Attempt("huggingface/m", "together", "https://x", 503, "ServiceUnavailableError", 12.5, "g[0]:m", 1.0),
        Attempt("huggingface/m", "nebius", "https://x", 503, "ServiceUnavailableError", 3.0, "g[1]:m"),
    ]
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is E.ServiceUnavailableError and clone.is_retryable
    assert clone.attempts == err.attempts and clone.retry_after == 2.0
    copy = err.copy()
    assert type(copy) is E.ServiceUnavailableError and copy.message == err.message
    assert copy.attempts == err.attempts and copy.attempts is not err.attempts
    assert copy.__traceback__ is None


# ---------------------------------------------------------------- transport exceptions, over real HTTP

_QUERY = "?api_key=hf_querysecret123456"


def _request(url: str) -> HttpRequest:
    headers = {"content-type": "application/json", "authorization": "Bearer sk-test-123456"}
    return HttpRequest("POST", url + _QUERY, headers, b'{"model": "m", "messages": []}')


def _send(kind: str, request: HttpRequest, timeouts: Timeouts, *, stream: bool = False) -> bytes:
    """Send through one of the three transports (their real clients); returns the body read."""
    if kind == "httpx":
        with httpx.Client() as client:
            transport = HttpxSyncTransport(client)
            if not stream:
                return transport.send(request, timeouts).content
            response = transport.open_stream(request, timeouts)
            try:
                return response.read()
            finally:
                response.close()

    async def main() -> bytes:
        async with contextlib.AsyncExitStack() as stack:
            if kind == "httpx-async":
                atransport: AsyncTransport = HttpxAsyncTransport(await stack.enter_async_context(httpx.AsyncClient()))
            else:
                atransport = AiohttpTransport(await stack.enter_async_context(aiohttp.ClientSession()))
            if not stream:
                return (await atransport.send(request, timeouts)).content
            response = await atransport.open_stream(request, timeouts)
            try:
                return await response.aread()
            finally:
                await response.aclose()

    return asyncio.run(main())


_KINDS = ("httpx", "httpx-async", "aiohttp")


def _shown(err: E.PolyrouteError, url: str) -> str:
    text = str(err)
    assert "querysecret" not in text and url + "?" not in text and "sk-test" not in text
    return err.message


@pytest.mark.parametrize("kind", _KINDS)
def test_connection_refused_is_a_connection_error_naming_the_url(kind: str) -> None:
    url = "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(E.APIConnectionError) as info:
        _send(kind, _request(url), Timeouts(total=5, connect=2))
    assert type(info.value) is E.APIConnectionError and info.value.is_retryable
    assert _shown(info.value, url).startswith(f"could not connect to {url}: ")


@pytest.mark.parametrize("kind", _KINDS)
def test_a_body_cut_short_failed_while_reading(kind: str) -> None:
    with FaultyUpstream() as up:
        url = up.url + "/v1/chat/completions"
        request = _request(url)
        request.body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "fault": "cut"})
        with pytest.raises(E.APIConnectionError) as info:
            _send(kind, request, Timeouts(total=5, connect=2))
    assert type(info.value) is E.APIConnectionError
    assert _shown(info.value, url).startswith(f"connection to {url} failed while reading: ")


@pytest.mark.parametrize("kind", _KINDS)
def test_a_stalled_stream_times_out_reading(kind: str, oai: OpenAICompatUpstream) -> None:
    oai.enqueue(Reply(sse=['data: {"choices": []}\n\n', "data: [DONE]\n\n"], chunk_delay=2.0))
    url = oai.url + "/v1/chat/completions"
    with pytest.raises(E.APITimeoutError) as info:
        _send(kind, _request(url), Timeouts(total=None, connect=2, read=0.3), stream=True)
    assert _shown(info.value, url).startswith(f"timed out reading from {url}: ")
    assert info.value.is_retryable and info.value.status_code == 408


@pytest.mark.parametrize("kind", _KINDS)
def test_the_total_timeout_is_named_as_such(kind: str, oai: OpenAICompatUpstream) -> None:
    oai.enqueue(Reply(json={}, delay=1.5))
    url = oai.url + "/v1/chat/completions"
    with pytest.raises(E.APITimeoutError) as info:
        _send(kind, _request(url), Timeouts(total=0.3, connect=0.3))
    message = _shown(info.value, url)
    if kind == "httpx":  # httpx's own timeouts: the headers did not come within the (total-bounded) read timeout
        assert message.startswith(f"timed out connecting to {url}: ")
    else:
        assert message == f"request to {url} exceeded its total timeout of 0.3s"
