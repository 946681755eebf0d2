"""The proxy against hostile clients (issue 14), over real HTTP to the local upstreams: no server file is
read, fields the proxy owns cannot be overridden, no input makes a 500, slow bodies cannot hold memory,
clients leaving are not errors, and errors shown to virtual keys do not name deployments or hosts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.errors import InvalidRequestArgumentError
from router import completion, embedding
from router.proxy.config import ConfigError, parse_config
from tests.cli import start_serve, wait_until_healthy
from tests.http_checks import openai_error
from tests.services import free_port
from tests.test_proxy import MASTER, USER, ProxyServer, _config
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, Reply, TGIUpstream

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
TGI_PRICE = [{"model": "huggingface/tgi", "input_per_million": 100, "output_per_million": 100}]


def _key(proxy: ProxyServer, **fields: Any) -> str:
    created = httpx.post(proxy.url + "/admin/keys", headers={"Authorization": f"Bearer {MASTER}"}, json=fields)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def _post(proxy: ProxyServer, key: str, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        proxy.url + path,
        content=content,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )


def _chat_requests(upstream: Any) -> int:
    return sum(1 for q in upstream.requests if q.path.endswith("/chat/completions"))


@pytest.fixture
def proxy(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(_config(hf, deepinfra, tgi, pricing=TGI_PRICE)) as server:
        yield server


# ---------------------------------------------------------------- client content never reaches the server's files

_OPENED: list[str] = []
_WATCHED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _WATCHED and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if any(path.startswith(w) for w in _WATCHED):
            _OPENED.append(path)


sys.addaudithook(_audit)


def _image(url: Any) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


def test_local_paths_and_file_urls_are_refused_without_reading_anything(
    proxy: ProxyServer, tgi: TGIUpstream, tmp_path: Path
) -> None:
    image = tmp_path / "secret.png"
    image.write_bytes(PNG)
    missing = tmp_path / "missing.png"
    key = _key(proxy, models=["local"])
    _WATCHED.append(str(tmp_path))
    try:
        messages = {}
        for url in (
            str(image),
            f"file://{image}",
            str(missing),
            f"file://{missing}",
            "~/secret.png",
            f"FILE://{image}",
            f"HTTP://{image}",
        ):
            error = openai_error(_post(proxy, key, {"model": "local", "messages": _image(url)}), 400)
            assert error["param"] == "messages[0].content[1].image_url.url"
            messages[url] = error["message"]
        # No file oracle: an existing file and a missing one get the same answer, and nothing was opened.
        assert len(set(messages.values())) == 1, messages
        assert "does not read local files" in messages[str(image)]
        assert _OPENED == []
        for part in (
            {"type": "input_audio", "input_audio": {"data": f"file://{image}", "format": "wav"}},
            {"type": "file", "file": {"file_data": f"file:{image}"}},
        ):
            body = {"model": "local", "messages": [{"role": "user", "content": [part]}]}
            assert "does not read local files" in openai_error(_post(proxy, key, body), 400)["message"]
        assert _OPENED == []
    finally:
        _WATCHED.clear()
    assert _chat_requests(tgi) == 0
    # URLs and inline images still go through, untouched.
    for url in ("https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo="):
        assert _post(proxy, key, {"model": "local", "messages": _image(url)}).status_code == 200
        sent = tgi.requests[-1].json["messages"][0]["content"][1]["image_url"]["url"]
        assert sent == url


# ---------------------------------------------------------------- fields the proxy owns are fenced


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"extra_body": {"model": "chat"}}, "extra_body.model"),
        ({"extra_body": {"stream": True}}, "extra_body.stream"),
        ({"extra_body": {"stream_options": {"include_usage": True}}}, "extra_body.stream_options"),
        ({"extra_body": {"messages": [{"role": "user", "content": "other"}]}}, "extra_body.messages"),
        ({"extra_body": {"n": 100_000}}, "n"),
        ({"top_k": 3, "extra_body": {"top_k": 4}}, "extra_body.top_k"),
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url"),
        ({"extra_body": {"custom_headers": {"x-api-key": "k"}}}, "extra_body.custom_headers"),
        ({"stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}, "stream_options"),
        ({"input": "not a chat field"}, "input"),
    ],
)
def test_extra_body_and_unknown_fields_cannot_override_what_the_proxy_owns(
    proxy: ProxyServer, tgi: TGIUpstream, deepinfra: DeepInfraUpstream, extra: dict[str, Any], param: str
) -> None:
    key = _key(proxy, models=["local"], max_budget_usd=0.5)
    error = openai_error(_post(proxy, key, {"model": "local", "messages": USER, **extra}), 400)
    assert error["param"] == param
    assert param.split(".")[-1] in error["message"]
    assert _chat_requests(tgi) == 0 and _chat_requests(deepinfra) == 0


def test_extra_body_fields_are_checked_like_named_ones_and_still_reach_the_upstream(
    proxy: ProxyServer, tgi: TGIUpstream
) -> None:
    key = _key(proxy, models=["local"])
    cases = (
        ({"extra_body": {"max_tokens": "lots"}}, "max_tokens"),
        ({"max_tokens": 10, "extra_body": {"max_tokens": 5000}}, "extra_body.max_tokens"),
    )
    for extra, param in cases:
        error = openai_error(_post(proxy, key, {"model": "local", "messages": USER, **extra}), 400)
        assert error["param"] == param and "max_tokens" in error["message"]
    assert _chat_requests(tgi) == 0
    response = _post(proxy, key, {"model": "local", "messages": USER, "top_k": 3, "extra_body": {"max_tokens": 7}})
    assert response.status_code == 200, response.text
    sent = tgi.requests[-1].json
    assert sent["max_tokens"] == 7 and sent["top_k"] == 3 and sent["model"] != "chat"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"extra_body": {"model": "chat"}}, "extra_body.model"),
        ({"extra_body": {"input": ["other text"]}}, "extra_body.input"),
        ({"extra_body": {"encoding_format": "hex"}}, "encoding_format"),
        ({"stream": True}, "stream"),
        ({"user": 5}, "user"),
    ],
)
def test_embedding_fields_are_fenced(
    proxy: ProxyServer, hf: HFRouterUpstream, extra: dict[str, Any], param: str
) -> None:
    key = _key(proxy, models=["embed"])
    before = len(hf.requests)
    error = openai_error(_post(proxy, key, {"model": "embed", "input": "hello", **extra}, "/v1/embeddings"), 400)
    assert error["param"] == param
    assert len(hf.requests) == before


def test_library_extra_body_never_silently_overrides_a_named_argument(tgi: TGIUpstream) -> None:
    base = {"model": "huggingface/tgi", "api_base": tgi.url, "messages": USER}
    for extra, needle in (
        ({"max_tokens": 500}, "already sets as the max_tokens= argument"),
        ({"model": "other"}, "cannot set 'model'"),
        ({"stream": True}, "cannot set 'stream'"),
        ({"messages": []}, "cannot set 'messages'"),
    ):
        with pytest.raises(InvalidRequestArgumentError, match=needle):
            completion(**base, max_tokens=5, extra_body=extra)
    with pytest.raises(InvalidRequestArgumentError, match="cannot set 'model'"):
        embedding("huggingface/tgi", "hello", api_base=tgi.url, extra_body={"model": "other"})
    with pytest.raises(InvalidRequestArgumentError, match="already sets as the user= argument"):
        embedding("huggingface/tgi", "hello", api_base=tgi.url, user="me", extra_body={"user": "you"})
    assert tgi.requests == []
    assert completion(**base, extra_body={"top_k": 5}).choices[0].message.content  # adding fields still works
    assert tgi.requests[-1].json["top_k"] == 5


@pytest.mark.parametrize("stream", ["false", "true", 0, 1, {"on": True}])
def test_stream_must_be_a_json_boolean(proxy: ProxyServer, tgi: TGIUpstream, stream: Any) -> None:
    error = openai_error(_post(proxy, MASTER, {"model": "local", "messages": USER, "stream": stream}), 400)
    assert error["param"] == "stream" and "true or false" in error["message"]
    assert _chat_requests(tgi) == 0
    plain = _post(proxy, MASTER, {"model": "local", "messages": USER, "stream": None})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")


# ---------------------------------------------------------------- no input makes a 500


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def _msg(**fields: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hi", **fields}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER, "user": _deep(300)}, None),
        (
            {"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": _deep(300)}}]},
            None,
        ),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": 5}]}, "messages[0].tool_calls"),
        (
            {"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"function": 5}]}]},
            "messages[0].tool_calls[0]",
        ),
        ({"messages": _msg(name=5)}, "messages[0].name"),
        ({"messages": _msg(tool_call_id=["x"])}, "messages[0].tool_call_id"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": 5}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]},
            "messages[0].content[0].image_url",
        ),
        ({"messages": USER, "logit_bias": 5}, "logit_bias"),
        ({"messages": USER, "logit_bias": {"50256": "ban"}}, "logit_bias"),
        ({"messages": USER, "user": {"id": 1}}, "user"),
        ({"messages": USER, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"messages": USER, "tool_choice": 5}, "tool_choice"),
        ({"messages": USER, "tool_choice": {"type": "function", "function": 5}}, "tool_choice"),
        ({"messages": USER, "response_format": {"type": 5}}, "response_format"),
        ({"messages": USER, "functions": [{"name": 5}]}, "functions"),
        ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]}, "tools[0]"),
    ],
)
def test_wrong_shapes_are_400s_not_500s(
    proxy: ProxyServer, tgi: TGIUpstream, body: dict[str, Any], param: str | None
) -> None:
    key = _key(proxy, max_budget_usd=1.0)  # the budget path counts the prompt: it must never see a bad shape
    error = openai_error(_post(proxy, key, {"model": "local", **body}), 400)
    assert error["param"] == param
    assert _chat_requests(tgi) == 0


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"rpm": 3_000_000_000}, "rpm"),
        ({"tpm": 10**15}, "tpm"),
        ({"max_budget_usd": 1e30}, "max_budget_usd"),
        ({"expires_at": 1e20}, "expires_at"),
        ({"duration_seconds": 1e20}, "duration_seconds"),
        ({"models": ["chat", 5]}, "models"),
        ({"alias": "a" * 10_000}, "alias"),
    ],
)
def test_admin_values_out_of_range_are_400s_naming_the_field(
    proxy: ProxyServer, fields: dict[str, Any], name: str
) -> None:
    headers = {"Authorization": f"Bearer {MASTER}"}
    created = httpx.post(proxy.url + "/admin/keys", headers=headers, json=fields)
    error = openai_error(created, 400)
    assert error["param"] == name and name in error["message"]
    if name != "duration_seconds":
        key_id = httpx.post(proxy.url + "/admin/keys", headers=headers, json={}).json()["id"]
        patched = httpx.patch(proxy.url + f"/admin/keys/{key_id}", headers=headers, json=fields)
        assert openai_error(patched, 400)["param"] == name
    assert httpx.get(proxy.url + "/admin/keys", headers=headers).status_code == 200
    since = httpx.get(proxy.url + "/admin/spend?since=nan", headers=headers)
    assert openai_error(since, 400)["param"] == "since"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "file", "refusal"]) | _JSON},
    optional={
        "text": st.text(max_size=10) | _JSON,
        "image_url": st.fixed_dictionaries(
            {
                "url": st.sampled_from(
                    ["https://x.test/a.png", "/etc/hosts", "file:///etc/hosts", "data:image/png;base64,AA=="]
                )
                | _JSON
            }
        )
        | _JSON,
    },
)
_ROLE = st.sampled_from(["user", "assistant", "system", "tool", "developer"])
_MESSAGE = st.fixed_dictionaries(
    {"role": _ROLE | _ROLE | _JSON, "content": st.text(max_size=10) | st.lists(_PART, max_size=3) | _JSON},
    optional={
        "name": st.text(max_size=5) | _JSON,
        "tool_calls": st.lists(
            st.fixed_dictionaries({"id": st.text(max_size=4) | _JSON, "type": _JSON, "function": _JSON}), max_size=2
        )
        | _JSON,
        "tool_call_id": _JSON,
        "function_call": _JSON,
    },
)
_FIELDS = [
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "tools",
    "tool_choice",
    "logit_bias",
    "user",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "stream_options",
    "dimensions",
    "encoding_format",
    "top_k",
    "metadata",
]
_BODY = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["local", "local", "local", "embed", "chat", "nope"]) | _JSON,
        "messages": st.lists(_MESSAGE, min_size=1, max_size=3) | _JSON,
        "input": st.text(max_size=10) | st.lists(st.text(max_size=5), max_size=3) | _JSON,
    },
    optional={
        "stream": st.booleans() | _JSON,
        "extra_body": st.dictionaries(st.sampled_from([*_FIELDS, "model", "stream", "messages"]), _JSON, max_size=3)
        | _JSON,
    },
).flatmap(
    lambda body: st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), _JSON, max_size=3).map(
        lambda more: {**more, **body}
    )
)


@pytest.fixture
def fuzzed(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[tuple[ProxyServer, str]]:
    with ProxyServer(_config(hf, deepinfra, tgi, pricing=TGI_PRICE)) as server:
        yield server, _key(server, max_budget_usd=1000.0)


def test_random_json_never_makes_a_500(fuzzed: tuple[ProxyServer, str]) -> None:
    proxy, key = fuzzed
    bad: list[tuple[str, Any, str]] = []

    # Failures are collected, not raised inside hypothesis: its failure report imports libcst, which warns
    # (an error under filterwarnings=error) and would hide which bodies failed.
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=_BODY, path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]))
    def throw(body: dict[str, Any], path: str) -> None:
        response = _post(proxy, key, body, path)
        if response.status_code == 500 or (response.status_code >= 400 and not _is_error_json(response)):
            bad.append((path, body, response.text[:300]))

    throw()
    assert bad == [], f"{len(bad)} bodies got a 500 or a non-JSON error, e.g. {bad[:3]}"


def _is_error_json(response: httpx.Response) -> bool:
    try:
        return bool(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return False


# ---------------------------------------------------------------- slow bodies


def _raw(port: int, head: bytes, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head)
    return sock


def _head(length: int | None, path: str = "/v1/chat/completions") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {MASTER}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket, *, closed: bool = False) -> tuple[int, bytes]:
    """The status and the whole response (``closed``: and the server then closed the connection)."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")),
            None,
        )
        if sep and length is not None and len(body) >= length and not closed:
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the server neither answered nor closed the connection; got {data[:200]!r}") from None
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_slow_bodies_are_dropped_and_pending_body_memory_is_capped(
    hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream
) -> None:
    config = _config(
        hf, deepinfra, tgi, request_body_timeout=0.5, max_request_bytes=100_000, max_pending_body_bytes=150_000
    )
    with ProxyServer(config) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        started = time.monotonic()
        slow = _raw(port, _head(100_000) + b'{"model": "local", ')
        status, data = _answer(slow, closed=True)  # within the timeout: 408, then the connection is closed
        assert status == 408 and b"did not arrive within 0.5 seconds" in data
        assert time.monotonic() - started < 4
        chunked = _raw(port, _head(None) + b'5\r\n{"mod\r\n')
        assert _answer(chunked, closed=True)[0] == 408
        # One body announced and arriving holds 100 kB of the 150 kB: the next is refused at once.
        holding = _raw(port, _head(100_000) + b" " * 1000)
        time.sleep(0.1)
        started = time.monotonic()
        refused = _raw(port, _head(100_000))
        status, data = _answer(refused)
        assert status == 503 and b"retry in a moment" in data and b"Retry-After: 1" in data
        assert time.monotonic() - started < 0.4  # before the holder's timeout
        assert _answer(holding, closed=True)[0] == 408
        # Freed again: a complete request goes through.
        ok = httpx.post(
            proxy.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER}"},
            json={"model": "local", "messages": USER},
        )
        assert ok.status_code == 200
        for sock in (slow, chunked, holding, refused):
            sock.close()
        time.sleep(0.2)  # the server sees the 503's connection (still read and discarded) close


def test_body_limit_settings_are_checked() -> None:
    base = {"model_list": [{"model_name": "a", "params": {"model": "openai/m", "api_base": "http://127.0.0.1:9"}}]}
    config = parse_config(base)
    assert config.request_body_timeout == 30.0 and config.max_pending_body_bytes >= 4 * config.max_request_bytes
    assert not config.unsupported
    with pytest.raises(ConfigError, match=r"general_settings\.request_body_timeout: expected seconds"):
        parse_config({**base, "general_settings": {"request_body_timeout": "slow"}})
    with pytest.raises(ConfigError, match="max_pending_body_bytes: expected a whole number of bytes of at least"):
        parse_config({**base, "general_settings": {"max_pending_body_bytes": 10}})


# ---------------------------------------------------------------- clients leaving, aiohttp's own errors


def test_a_client_leaving_a_stream_is_a_debug_line_without_traceback(
    proxy: ProxyServer, tgi: TGIUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tgi.stream_delay = 0.05
    words = " ".join(f"w{i}" for i in range(100))
    for _ in range(2):
        with httpx.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER}"},
            json={
                "model": "local",
                "stream": True,
                "max_tokens": 500,
                "messages": [{"role": "user", "content": words}],
            },
        ) as r:
            assert next(line for line in r.iter_lines() if line.startswith("data:"))
        assert tgi.wait_for_disconnect(5)
    deadline = time.time() + 5
    while sum("client left a stream" in r.getMessage() for r in caplog.records) < 2:
        assert time.time() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    loud = [
        r
        for r in caplog.records
        if (r.levelno >= logging.WARNING or r.exc_info)
        and r.name.startswith(("polyroute", "aiohttp", "router", "providers"))
    ]
    assert loud == [], [(r.levelname, r.getMessage()) for r in loud]


@pytest.fixture
def served(tmp_path: Path, tgi: TGIUpstream) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``polyroute serve`` in its own process, with the TGI upstream as model ``local``."""
    config = tmp_path / "proxy.yaml"
    config.write_text(
        f"model_list:\n  - model_name: local\n    params: {{model: huggingface/tgi, api_base: '{tgi.url}'}}\n"
        f"general_settings: {{master_key: {MASTER}, database_url: 'sqlite:///{tmp_path / 'p.db'}'}}\n"
    )
    port = free_port()
    server = start_serve(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server)
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
        server.communicate(timeout=30)


def test_serve_answers_malformed_http_with_openai_json_and_logs_no_traceback(
    served: tuple[str, subprocess.Popen[str]], tgi: TGIUpstream
) -> None:
    url, server = served
    port = int(url.rsplit(":", 1)[1])
    for request in (
        b"GET /health HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
        b"HELLO?\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ):
        with _raw(port, request) as sock:
            status, data = _answer(sock, closed=True)
        head, _, body = data.partition(b"\r\n\r\n")
        assert status == 400 and b"application/json" in head.lower(), data
        assert json.loads(body)["error"]["code"] == "bad_http"
    tgi.stream_delay = 0.05
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER}"},
        json={
            "model": "local",
            "stream": True,
            "max_tokens": 500,
            "messages": [{"role": "user", "content": "go on " * 50}],
        },
    ) as r:
        assert next(line for line in r.iter_lines() if line.startswith("data:"))
    assert tgi.wait_for_disconnect(5)
    time.sleep(0.3)
    server.terminate()
    output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output and " ERROR " not in output, output


# ---------------------------------------------------------------- what errors show virtual keys


def test_errors_for_virtual_keys_do_not_name_deployments_or_hosts(
    proxy: ProxyServer, tgi: TGIUpstream, deepinfra: DeepInfraUpstream
) -> None:
    secrets = (
        "huggingface/tgi",
        "deepinfra/",
        "openai/gpt-oss-120b",
        "127.0.0.1",
        str(tgi.port),
        str(deepinfra.port),
        "local[0]",
        "chat[0]",
    )
    poor = _key(proxy, max_budget_usd=0.000001)
    refused = _post(proxy, poor, {"model": "local", "messages": USER, "max_tokens": 100})
    assert openai_error(refused, 429)["code"] == "budget_exceeded"
    assert "'local'" in refused.json()["error"]["message"]
    key = _key(proxy)
    leaked = f"openai/gpt-oss-120b is overloaded at {deepinfra.url}/v1/openai/chat/completions"
    deepinfra.enqueue(Reply(status=400, json={"error": {"message": leaked}}), "/v1/openai/chat/completions")
    passthrough = _post(proxy, key, {"model": "chat", "messages": USER})
    openai_error(passthrough, 400)
    assert "overloaded" in passthrough.json()["error"]["message"]
    tgi.enqueue(Reply(status=500, text=f"crashed serving huggingface/tgi behind {tgi.url}"), "/v1/chat/completions")
    upstream_500 = _post(proxy, key, {"model": "local", "messages": USER})
    openai_error(upstream_500, 502)  # the upstream failed, not the proxy
    unknown = _post(proxy, key, {"model": "gpt-4", "messages": USER})
    openai_error(unknown, 404)
    for response in (refused, passthrough, upstream_500, unknown):
        text = response.text
        assert not [s for s in secrets if s in text], text
    ok = _post(proxy, key, {"model": "local", "messages": USER})  # success headers still say who served
    assert ok.status_code == 200 and ok.headers["x-polyroute-provider"] and ok.headers["x-polyroute-model"]
    # The master key (the operator) reads upstream errors whole.
    deepinfra.enqueue(
        Reply(status=400, json={"error": {"message": "openai/gpt-oss-120b said no"}}), "/v1/openai/chat/completions"
    )
    response = _post(proxy, MASTER, {"model": "chat", "messages": USER})
    assert "openai/gpt-oss-120b said no" in openai_error(response, 400)["message"]


def test_concurrent_hostile_bodies_leave_the_proxy_serving(proxy: ProxyServer) -> None:
    bodies: list[Any] = [b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b'{"model": "local", "messages": ' + b"[" * 200]
    bodies += [{"model": "local", "messages": [{"role": "user", "content": "x", "tool_calls": 5}]}] * 5
    many = [{"role": "user", "content": "x"}] * 20_000 + [{"role": "user", "content": "x", "tool_calls": 5}]
    bodies.append({"model": "local", "messages": many})  # ~600 kB: checked in a worker thread

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            auth = {"Authorization": f"Bearer {MASTER}"}
            raw = [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]
            calls = [http.post(proxy.url + "/v1/chat/completions", headers=auth, content=b) for b in raw]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(main()) == [400] * len(bodies)
    big = _post(proxy, MASTER, {"model": "local", "messages": many})
    assert openai_error(big, 400)["param"] == "messages[20000].tool_calls"
    assert _post(proxy, MASTER, {"model": "local", "messages": USER}).status_code == 200
