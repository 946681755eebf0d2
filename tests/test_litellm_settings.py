"""LiteLLM's settings, one by one: the config report (the same list with and without --strict), LiteLLM's model
strings, and the routing settings (order, max_retries, timeouts, wildcards, aliases, api_version) through the
Router over real HTTP to local upstreams."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from providers.errors import InvalidRequestArgumentError
from providers.litellm_names import litellm_model, unservable_reason
from router.proxy.config import ConfigError, parse_config
from router.routing import names
from router.routing.router import Router
from tests.upstreams import OpenAICompatUpstream, Reply
from tests.upstreams.azure import AzureUpstream

USER = [{"role": "user", "content": "route me"}]


def dep(group: str, server: OpenAICompatUpstream, name: str = "m", **params: Any) -> dict[str, Any]:
    base = {"model": f"openai/{name}", "api_base": server.url + "/v1", "api_key": "sk-router-1234"}
    return {"model_name": group, "litellm_params": {**base, **params}}


# ---------------------------------------------------------------- model strings


@pytest.mark.parametrize(
    ("written", "provider", "expected"),
    [
        ("gpt-4o", None, "openai/gpt-4o"),
        ("text-embedding-3-small", None, "openai/text-embedding-3-small"),
        ("claude-3-5-sonnet-20240620", None, "anthropic/claude-3-5-sonnet-20240620"),
        ("my-llama", "hosted_vllm", "hosted_vllm/my-llama"),
        ("openai/gpt-4o", "openai", "openai/gpt-4o"),
        ("*", None, "*"),
        ("groq/*", None, "groq/*"),
    ],
)
def test_litellm_model_strings(written: str, provider: str | None, expected: str) -> None:
    assert litellm_model(written, provider) == expected


def test_unservable_providers_say_why() -> None:
    assert "SigV4" in (unservable_reason("bedrock/anthropic.claude-v2") or "")
    assert "OAuth" in (unservable_reason("vertex_ai/gemini-pro") or "")
    assert unservable_reason("azure/gpt4o") is None and unservable_reason("openai/x") is None


# ---------------------------------------------------------------- the report


def _mixed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.delenv("LITELLM_TEST_UNSET", raising=False)
    return {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "gpt-4o", "tags": ["x"], "api_key": "sk-1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/m", "api_key": "os.environ/LITELLM_TEST_UNSET"}},
            {"model_name": "b", "litellm_params": {"model": "bedrock/anthropic.claude-v2", "aws_region_name": "x"}},
            {"model_name": "c", "litellm_params": {"model": "acme/large"}},
            {"model_name": "d", "litellm_params": {"model": "hosted_vllm/llama"}},  # no api_base
        ],
        "router_settings": {"model_group_alias": {"claude": "b"}, "redis_host": "localhost"},
        "litellm_settings": {"fallbacks": [{"a": ["b", "c"]}], "success_callback": ["langfuse"], "drop_params": True},
        "general_settings": {"alerting": ["slack"]},
        "callbacks": ["otel"],
    }


EXPECTED = [
    "callbacks",
    "model_list[0].litellm_params.tags",
    "model_list[1].litellm_params.api_key",
    "model_list[2].litellm_params.model",
    "model_list[3].litellm_params.model",
    "model_list[4].litellm_params.model",
    "litellm_settings.fallbacks",
    "litellm_settings.fallbacks",
    "litellm_settings.success_callback",
    "router_settings.redis_host",
    "general_settings.alerting",
]


def test_strict_refuses_with_exactly_the_warning_list(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(_mixed(monkeypatch), "lite.yaml")
    assert config.unsupported == EXPECTED
    report = config.report()
    sections = ["callbacks", "model_list", "router_settings", "litellm_settings", "general_settings"]
    by_section = sorted(EXPECTED, key=lambda path: sections.index(path.split(".")[0].split("[")[0]))
    assert re.findall(r"^\s+lite\.yaml: (\S+): ", report, re.MULTILINE) == by_section  # grouped by section
    assert "aws_region_name" not in report  # a deployment that is not used: one line, not one per setting
    with pytest.raises(ConfigError) as refused:
        parse_config(_mixed(monkeypatch), "lite.yaml", strict=True)
    assert refused.value.message.startswith(report) and "--strict" in refused.value.message
    assert config.unserved["b"][0] == 501 and "bedrock" in config.unserved["b"][1]
    assert config.unserved["claude"][0] == 501 and "alias of 'b'" in config.unserved["claude"][1]
    assert config.unserved["c"][0] == 501 and "unknown provider 'acme'" in config.unserved["c"][1]
    assert config.unserved["d"][0] == 503 and "needs api_base" in config.unserved["d"][1]
    assert config.router_kwargs["fallbacks"] == []  # both fallback groups cannot answer
    assert config.model_list[0]["litellm_params"] == {"model": "openai/gpt-4o", "api_key": "sk-1"}


def test_a_providers_section_makes_a_prefix_servable(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {
        "model_list": [{"model_name": "c", "litellm_params": {"model": "acme/large", "headers": {"X-A": "1"}}}],
        "providers": [{"name": "acme", "base_url": "https://api.acme.test/v1", "key_required": False}],
    }
    config = parse_config(data, "p.yaml")
    assert not config.problems and not config.unserved
    assert config.model_list[0]["litellm_params"] == {"model": "acme/large", "extra_headers": {"X-A": "1"}}


def test_costs_become_prices_and_environment_variables_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_TEST_FROM_FILE", "before")  # restored after the test
    data = {
        "environment_variables": {"LITELLM_TEST_FROM_FILE": 42},
        "model_list": [
            {
                "model_name": "a",
                "litellm_params": {
                    "model": "openai/m",
                    "api_key": "os.environ/LITELLM_TEST_FROM_FILE",
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6,
                },
            }
        ],
        "pricing": [{"model": "openai/other", "input_per_million": 1, "output_per_million": 1}],
    }
    config = parse_config(data, "p.yaml")
    assert config.model_list[0]["litellm_params"]["api_key"] == "42"
    assert config.pricing[0] == {"model": "openai/m", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    data["environment_variables"] = {"X": ["a list"]}
    with pytest.raises(ConfigError, match=r"p.yaml: environment_variables.X: expected NAME: value"):
        parse_config(data, "p.yaml")


def test_nothing_servable_is_an_error_naming_each_deployment() -> None:
    data = {"model_list": [{"model_name": "b", "litellm_params": {"model": "vertex_ai/gemini-pro"}}]}
    with pytest.raises(ConfigError, match=r"(?s)model_list\[0\].litellm_params.model: vertex_ai.*no deployment"):
        parse_config(data, "p.yaml")


# ---------------------------------------------------------------- routing settings, through the Router


def test_order_then_max_retries(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    router = Router([dep("chat", a, order=1, max_retries=0), dep("chat", b, order=2)], num_retries=3)
    for _ in range(3):
        router.completion(model="chat", messages=USER)
    assert len(a.requests) == 3 and not b.requests
    a.enqueue(Reply(status=500, json={"error": {"message": "down"}}))
    reply = router.completion(model="chat", messages=USER)
    assert [t.deployment for t in reply.meta.attempts] == ["chat[0]:openai/m", "chat[1]:openai/m"]


def test_a_deployment_timeout_moves_on(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.latency = 5.0
    try:
        router = Router([dep("chat", a, order=1, timeout=0.3, stream_timeout=0.3), dep("chat", b, order=2)])
        reply = router.completion(model="chat", messages=USER)
        assert reply.meta.attempts[-1].deployment == "chat[1]:openai/m" and b.requests
        stream = router.completion(model="chat", messages=USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert len(b.requests) == 2
    finally:
        a.latency = 0.0


def test_wildcards_and_aliases(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    router = Router(
        [dep("fixed", a, "fixed-model"), dep("acme/*", b, "*"), dep("*", a, "*")],
        model_group_alias={"gpt-4": "fixed", "hidden-one": {"model": "fixed", "hidden": True}},
    )
    router.completion(model="acme/large-2", messages=USER)
    assert b.requests[-1].json["model"] == "large-2"
    router.completion(model="anything-else", messages=USER)
    assert a.requests[-1].json["model"] == "anything-else"
    router.completion(model="gpt-4", messages=USER)
    assert a.requests[-1].json["model"] == "fixed-model"
    assert router.listed() == ["fixed", "gpt-4"]  # the hidden alias and the made groups are not listed


def test_wildcard_groups_are_bounded(a: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names, "MADE_GROUPS", 2)
    router = Router([dep("*", a, "*")])
    for name in ("one", "two", "three"):
        router.completion(model=name, messages=USER)
    assert sorted(router.groups) == ["three", "two"]
    assert router.listed() == []  # made groups are not listed


@pytest.mark.parametrize(
    ("alias", "needle"),
    [
        ({"gpt-4": "nope"}, r"'gpt-4' -> 'nope': 'nope' is not a model_name"),
        ({"gpt-4": {"hidden": True}}, "expected a model_name or"),
        (["gpt-4"], "model_group_alias must map alias names"),
    ],
)
def test_alias_mistakes(a: OpenAICompatUpstream, alias: Any, needle: str) -> None:
    with pytest.raises(InvalidRequestArgumentError, match=needle):
        Router([dep("fixed", a)], model_group_alias=alias)


@pytest.fixture(scope="module")
def azure() -> Iterator[AzureUpstream]:
    with AzureUpstream() as server:
        yield server


def test_azure_through_the_router(azure: AzureUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    azure.reset()
    monkeypatch.setenv("AZURE_API_KEY", "azure-key-0123456789")
    monkeypatch.delenv("AZURE_API_VERSION", raising=False)
    monkeypatch.delenv("AZURE_API_BASE", raising=False)
    router = Router(
        [
            {"model_name": "gpt", "params": {"model": "azure/gpt4o-prod", "api_base": azure.url}},
            {
                "model_name": "v",
                "params": {"model": "azure/gpt4o-prod", "api_base": azure.url, "api_version": "2024-06-01"},
            },
            {"model_name": "emb", "params": {"model": "azure/embed-prod", "api_base": azure.url}},
        ]
    )
    router.completion(model="gpt", messages=USER)
    assert azure.requests[-1].query == {"api-version": "2024-10-21"}  # the GA default
    router.completion(model="v", messages=USER)
    assert azure.requests[-1].query == {"api-version": "2024-06-01"}
    assert len(router.embedding(model="emb", input=["a", "b"]).data) == 2
    with pytest.raises(InvalidRequestArgumentError, match=r"needs api_base=\.\.\. \(or set AZURE_API_BASE\)"):
        Router([{"model_name": "x", "params": {"model": "azure/gpt4o-prod"}}])


def test_limits_beside_litellm_params_and_text_completion_openai() -> None:
    data = {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "gpt-3.5-turbo", "rpm": 5}, "rpm": 3, "tpm": 20000},
            {"model_name": "b", "litellm_params": {"model": "text-completion-openai/gpt-3.5-turbo-instruct"}},
        ]
    }
    config = parse_config(data, "p.yaml")
    assert not config.problems
    assert config.model_list[0]["litellm_params"] == {"model": "openai/gpt-3.5-turbo", "rpm": 5, "tpm": 20000}
    assert config.model_list[1]["litellm_params"]["model"] == "openai/gpt-3.5-turbo-instruct"


def test_fallbacks_may_name_aliases_and_wildcard_names(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    router = Router(
        [dep("chat", a, "small"), dep("*", b, "*")],
        model_group_alias={"gpt-4": "chat"},
        context_window_fallbacks=[{"gpt-4": ["gpt-5.5"]}],
        fallbacks=[{"chat": ["gpt-5.5"]}],
    )
    assert router.context_window_fallbacks == {"chat": ["gpt-5.5"]} and "gpt-5.5" in router.groups
    a.enqueue(Reply(status=500, json={"error": {"message": "down"}}))
    a.enqueue(Reply(status=500, json={"error": {"message": "down"}}))
    a.enqueue(Reply(status=500, json={"error": {"message": "down"}}))
    router.completion(model="gpt-4", messages=USER)
    assert b.requests[-1].json["model"] == "gpt-5.5"
    assert router.listed() == ["chat", "gpt-4"]
