"""embedding() / aembedding() over real HTTP: every upstream shape comes back OpenAI-shaped, in order."""

from __future__ import annotations

import asyncio

import openai
import pytest

from router import aembedding, embedding, errors
from tests.upstreams import (
    DeepInfraUpstream,
    HFRouterUpstream,
    HubUpstream,
    OpenAICompatUpstream,
    Reply,
    fake_embedding,
)

TEXTS = ["first text", "second one", "third and last"]


def _vectors(r: object) -> list[list[float]]:
    return [d.embedding for d in r.data]  # type: ignore[attr-defined]


def test_hf_inference_feature_extraction_batch_and_single(hf: HFRouterUpstream) -> None:
    r = embedding(model="huggingface/intfloat/multilingual-e5-large", input=TEXTS)
    req = hf.requests[0]
    assert req.path == "/hf-inference/models/intfloat/multilingual-e5-large/pipeline/feature-extraction"
    assert req.json == {"inputs": TEXTS}
    assert _vectors(r) == [fake_embedding(t) for t in TEXTS]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert r.meta.provider == "hf-inference" and r.meta.usage_estimated and r.usage.prompt_tokens > 0
    single = embedding(model="huggingface/intfloat/multilingual-e5-large", input="only one")
    assert hf.requests[1].json == {"inputs": "only one"}  # flat vector back
    assert _vectors(single) == [fake_embedding("only one")]
    dumped = r.model_dump()
    sdk = openai.types.CreateEmbeddingResponse.model_validate(dumped).model_dump()
    assert {k: sdk[k] for k in dumped} == dumped


def test_nested_feature_extraction_shapes(hf: HFRouterUpstream) -> None:
    hf.nested_models = {"sentence-transformers/all-MiniLM-L6-v2"}
    try:
        batch = embedding(model="huggingface/sentence-transformers/all-MiniLM-L6-v2", input=TEXTS)
        single = embedding(model="huggingface/sentence-transformers/all-MiniLM-L6-v2", input="x y")
    finally:
        hf.nested_models = set()
    assert _vectors(batch) == [fake_embedding(t) for t in TEXTS]
    assert _vectors(single) == [fake_embedding("x y")]


def test_token_level_output_is_a_clear_error(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(json=[[[0.1, 0.2], [0.3, 0.4]]]))
    with pytest.raises(errors.UnprocessableResponseError, match="sentence-embedding model"):
        embedding(model="huggingface/org/token-model", input="a b")


def test_hf_provider_uses_hub_mapping_once(hf: HFRouterUpstream, hub: HubUpstream) -> None:
    for _ in range(3):
        r = embedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input=TEXTS)
        assert _vectors(r) == [fake_embedding(t) for t in TEXTS]
    lookups = [q for q in hub.requests if q.path == "/api/models/Qwen/Qwen3-Embedding-8B"]
    assert len(lookups) == 1  # cached
    assert ("expand[]", "inferenceProviderMapping") in lookups[0].query_items
    assert lookups[0].token == "hf_test_token_123456"
    calls = [q for q in hf.requests if q.path == "/nebius/v1/embeddings"]
    assert len(calls) == 3 and calls[0].json["model"] == "Qwen/Qwen3-Embedding-8B-nebius"
    assert r.meta.provider == "nebius"
    # the :provider suffix is the same request
    embedding(model="huggingface/Qwen/Qwen3-Embedding-8B:together", input="x")
    assert hf.requests[-1].path == "/together/v1/embeddings"
    assert hf.requests[-1].json["model"] == "togethercomputer/Qwen3-Embedding-8B"


def test_an_hf_provider_added_as_one_table_row(hf: HFRouterUpstream, hub: HubUpstream) -> None:
    """fireworks-ai embeddings are one row of providers.tasks.SUBPROVIDERS: its own route and model id."""
    r = embedding(model="huggingface/fireworks-ai/nomic-ai/nomic-embed-text-v1.5", input=TEXTS)
    assert _vectors(r) == [fake_embedding(t) for t in TEXTS] and r.meta.provider == "fireworks-ai"
    calls = [q for q in hf.requests if q.path == "/fireworks-ai/inference/v1/embeddings"]
    assert len(calls) == 1 and calls[0].json["model"] == "nomic-ai/nomic-embed-text-v1.5"
    assert [q.path for q in hub.requests] == ["/api/models/nomic-ai/nomic-embed-text-v1.5"]


def test_model_not_on_provider_and_unknown_repo(hf: HFRouterUpstream, hub: HubUpstream) -> None:
    with pytest.raises(errors.NotFoundError, match="not available on HF provider 'sambanova'"):
        embedding(model="huggingface/sambanova/Qwen/Qwen3-Embedding-8B", input="x")
    with pytest.raises(errors.NotFoundError, match="Repository not found"):
        embedding(model="huggingface/nebius/acme/missing-model", input="x")
    with pytest.raises(errors.NotFoundError):  # the failure is cached: no second lookup
        embedding(model="huggingface/nebius/acme/missing-model", input="x")
    assert len([q for q in hub.requests if q.path == "/api/models/acme/missing-model"]) == 1


def test_provider_without_embeddings_and_policies_are_refused(hf: HFRouterUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="does not serve embeddings"):
        embedding(model="huggingface/groq/org/model", input="x")
    with pytest.raises(errors.InvalidRequestArgumentError, match="routing policy"):
        embedding(model="huggingface/org/model:fastest", input="x")
    assert hf.requests == []


def test_deepinfra_embeddings(deepinfra: DeepInfraUpstream) -> None:
    r = embedding(model="deepinfra/BAAI/bge-m3", input=TEXTS)
    assert deepinfra.requests[0].path == "/v1/openai/embeddings"
    assert deepinfra.requests[0].json == {"model": "BAAI/bge-m3", "input": TEXTS}
    assert _vectors(r) == [fake_embedding(t) for t in TEXTS]
    assert not r.meta.usage_estimated and r.usage.prompt_tokens == 7


def test_out_of_order_data_is_sorted(oai: OpenAICompatUpstream) -> None:
    data = [{"object": "embedding", "index": i, "embedding": [float(i)]} for i in (2, 0, 1)]
    oai.enqueue(
        Reply(json={"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    )
    r = embedding(model="openai/tei", api_base=oai.url + "/v1", api_key="sk-123456", input=["a", "b", "c"])
    assert _vectors(r) == [[0.0], [1.0], [2.0]]
    oai.enqueue(Reply(json={"object": "list", "data": data[:2], "model": "m"}))
    with pytest.raises(errors.UnprocessableResponseError, match="asked for 3 embeddings"):
        embedding(model="openai/tei", api_base=oai.url + "/v1", api_key="sk-123456", input=["a", "b", "c"])


def test_tei_through_huggingface_tei(oai: OpenAICompatUpstream) -> None:
    oai.require_auth = False
    try:
        r = embedding(model="huggingface/tei", api_base=oai.url, input=["x"])
    finally:
        oai.require_auth = True
    assert oai.requests[0].path == "/v1/embeddings" and _vectors(r) == [fake_embedding("x")]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"input": []}, "non-empty"),
        ({"input": ["ok", 1]}, "list of strings"),
        ({"input": ["ok", ""]}, r"input\[1\] is an empty string"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_embedding_arguments(hf: HFRouterUpstream, kw: dict, needle: str) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match=needle):
        embedding(model="huggingface/intfloat/multilingual-e5-large", **kw)
    assert hf.requests == []


def test_aembedding_concurrent_single_flight_mapping(hf: HFRouterUpstream, hub: HubUpstream) -> None:
    async def main() -> None:
        results = await asyncio.gather(
            *[aembedding(model="huggingface/scaleway/Qwen/Qwen3-Embedding-8B", input=f"text {i}") for i in range(20)]
        )
        assert [_vectors(r)[0] for r in results] == [fake_embedding(f"text {i}") for i in range(20)]

    asyncio.run(main())
    assert len([q for q in hub.requests if q.path.startswith("/api/models/")]) == 1
    assert hf.requests[0].json["model"] == "qwen3-embedding-8b"


def test_mapping_cache_is_per_token(hf: HFRouterUpstream, hub: HubUpstream) -> None:
    hub.valid_tokens = {"hf_good_token"}
    with pytest.raises(errors.AuthenticationError):
        embedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="x", api_key="hf_bad_token")
    # another user's failure is not served to this one
    r = embedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="x", api_key="hf_good_token")
    assert r.data[0].embedding == fake_embedding("x")
    # a cached failure is raised as a fresh error each time (no growing traceback)
    first = second = None
    for _ in range(2):
        try:
            embedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="x", api_key="hf_bad_token")
        except errors.AuthenticationError as e:
            first, second = second, e
    assert first is not None and second is not None and first is not second


def test_cancelling_the_first_caller_does_not_cancel_the_others(hf: HFRouterUpstream, hub: HubUpstream) -> None:
    hub.enqueue(
        Reply(
            json={
                "id": "Qwen/Qwen3-Embedding-8B",
                "inferenceProviderMapping": {
                    "nebius": {
                        "status": "live",
                        "providerId": "Qwen/Qwen3-Embedding-8B-nebius",
                        "task": "feature-extraction",
                    }
                },
            },
            delay=0.4,
        )
    )

    async def main() -> None:
        first = asyncio.create_task(aembedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="a"))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(aembedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="b"))
        await asyncio.sleep(0.1)
        first.cancel()
        result = await second
        assert result.data[0].embedding == fake_embedding("b")
        assert first.cancelled()

    asyncio.run(main())
    assert len([q for q in hub.requests if q.path.startswith("/api/models/")]) == 1
