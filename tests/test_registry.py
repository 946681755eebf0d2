"""The model-string grammar: every DESIGN form resolves; bad strings fail with a helpful message."""

from __future__ import annotations

import pytest

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry
from providers.tasks import chat_helper


@pytest.fixture
def reg(monkeypatch: pytest.MonkeyPatch) -> Registry:
    for var in ("HF_ROUTER_URL", "DEEPINFRA_API_BASE", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    return Registry()


def test_hf_org_model_uses_router_default_policy(reg: Registry) -> None:
    t = reg.resolve("huggingface/Qwen/Qwen3-8B")
    assert (t.provider, t.model, t.subprovider, t.policy) == ("huggingface", "Qwen/Qwen3-8B", None, None)
    assert t.api_base == "https://router.huggingface.co"
    assert chat_helper(t).model(t, None) == "Qwen/Qwen3-8B"


@pytest.mark.parametrize("suffix", ["fastest", "cheapest", "preferred"])
def test_hf_policy_suffix(reg: Registry, suffix: str) -> None:
    t = reg.resolve(f"huggingface/deepseek-ai/DeepSeek-R1:{suffix}")
    assert (t.model, t.policy, t.subprovider) == ("deepseek-ai/DeepSeek-R1", suffix, None)
    assert chat_helper(t).model(t, None) == f"deepseek-ai/DeepSeek-R1:{suffix}"


def test_pinned_provider_both_forms_send_the_same_model(reg: Registry) -> None:
    litellm_form = reg.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")
    hf_form = reg.resolve("huggingface/deepseek-ai/DeepSeek-R1:together")
    for t in (litellm_form, hf_form):
        assert t.subprovider == "together"
        assert chat_helper(t).model(t, None) == "deepseek-ai/DeepSeek-R1:together"


def test_provider_is_recognised_by_name_not_slashes(reg: Registry) -> None:
    assert reg.resolve("huggingface/Qwen/Qwen3-8B").subprovider is None
    assert reg.resolve("huggingface/together/Qwen/Qwen3-8B").subprovider == "together"


def test_env_overrides_router_and_deepinfra(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ROUTER_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("DEEPINFRA_API_BASE", "http://127.0.0.1:8/v1/openai")
    assert reg.resolve("huggingface/Qwen/Qwen3-8B").api_base == "http://127.0.0.1:9"
    assert reg.resolve("deepinfra/meta-llama/Llama-3.3-70B-Instruct").api_base == "http://127.0.0.1:8/v1/openai"


def test_per_call_api_base_wins_and_router_v1_suffix_is_tolerated(reg: Registry) -> None:
    assert reg.resolve("huggingface/Qwen/Qwen3-8B", "http://h:1/v1/").api_base == "http://h:1"
    assert reg.resolve("deepinfra/a/b", "http://h:2/v1/openai").api_base == "http://h:2/v1/openai"


def test_tgi_needs_api_base(reg: Registry) -> None:
    with pytest.raises(InvalidRequestArgumentError, match="api_base"):
        reg.resolve("huggingface/tgi")
    t = reg.resolve("huggingface/tgi", "https://x.endpoints.huggingface.cloud/v1/")
    assert t.provider == "tgi"
    assert chat_helper(t).url(t, None) == "https://x.endpoints.huggingface.cloud/v1/chat/completions"
    plain = reg.resolve("huggingface/tgi", "http://127.0.0.1:8080")
    assert chat_helper(plain).url(plain, None) == "http://127.0.0.1:8080/v1/chat/completions"


def test_inference_endpoint_url_with_model_id_is_tgi(reg: Registry) -> None:
    t = reg.resolve(
        "huggingface/meta-llama/Llama-3.1-8B-Instruct", "https://abc.us-east-1.aws.endpoints.huggingface.cloud"
    )
    assert t.provider == "tgi"


def test_openai_compatible_entries_are_data_only(reg: Registry) -> None:
    for prefix, base in [
        ("together", "https://api.together.xyz/v1"),
        ("together_ai", "https://api.together.xyz/v1"),
        ("groq", "https://api.groq.com/openai/v1"),
        ("fireworks-ai", "https://api.fireworks.ai/inference/v1"),
        ("nebius", "https://api.studio.nebius.com/v1"),
        ("sambanova", "https://api.sambanova.ai/v1"),
        ("cerebras", "https://api.cerebras.ai/v1"),
    ]:
        t = reg.resolve(f"{prefix}/org/some-model")
        assert t.api_base == base and t.model == "org/some-model" and t.spec.adapter == "openai"


def test_register_provider_then_resolve(reg: Registry) -> None:
    reg.register("acme", "https://api.acme.test/v1", "ACME_API_KEY", aliases=["acme_ai"])
    t = reg.resolve("acme_ai/large-1")
    assert (t.provider, t.model, t.api_base, t.spec.key_env) == (
        "acme",
        "large-1",
        "https://api.acme.test/v1",
        ("ACME_API_KEY",),
    )
    with pytest.raises(InvalidRequestArgumentError, match="base_url"):
        reg.register("bad", "ftp://x")


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("", "empty"),
        ("gpt-4o", "no provider prefix"),
        ("foo/bar", "unknown provider prefix 'foo'"),
        ("huggingfac/Qwen/Qwen3-8B", "did you mean 'huggingface'"),
        ("huggingface/Qwen", "huggingface/<org>/<model>"),
        ("huggingface/togther/Qwen/Qwen3-8B", "did you mean 'together'"),
        ("huggingface/Qwen/Qwen3-8B:fastes", "did you mean 'fastest'"),
        ("huggingface/together/Qwen/Qwen3-8B:groq", "use one"),
        ("huggingface/Qwen/Qwen3-8B:", "empty ':' suffix"),
        ("deepinfra/", "names no model"),
        ("deepinfra/ a", "whitespace"),
    ],
)
def test_bad_model_strings_say_what_to_change(reg: Registry, model: str, needle: str) -> None:
    with pytest.raises(InvalidRequestArgumentError) as info:
        reg.resolve(model)
    assert needle in str(info.value)


def test_non_string_model_is_rejected(reg: Registry) -> None:
    with pytest.raises(InvalidRequestArgumentError, match="must be a string"):
        reg.resolve(42)  # type: ignore[arg-type]
