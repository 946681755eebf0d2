"""Cost on every result, from the providers' own catalogs; fallbacks, overrides and their records."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from providers.errors import InvalidRequestArgumentError
from router import acompletion, completion, embedding, stream_chunk_builder
from router.pricing import Catalog, Price
from router.pricing.sources import parse_deepinfra, parse_hf_router
from router.types import ChatCompletion
from tests.cli import polyroute_argv
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, OpenAICompatUpstream, TGIUpstream

USER = [{"role": "user", "content": "price this call please"}]


def usd(prompt: int, completion: int, input_per_m: str, output_per_m: str) -> float:
    return float((prompt * Decimal(input_per_m) + completion * Decimal(output_per_m)) / 1_000_000)


def _chat(**kw: object) -> ChatCompletion:
    r = completion(**kw)  # type: ignore[arg-type]
    assert isinstance(r, ChatCompletion)
    return r


# ---------------------------------------------------------------- parsing


def test_parse_hf_router_realistic_payload() -> None:
    payload = {
        "object": "list",
        "data": [
            {
                "id": "deepseek-ai/DeepSeek-R1",
                "providers": [
                    {
                        "provider": "novita",
                        "status": "live",
                        "context_length": 163840,
                        "pricing": {"input": 0.7, "output": 2.5},
                        "supports_tools": True,
                        "supports_structured_output": False,
                        "throughput": 24.7,
                        "first_token_latency_ms": 1490,
                        "is_model_author": False,
                    },
                    {"provider": "featherless-ai", "status": "error", "is_model_author": False},
                    {"provider": "hf-inference", "status": "live", "is_free": True},
                    {"provider": "broken", "status": "live", "pricing": {"input": "n/a", "output": 1}},
                    "garbage",
                ],
            },
            {"no-id": True},
        ],
    }
    offers = {o.provider: o for o in parse_hf_router(payload, "u", 1.0)}
    novita = offers["novita"]
    assert novita.price == Price(Decimal("0.7"), Decimal("2.5"), "u", 1.0)
    assert (novita.context_length, novita.supports_tools, novita.supports_structured_output) == (163840, True, False)
    assert (novita.throughput, novita.first_token_latency_ms) == (24.7, 1490.0)
    assert offers["featherless-ai"].status == "error" and offers["featherless-ai"].price is None
    assert offers["hf-inference"].price is not None and offers["hf-inference"].price.output_per_m == 0
    assert offers["broken"].price is None
    assert parse_hf_router({"unexpected": 1}, "u", 1.0) == []


def test_parse_deepinfra_with_null_metadata_and_cache_price() -> None:
    payload = [
        {
            "id": "openai/gpt-oss-120b",
            "metadata": {
                "context_length": 131072,
                "max_tokens": 65536,
                "pricing": {"input_tokens": 0.05, "output_tokens": 0.45, "cache_read_tokens": 0.005},
            },
        },
        {"id": "BAAI/bge-m3", "metadata": None},
    ]
    offers = {o.model: o for o in parse_deepinfra(payload, "u", 2.0)}
    gpt = offers["openai/gpt-oss-120b"]
    assert gpt.price is not None and gpt.price.cache_read_per_m == Decimal("0.005")
    assert (gpt.context_length, gpt.max_output_tokens) == (131072, 65536)
    assert offers["BAAI/bge-m3"].price is None
    assert parse_deepinfra({"data": payload}, "u", 2.0)[0].model == "openai/gpt-oss-120b"


def test_price_arithmetic_is_exact() -> None:
    price = Price(Decimal("0.7"), Decimal("2.5"), "x", cache_read_per_m=Decimal("0.07"))
    assert price.cost_pico(1_000_000, 0) == 700_000_000_000  # $0.70
    assert price.cost_pico(3, 7) == 3 * 700_000 + 7 * 2_500_000
    assert price.cost_pico(1000, 0, cached_tokens=400) == 600 * 700_000 + 400 * 70_000
    assert sum(price.cost_pico(1, 1) for _ in range(1_000_000)) == price.cost_pico(1_000_000, 1_000_000)


# ---------------------------------------------------------------- cost on results


def test_hf_cost_at_the_pinned_providers_price(hf: HFRouterUpstream) -> None:
    r = _chat(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER)
    assert r.usage is not None
    meta = r.meta
    assert meta.cost_usd == pytest.approx(usd(r.usage.prompt_tokens, r.usage.completion_tokens, "3.0", "7.0"))
    assert meta.price_source == f"{hf.url}/v1/models" and meta.price_fetched_at is not None
    assert meta.unpriced_reason is None and meta.cost_estimated is False
    assert meta.cost_pico == r.usage.prompt_tokens * 3_000_000 + r.usage.completion_tokens * 7_000_000


def test_hf_unpinned_cost_follows_the_provider_that_served(hf: HFRouterUpstream) -> None:
    r = _chat(model="huggingface/deepseek-ai/DeepSeek-R1:fastest", messages=USER)
    assert r.meta.provider == "novita" and r.usage is not None  # the router's x-inference-provider header
    assert r.meta.cost_usd == pytest.approx(usd(r.usage.prompt_tokens, r.usage.completion_tokens, "0.7", "2.5"))


def test_unknown_price_is_none_with_a_reason_never_zero(hf: HFRouterUpstream, oai: OpenAICompatUpstream) -> None:
    r = _chat(model="huggingface/featherless-ai/Qwen/Qwen3-8B", messages=USER)
    assert r.meta.cost_usd is None and "lists no price" in (r.meta.unpriced_reason or "")
    local = _chat(model="openai/m", api_base=oai.url + "/v1", api_key="sk-1234567", messages=USER)
    assert local.meta.cost_usd is None and "set_price" in (local.meta.unpriced_reason or "")


def test_deepinfra_cost_and_its_own_estimate_side_by_side(deepinfra: DeepInfraUpstream) -> None:
    r = _chat(model="deepinfra/openai/gpt-oss-120b", messages=USER)
    assert r.usage is not None
    assert r.meta.cost_usd == pytest.approx(usd(r.usage.prompt_tokens, r.usage.completion_tokens, "0.05", "0.45"))
    assert r.meta.upstream_cost_usd is not None and r.meta.upstream_cost_usd > 0  # kept, not trusted


def test_tgi_is_free_unless_configured(tgi: TGIUpstream) -> None:
    r = _chat(model="huggingface/tgi", api_base=tgi.url, messages=USER)
    assert (r.meta.cost_usd, r.meta.price_source) == (0.0, "config")
    catalog = Catalog(cache_dir=False)
    catalog.set_price("huggingface/tgi", input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    priced = _chat(model="huggingface/tgi", api_base=tgi.url, messages=USER, catalog=catalog)
    assert priced.usage is not None
    assert priced.meta.cost_usd == pytest.approx(
        usd(priced.usage.prompt_tokens, priced.usage.completion_tokens, "1", "2")
    )


def test_override_wins_over_the_catalog(hf: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.set_price("huggingface/together/deepseek-ai/DeepSeek-R1", input_per_million=1, output_per_million=1)
    r = _chat(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER, catalog=catalog)
    assert r.usage is not None and r.meta.price_source == "config"
    assert r.meta.cost_usd == pytest.approx(r.usage.total_tokens / 1_000_000)
    assert catalog.fetch_count == 0  # an override needs no catalog


def test_stream_cost_equals_non_stream_cost(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream) -> None:
    for model in ("huggingface/together/deepseek-ai/DeepSeek-R1", "deepinfra/openai/gpt-oss-120b"):
        plain = _chat(model=model, messages=USER)
        stream = completion(model=model, messages=USER, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)  # type: ignore[arg-type]
        assert stream.meta.cost_pico == plain.meta.cost_pico and stream.meta.cost_pico  # type: ignore[union-attr]
        assert stream_chunk_builder(chunks).usage == stream.usage  # type: ignore[union-attr]


def test_estimated_usage_marks_the_cost_estimated(oai: OpenAICompatUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.set_price("openai/m", input_per_million=1, output_per_million=2)
    oai.usage_mode = "none"
    try:
        stream = completion(
            model="openai/m",
            api_base=oai.url + "/v1",
            api_key="sk-1234567",
            messages=USER,
            stream=True,
            catalog=catalog,
        )
        list(stream)  # type: ignore[arg-type]
    finally:
        oai.usage_mode = "separate"
    assert stream.meta.cost_estimated and stream.meta.cost_usd and stream.meta.cost_usd > 0  # type: ignore[union-attr]


def test_async_and_embedding_costs(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream) -> None:
    r = asyncio.run(acompletion(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER))
    assert isinstance(r, ChatCompletion) and r.meta.cost_usd and r.meta.cost_usd > 0
    e = embedding(model="deepinfra/BAAI/bge-m3", input="x")
    assert e.meta.cost_usd is None and e.meta.unpriced_reason


# ---------------------------------------------------------------- catalog behaviour


def _hf_fetches(server: HFRouterUpstream) -> int:
    return sum(1 for q in server.requests if q.path == "/v1/models")


def test_concurrent_first_calls_make_one_fetch(hf: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False)

    async def main() -> list[object]:
        return await asyncio.gather(
            *[
                acompletion(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER, catalog=catalog)
                for _ in range(100)
            ]
        )

    results = asyncio.run(main())
    assert all(isinstance(r, ChatCompletion) and r.meta.cost_usd for r in results)
    assert _hf_fetches(hf) == 1 and catalog.fetch_count == 1


def test_threads_share_one_fetch(hf: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    target = catalog.registry.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")
    threads = [threading.Thread(target=catalog.lookup, args=(target, "together")) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _hf_fetches(hf) == 1


def test_ttl_then_background_refresh(hf: HFRouterUpstream, request: pytest.FixtureRequest) -> None:
    now = [1000.0]
    catalog = Catalog(cache_dir=False, ttl=60, clock=lambda: now[0])
    target = catalog.registry.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")
    assert catalog.lookup(target, "together").price is not None
    now[0] += 30
    catalog.lookup(target, "together")
    assert _hf_fetches(hf) == 1  # still fresh
    original = hf.catalog[0]["providers"][1]["pricing"]
    request.addfinalizer(lambda: hf.catalog[0]["providers"][1].update(pricing=original))
    hf.catalog[0]["providers"][1]["pricing"] = {"input": 4.0, "output": 8.0}
    now[0] += 60
    stale = catalog.lookup(target, "together")  # served at once, refreshed behind it
    assert stale.price is not None and stale.price.input_per_m == Decimal("3.0")
    deadline = time.time() + 5
    while catalog.lookup(target, "together").price.input_per_m != Decimal("4.0"):  # type: ignore[union-attr]
        assert time.time() < deadline
        time.sleep(0.02)
    assert _hf_fetches(hf) == 2


def test_disk_cache_survives_a_restart(hf: HFRouterUpstream, tmp_path: Path) -> None:
    first = Catalog(cache_dir=tmp_path)
    target = first.registry.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")
    assert first.lookup(target, "together").price is not None
    second = Catalog(cache_dir=tmp_path)
    price = second.lookup(target, "together").price
    assert price is not None and price.source == f"{hf.url}/v1/models" and second.fetch_count == 0
    assert _hf_fetches(hf) == 1


def test_offline_falls_back_to_disk_then_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ROUTER_URL", "http://127.0.0.1:9")  # nothing listens there
    offline = Catalog(cache_dir=tmp_path)
    target = offline.registry.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")
    price = offline.lookup(target, "together").price
    assert price is not None and price.source == "snapshot"
    data = offline.source("huggingface")
    assert data.origin == "snapshot" and data.error and "APIConnectionError" in data.error
    # a disk copy from an earlier run is preferred to the snapshot, and says when it was fetched
    url = "http://127.0.0.1:9/v1/models"
    payload = {
        "data": [
            {
                "id": "deepseek-ai/DeepSeek-R1",
                "providers": [{"provider": "together", "status": "live", "pricing": {"input": 9, "output": 9}}],
            }
        ]
    }
    offline._write_disk(url, payload, 1234.0)
    again = Catalog(cache_dir=tmp_path)
    old = again.lookup(target, "together").price
    assert old is not None and old.source == url and old.fetched_at == 1234.0 and old.input_per_m == 9


class _Unreachable:
    """A transport whose every request fails as if the network were down."""

    def send(self, request: object, timeouts: object) -> object:
        from providers.errors import APIConnectionError

        raise APIConnectionError("network unreachable")

    def open_stream(self, request: object, timeouts: object) -> object:
        raise NotImplementedError


def test_result_says_when_the_snapshot_priced_it(hf: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False, transport=_Unreachable())  # type: ignore[arg-type]
    r = _chat(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER, catalog=catalog)
    saved = json.loads(Path(__file__).resolve().parent.parent.joinpath("router/pricing/snapshot.json").read_text())
    assert r.meta.price_source == "snapshot" and r.meta.price_fetched_at == saved["fetched_at"]
    assert r.meta.cost_usd and r.meta.cost_usd > 0


def test_bad_overrides_say_what_to_fix() -> None:
    catalog = Catalog(cache_dir=False)
    with pytest.raises(InvalidRequestArgumentError, match="not both"):
        catalog.set_price("openai/m", input_per_million=1, input_cost_per_token=1e-6, output_per_million=1)
    with pytest.raises(InvalidRequestArgumentError, match="output_per_million"):
        catalog.set_price("openai/m", input_per_million=1)
    with pytest.raises(InvalidRequestArgumentError, match="non-negative"):
        catalog.set_price("openai/m", input_per_million=-1, output_per_million=1)
    with pytest.raises(InvalidRequestArgumentError, match=r"pricing\[0\].inptu_per_million: unknown key"):
        catalog.load_overrides([{"model": "openai/m", "inptu_per_million": 1}], "p.yaml")
    with pytest.raises(InvalidRequestArgumentError, match="unknown provider prefix"):
        catalog.set_price("nope/m", input_per_million=1, output_per_million=1)


def test_snapshot_file_is_valid_and_parses() -> None:
    from router.pricing.catalog import SNAPSHOT_PATH

    saved = json.loads(SNAPSHOT_PATH.read_text())
    assert parse_hf_router(saved["huggingface"], "snapshot", 0) and parse_deepinfra(saved["deepinfra"], "snapshot", 0)


# ---------------------------------------------------------------- config, public helpers, CLI


def test_example_pricing_config_loads(tgi: TGIUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.load_file(Path(__file__).resolve().parent.parent / "configs" / "pricing.yaml")
    r = _chat(model="huggingface/tgi", api_base=tgi.url, messages=USER, catalog=catalog)
    assert r.usage is not None and r.meta.price_source == "config"
    assert r.meta.cost_usd == pytest.approx(usd(r.usage.prompt_tokens, r.usage.completion_tokens, "0.2", "0.6"))


def test_pricing_file_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("pricing:\n  - model: openai/m\n    input_per_million: 1\n")
    with pytest.raises(InvalidRequestArgumentError, match=r"p.yaml: pricing\[0\]: .*output_per_million"):
        Catalog(cache_dir=False).load_file(bad)
    bad.write_text("pricing: {model: x}\n")
    with pytest.raises(InvalidRequestArgumentError, match="expected a list"):
        Catalog(cache_dir=False).load_file(bad)


def test_completion_cost_and_cost_per_token(hf: HFRouterUpstream, oai: OpenAICompatUpstream) -> None:
    from router import completion_cost, cost_per_token, errors

    r = _chat(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=USER)
    assert completion_cost(r) == r.meta.cost_usd
    assert completion_cost(r.model_dump(), model="huggingface/novita/deepseek-ai/DeepSeek-R1") == pytest.approx(
        usd(r.usage.prompt_tokens, r.usage.completion_tokens, "0.7", "2.5")  # type: ignore[union-attr]
    )
    assert cost_per_token("huggingface/together/deepseek-ai/DeepSeek-R1", 1_000_000, 1_000_000) == (3.0, 7.0)
    with pytest.raises(errors.UnpricedCallError, match="pin one"):
        cost_per_token("huggingface/deepseek-ai/DeepSeek-R1", 10, 10)
    local = _chat(model="openai/m", api_base=oai.url + "/v1", api_key="sk-1234567", messages=USER)
    with pytest.raises(errors.UnpricedCallError, match="no cost for this result"):
        completion_cost(local)


def test_models_cli_table_and_json(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tmp_path: Path) -> None:
    import subprocess

    env = {
        "HF_ROUTER_URL": hf.url,
        "DEEPINFRA_API_BASE": deepinfra.url + "/v1/openai",
        "PATH": "/usr/bin:/bin",
        "DEEPINFRA_API_KEY": "di-test-key-abcdef",
        "POLYROUTE_CACHE_DIR": str(tmp_path / "live"),
    }

    def models(*args: str, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return subprocess.run(polyroute_argv("models", *args), capture_output=True, text=True, env=env, timeout=60)

    table = models("--model", "deepseek-r1", "--refresh")
    assert table.returncode == 0, table.stderr
    assert f"huggingface: {hf.url}/v1/models, fetched 0 s ago (live)" in table.stdout
    lines = [line for line in table.stdout.splitlines() if line.startswith("deepseek-ai/DeepSeek-R1 ")]
    assert any("together" in line and "3" in line and "163840" in line for line in lines)
    assert any("featherless-ai" in line and "error" in line for line in lines)
    out = models("--provider", "together", "--json")
    data = json.loads(out.stdout)
    assert {m["provider"] for m in data["models"]} == {"together"}
    assert {s["family"] for s in data["sources"]} == {"huggingface", "deepinfra"}
    together = next(m for m in data["models"] if m["model"] == "deepseek-ai/DeepSeek-R1")
    assert (together["input_per_million"], together["output_per_million"]) == (3.0, 7.0)
    unreachable = {"HF_ROUTER_URL": "http://127.0.0.1:9", "DEEPINFRA_API_BASE": "http://127.0.0.1:9"}
    offline = models(
        "--model", "gpt-oss-120b", env=env | unreachable | {"POLYROUTE_CACHE_DIR": str(tmp_path / "offline")}
    )
    assert offline.returncode == 0 and "bundled snapshot" in offline.stdout and "live fetch failed" in offline.stdout
