"""Argument checks and request-body building happen before any request, with fixable messages."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import BaseModel

from providers.errors import InvalidRequestArgumentError
from router.params import build_chat_body, image_to_url, response_format_param

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def body(messages: object = None, **params: object) -> dict:
    return build_chat_body(
        messages if messages is not None else [{"role": "user", "content": "hi"}],
        dict(params),
        stream=False,
        stream_options=None,
        functions=None,
        function_call=None,
        extra_body=None,
    )


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "messages is empty"),
        ("hello", "must be a list"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user"}], "has no content"),
        ([{"role": "user", "content": 3}], "must be a string or a list"),
        ([42], "must be a dict"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/no/such/file.png"}}]}],
            "not an http(s) URL",
        ),
    ],
)
def test_bad_messages(messages: object, needle: str) -> None:
    with pytest.raises(InvalidRequestArgumentError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        body(messages)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"temperature": 3}, "between 0 and 2"),
        ({"temperature": "hot"}, "must be a number"),
        ({"top_p": 1.5}, "between 0 and 1"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"max_tokens": 1.5}, "must be an integer"),
        ({"n": True}, "must be an integer"),
        ({"stop": [1]}, "stop must be"),
        ({"tools": {"name": "x"}}, "tools must be a list"),
        ({"tools": [{"type": "function"}]}, r"tools\[0\]"),
        ({"tool_choice": "sometimes"}, "tool_choice must be"),
        ({"top_logprobs": 50}, "between 0 and 20"),
        ({"response_format": "json"}, "response_format must be"),
    ],
)
def test_bad_params(params: dict, needle: str) -> None:
    with pytest.raises(InvalidRequestArgumentError, match=needle):
        body(None, **params)


def test_none_params_are_left_out_and_values_pass_through() -> None:
    b = body(None, temperature=0.2, max_tokens=5, stop=["\n"], seed=7, top_p=None)
    assert b == {
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 5,
        "stop": ["\n"],
        "seed": 7,
    }


def test_stream_always_asks_for_usage_and_extra_body_merges() -> None:
    b = build_chat_body(
        [{"role": "user", "content": "hi"}],
        {},
        stream=True,
        stream_options=None,
        functions=None,
        function_call=None,
        extra_body={"top_k": 5},
    )
    assert b["stream"] is True and b["stream_options"] == {"include_usage": True} and b["top_k"] == 5


def test_legacy_functions_become_tools() -> None:
    b = build_chat_body(
        [{"role": "user", "content": "hi"}],
        {},
        stream=False,
        stream_options=None,
        functions=[{"name": "f", "parameters": {"type": "object"}}],
        function_call={"name": "f"},
        extra_body=None,
    )
    assert b["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert b["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_images_from_path_bytes_and_urls(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    expected = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert image_to_url(str(path), "x") == expected
    assert image_to_url(path, "x") == expected
    assert image_to_url(f"file://{path}", "x") == expected
    assert image_to_url(PNG, "x") == expected
    assert image_to_url("https://example.com/cat.png", "x") == "https://example.com/cat.png"
    assert image_to_url("data:image/gif;base64,R0lG", "x") == "data:image/gif;base64,R0lG"
    with pytest.raises(InvalidRequestArgumentError, match="not PNG, JPEG"):
        image_to_url(b"plain text", "x")
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": str(path)}},
                {"type": "image_url", "image_url": PNG},
            ],
        }
    ]
    parts = body(msgs)["messages"][0]["content"]
    assert parts[1]["image_url"]["url"] == expected and parts[2]["image_url"]["url"] == expected
    assert msgs[0]["content"][1]["image_url"]["url"] == str(path)  # the caller's messages are not mutated


class Address(BaseModel):
    street: str
    zip: str | None = None


class Person(BaseModel):
    name: str
    age: int = 3
    address: Address


def test_pydantic_response_format_is_a_strict_json_schema() -> None:
    fmt = response_format_param(Person)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["address", "age", "name"]
    nested = schema["$defs"]["Address"]
    assert nested["additionalProperties"] is False and sorted(nested["required"]) == ["street", "zip"]
    assert "default" not in schema["properties"]["age"]
