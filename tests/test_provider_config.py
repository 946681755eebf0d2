"""Providers declared in YAML: every example in configs/ loads; mistakes name file, key path, expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.config import apply_config, load_providers_file
from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry
from router import completion
from router.types import ChatCompletion
from tests.upstreams import OpenAICompatUpstream

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_example_config_loads() -> None:
    reg = load_providers_file(CONFIGS / "providers.yaml", Registry())
    assert reg.resolve("mistral/mistral-large-latest").api_base == "https://api.mistral.ai/v1"
    vllm = reg.resolve("vllm/Qwen/Qwen3-8B")
    assert vllm.provider == "local-vllm" and not vllm.spec.key_required


def test_configured_provider_serves_a_call(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"providers:\n  - name: lab\n    base_url: {oai.url}/v1\n    key_env: [LAB_KEY, LAB_TOKEN]\n")
    reg = load_providers_file(path, Registry())
    r = completion(model="lab/m1", messages=[{"role": "user", "content": "hi"}], api_key="lab-key-1234", registry=reg)
    assert isinstance(r, ChatCompletion) and r.meta.provider == "lab" and oai.requests[0].json["model"] == "m1"


def test_hf_provider_names_from_config() -> None:
    reg = apply_config({"hf_providers": ["brand-new"]}, Registry())
    assert reg.resolve("huggingface/brand-new/org/model").subprovider == "brand-new"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("providers: {name: x}", "p.yaml: providers: expected a list"),
        ("providers:\n  - base_url: https://x\n", r"p.yaml: providers\[0\].name: expected a non-empty string"),
        (
            "providers:\n  - name: x\n    base_url: https://x\n    keyenv: K\n",
            r"providers\[0\].keyenv: expected one of",
        ),
        ("providers:\n  - name: x\n    base_url: https://x\n    key_env: 3\n", r"providers\[0\].key_env"),
        ("providers:\n  - name: x\n    base_url: ftp://x\n", "base_url must start with http"),
        ("providers: [\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_config_mistakes(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InvalidRequestArgumentError, match=needle):
        load_providers_file(path, Registry())


def test_missing_file() -> None:
    with pytest.raises(InvalidRequestArgumentError, match="cannot read the file"):
        load_providers_file("/no/such/providers.yaml", Registry())
