"""Upstream error bodies of every known shape map to the right typed error; secrets never leak."""

from __future__ import annotations

import email.utils
import pickle
import time

import orjson
import pytest

from providers import errors as E


def _err(
    status: int, body: object, headers: dict[str, str] | None = None, secrets: tuple[str, ...] = ()
) -> E.PolyrouteError:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return E.error_from_response(status, headers or {}, content, provider="huggingface", model="m", secrets=secrets)


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
    tgi = E.error_from_stream_event(
        {"error": {"message": "Input validation error", "http_status_code": 422}}, provider="tgi", model="m"
    )
    assert isinstance(tgi, E.BadRequestError) and tgi.status_code == 422
    native = E.error_from_stream_event(
        {"error": "Request failed during generation", "error_type": "generation"}, provider="tgi", model="m"
    )
    assert isinstance(native, E.InternalServerError)
    deepinfra = E.error_from_stream_event(
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
    err = E.error_from_stream_event(
        {"error_type": "validation_error", "error_message": '{"detail": "prompt is too long"}'},
        provider="deepinfra",
        model="m",
    )
    assert err.message == "prompt is too long" and isinstance(err, E.ContextWindowExceededError)
