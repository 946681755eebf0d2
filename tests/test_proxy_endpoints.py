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
from tests.upstreams.embeddings import UNNORMALIZED

# A valid body per task: a row added to the table needs one here (the test below says so).
BODIES: dict[str, dict[str, Any]] = {
    "chat": {"model": "chat", "messages": USER},
    "embeddings": {"model": "embed", "input": ["a", "b"]},
    "completions": {"model": "chat", "prompt": "Say this is a test"},
    "feature-extraction": {"inputs": ["a", "b"]},  # the model is in the path: /models/embed
}
PATH_MODEL = "embed"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def proxy(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(_config(hf, deepinfra, tgi)) as server:
        yield server


def _post(proxy: ProxyServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proxy.url + path.replace("{model:.+}", PATH_MODEL), json=body, headers=AUTH, timeout=30)


def test_the_table_holds_the_openai_task_endpoints() -> None:
    assert [(e.path, e.task) for e in ENDPOINTS] == [
        ("/chat/completions", "chat"),
        ("/completions", "completions"),
        ("/embeddings", "embeddings"),
        ("/models/{model:.+}", "feature-extraction"),
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
    if endpoint.model_in_path:  # HF's inference API: a bare array of vectors
        assert [len(v) > 0 for v in response.json()] == [True, True]
    else:
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
        if endpoint.model_in_path:
            continue  # GET /v1/models/{id} is the model's own page
        error = openai_error(httpx.get(proxy.url + "/v1" + endpoint.path, headers=AUTH), 405)
        assert error["code"] == "method_not_allowed"


# ------------------------------------------------ HF's inference API shape: POST /v1/models/{alias} {"inputs": ...}
def _vectors(proxy: ProxyServer, body: dict[str, Any], alias: str = PATH_MODEL) -> httpx.Response:
    return httpx.post(f"{proxy.url}/v1/models/{alias}", json=body, headers=AUTH, timeout=30)


def test_feature_extraction_gives_the_embeddings_as_bare_vectors(proxy: ProxyServer) -> None:
    texts = ["first text", "second, longer text"]
    embedded = _post(proxy, "/v1/embeddings", {"model": PATH_MODEL, "input": texts, "encoding_format": "float"})
    expected = [item["embedding"] for item in sorted(embedded.json()["data"], key=lambda item: item["index"])]
    response = _vectors(proxy, {"inputs": texts})
    assert response.status_code == 200, response.text
    got = response.json()
    assert len(got) == 2 and all(v == pytest.approx(e) for v, e in zip(got, expected, strict=True))
    one = _vectors(proxy, {"inputs": texts[0]})
    assert len(one.json()) == 1 and one.json()[0] == pytest.approx(
        expected[0]
    )  # one text: one vector in the list, as TEI answers
    assert one.headers["x-polyroute-provider"] == embedded.headers["x-polyroute-provider"]


def test_feature_extraction_normalize_true_gives_unit_vectors(proxy: ProxyServer) -> None:
    text = UNNORMALIZED + " some words"
    (raw,) = _vectors(proxy, {"inputs": text}).json()
    (unit,) = _vectors(proxy, {"inputs": text, "normalize": True}).json()
    norm = sum(x * x for x in raw) ** 0.5
    assert abs(norm - 1) > 1e-3, "the test upstream's vectors must not be unit length already"
    assert unit == pytest.approx([x / norm for x in raw])


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"inputs": "x", "truncate": True}, "truncate", "shorter text"),
        ({"inputs": "x", "normalize": "yes"}, "normalize", "true or false"),
        ({"inputs": "x", "prompt_name": "query"}, "prompt_name", "not supported"),
        ({"inputs": "x", "model": "chat"}, "model", "drop 'model'"),
        ({"inputs": 3}, "inputs", "string"),
    ],
)
def test_feature_extraction_refuses_what_it_cannot_honour(
    proxy: ProxyServer, body: dict[str, Any], param: str, words: str
) -> None:
    error = openai_error(_vectors(proxy, body), 400)
    assert error["param"] == param, error
    assert words in error["message"]


def test_feature_extraction_of_an_unknown_alias_is_404(proxy: ProxyServer) -> None:
    error = openai_error(_vectors(proxy, {"inputs": "x"}, alias="nope/not-here"), 404)
    assert error["code"] == "model_not_found"
