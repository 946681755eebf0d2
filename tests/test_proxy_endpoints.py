"""The proxy's endpoint table (router/proxy/endpoints.py), pinned over real HTTP: every row answers under
``/v1`` and without it, a field a row does not take is a 400 naming it, and unknown paths are 404s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router.proxy.endpoints import ENDPOINTS, PREFIXES, Endpoint
from tests.http_checks import openai_error
from tests.test_proxy import MASTER, USER, ProxyServer, _config
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, TGIUpstream

# A valid body per task: a row added to the table needs one here (the test below says so).
BODIES: dict[str, dict[str, Any]] = {
    "chat": {"model": "chat", "messages": USER},
    "embeddings": {"model": "embed", "input": ["a", "b"]},
    "completions": {"model": "chat", "prompt": "Say this is a test"},
}
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def proxy(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(_config(hf, deepinfra, tgi)) as server:
        yield server


def _post(proxy: ProxyServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proxy.url + path, json=body, headers=AUTH, timeout=30)


def test_the_table_holds_the_openai_task_endpoints() -> None:
    assert [(e.path, e.task) for e in ENDPOINTS] == [
        ("/chat/completions", "chat"),
        ("/completions", "completions"),
        ("/embeddings", "embeddings"),
    ]
    assert set(BODIES) == {e.task for e in ENDPOINTS}, "give every row a valid body in BODIES"
    assert PREFIXES == ("/v1", "")


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.task)
def test_every_row_answers_with_and_without_v1(proxy: ProxyServer, endpoint: Endpoint, prefix: str) -> None:
    response = _post(proxy, prefix + endpoint.path, BODIES[endpoint.task])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-polyroute-provider"]
    assert response.json()["object"] in ("chat.completion", "list", "text_completion")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.task)
def test_a_field_a_row_does_not_take_is_a_400_naming_it(proxy: ProxyServer, endpoint: Endpoint) -> None:
    body = BODIES[endpoint.task]
    others = sorted({name for e in ENDPOINTS for name in e.inputs} - set(endpoint.inputs))
    refused: list[tuple[dict[str, Any], str]] = [({name: "x"}, name) for name in others]
    refused += [({"extra_body": {name: "x"}}, f"extra_body.{name}") for name in endpoint.inputs]
    refused.append(({"extra_body": {"model": "other"}}, "extra_body.model"))
    if endpoint.streams:
        refused.append(({"stream": "yes"}, "stream"))
    else:
        refused += [({"stream": True}, "stream"), ({"stream_options": {"include_usage": True}}, "stream_options")]
    for extra, param in refused:
        for prefix in PREFIXES:
            error = openai_error(_post(proxy, prefix + endpoint.path, {**body, **extra}), 400)
            assert error["param"] == param, (extra, error)
            assert param.split(".")[-1] in error["message"]


def test_unknown_paths_are_404_and_wrong_methods_405(proxy: ProxyServer) -> None:
    for path in ("/v1/nope", "/v2/chat/completions", "/v1/chat/completion", "/v1/v1/embeddings", "/chat"):
        error = openai_error(_post(proxy, path, BODIES["chat"]), 404)
        assert error["code"] == "not_found" and path in error["message"]
    for endpoint in ENDPOINTS:
        error = openai_error(httpx.get(proxy.url + "/v1" + endpoint.path, headers=AUTH), 405)
        assert error["code"] == "method_not_allowed"
