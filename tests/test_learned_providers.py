"""HF provider names are learned from the HF router's live catalog (it lists every provider serving each
model): a provider HF added after this release is accepted in both model-string forms, while a near miss
of a known name still gets "did you mean". The built-in list is only the offline fallback."""

from __future__ import annotations

import asyncio

import pytest

from providers.registry import Registry
from router import Catalog, Router, acompletion, completion, errors
from tests.upstreams import HFRouterUpstream
from tests.upstreams.hub import HubUpstream

NEW = "zephyr-cloud"  # not among the built-in HF provider names
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def hf_new(hf: HFRouterUpstream) -> HFRouterUpstream:
    qwen = next(m for m in hf.catalog if m["id"] == "Qwen/Qwen3-8B")
    qwen["providers"].append({**qwen["providers"][0], "provider": NEW})
    return hf


def test_a_provider_only_the_catalog_knows_is_accepted_in_both_forms(hf_new: HFRouterUpstream) -> None:
    registry, catalog = Registry(), Catalog(cache_dir=False)
    assert NEW not in registry.hf_providers
    r = completion(model=f"huggingface/{NEW}/Qwen/Qwen3-8B", messages=USER, registry=registry, catalog=catalog)
    assert r.choices[0].message.content and r.meta.provider == NEW
    assert hf_new.requests[-1].json["model"] == f"Qwen/Qwen3-8B:{NEW}"
    r = asyncio.run(
        acompletion(model=f"huggingface/Qwen/Qwen3-8B:{NEW}", messages=USER, registry=Registry(), catalog=catalog)
    )
    assert hf_new.requests[-1].json["model"] == f"Qwen/Qwen3-8B:{NEW}"


def test_a_near_miss_still_gets_did_you_mean_and_sends_nothing(hf_new: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    with pytest.raises(errors.InvalidRequestArgumentError, match=f"did you mean '{NEW}'"):
        completion(model="huggingface/zephyr-clod/Qwen/Qwen3-8B", messages=USER, registry=Registry(), catalog=catalog)
    with pytest.raises(errors.InvalidRequestArgumentError, match="did you mean 'together'"):
        completion(model="huggingface/togther/Qwen/Qwen3-8B", messages=USER, registry=Registry(), catalog=catalog)
    assert [q.path for q in hf_new.requests] == ["/v1/models"]  # the catalog was read; no call was sent


def test_a_router_learns_the_names_its_model_list_uses(hf_new: HFRouterUpstream) -> None:
    router = Router(
        [{"model_name": "chat", "params": {"model": f"huggingface/{NEW}/Qwen/Qwen3-8B"}}],
        registry=Registry(),
        catalog=Catalog(cache_dir=False),
    )
    r = router.completion("chat", USER)
    assert r.meta.provider == NEW


MAPPED = "aurora-infer"  # neither built in nor in the router's catalog: only the model's Hub mapping lists it


def test_a_provider_only_the_models_hub_mapping_lists_is_accepted(hub: HubUpstream, hf: HFRouterUpstream) -> None:
    hub.mappings["Qwen/Qwen3-8B"] = {MAPPED: {"providerId": "qwen3-8b", "task": "conversational", "status": "live"}}
    registry, catalog = Registry(), Catalog(cache_dir=False)
    r = completion(model=f"huggingface/{MAPPED}/Qwen/Qwen3-8B", messages=USER, registry=registry, catalog=catalog)
    assert r.meta.provider == MAPPED and hf.requests[-1].json["model"] == f"Qwen/Qwen3-8B:{MAPPED}"
    assert MAPPED in registry.hf_providers
    r = asyncio.run(
        acompletion(model=f"huggingface/Qwen/Qwen3-8B:{MAPPED}", messages=USER, registry=Registry(), catalog=catalog)
    )
    assert r.meta.provider == MAPPED
    assert [q.path for q in hub.requests] == ["/api/models/Qwen/Qwen3-8B"]  # looked up once, then cached


def test_a_name_no_mapping_lists_is_still_refused_with_did_you_mean(hub: HubUpstream, hf: HFRouterUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="did you mean 'together'"):
        completion(
            model="huggingface/togethr/Qwen/Qwen3-8B",
            messages=USER,
            registry=Registry(),
            catalog=Catalog(cache_dir=False),
        )
    assert not [q for q in hf.requests if q.path.endswith("/chat/completions")]  # nothing was sent
