"""LiteLLM proxy configs (tests/configs/litellm/, written from LiteLLM's docs) start ``polyroute serve`` as they are.

Each test starts the real proxy in a subprocess on one of those files, with local upstreams behind it (an Azure
OpenAI resource, an Ollama server, OpenAI-compatible servers), and checks: it starts (``--dev`` where the file
sets no master key), its one startup warning lists exactly what is not honoured (the path as written in the
file), ``--strict`` refuses with the same list, ``serve --check`` / ``config check`` print it, and requests reach
the right upstream (deployment URL, api-version, key header; wildcard and alias groups; 501 for a group polyroute
cannot serve).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.cli import REPO, polyroute_argv, wait_until_healthy
from tests.served import server_fixture
from tests.services import free_port
from tests.upstreams import OpenAICompatUpstream, Reply
from tests.upstreams.azure import AzureUpstream, OllamaUpstream

CONFIGS = REPO / "tests" / "configs" / "litellm"
USER = [{"role": "user", "content": "hello litellm user"}]
AZURE_KEY = "azure-key-0123456789"

# What each file sets that polyroute does not honour (with the environment the tests give it).
UNHONOURED: dict[str, list[str]] = {
    "simple.yaml": [],
    "azure.yaml": [],
    "ollama.yaml": [],
    "load_balancing.yaml": [],
    "wildcard.yaml": [],
    "clouds.yaml": [],
    "environment.yaml": [],
    "unsupported.yaml": [
        "model_list[0].model_info.base_model",
        "model_list[0].litellm_params.tags",
        "model_list[1].litellm_params.model",
        "model_list[2].litellm_params.model",
        "model_list[3].litellm_params.model",
        "model_list[4].litellm_params.model",
        "router_settings.redis_host",
        "litellm_settings.success_callback",
        "litellm_settings.failure_callback",
        "litellm_settings.cache",
        "litellm_settings.fallbacks",
        "general_settings.alerting",
        "general_settings.store_model_in_db",
    ],
}
NO_MASTER_KEY = {"simple.yaml", "environment.yaml"}


azure = server_fixture("azure", AzureUpstream, scope="module")


ollama = server_fixture("ollama", OllamaUpstream, scope="module")


@pytest.fixture
def upstreams(
    azure: AzureUpstream, ollama: OllamaUpstream, servers: list[OpenAICompatUpstream]
) -> Iterator[dict[str, str]]:
    """The environment pointing every variable the configs read at the local upstreams (fresh for the test)."""
    for server in (azure, ollama, *servers):
        server.reset()
    primary, secondary, cloud = servers
    env = {
        "OPENAI_API_BASE": cloud.url + "/v1",
        "OPENAI_API_KEY": "sk-openai-test-0123",
        "AZURE_RESOURCE_URL": azure.url,
        "AZURE_API_BASE": azure.url,
        "AZURE_API_KEY": AZURE_KEY,
        "AZURE_API_VERSION": "2025-01-01-preview",
        "OLLAMA_SERVER": ollama.url,
        "PROXY_MASTER_KEY": "sk-ollama-master-1234",
        "PRIMARY_BASE": primary.url + "/v1",
        "SECONDARY_BASE": secondary.url + "/v1",
        "GROQ_API_BASE": primary.url + "/v1",
        "GROQ_API_KEY": "gsk-test-0123",
        "VLLM_SERVER": secondary.url + "/v1",
        "LM_STUDIO_API_BASE": secondary.url + "/v1",
    }
    for cloud_name in ("MISTRAL", "XAI", "DEEPSEEK", "GEMINI", "ANTHROPIC", "TOGETHER"):
        env[f"{cloud_name}_API_BASE"] = cloud.url + "/v1"
        env[f"{cloud_name}_API_KEY"] = f"{cloud_name.lower()}-key-0123"
    env |= {"PERPLEXITY_API_BASE": cloud.url + "/v1", "PERPLEXITYAI_API_KEY": "pplx-key-0123"}
    env["TOGETHERAI_API_KEY"] = env.pop("TOGETHER_API_KEY")
    yield env


def _environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any credential or base URL, plus ``extra``."""
    own = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_BASE", "_TOKEN", "_API_VERSION"))}
    return {**own, "PYTHONPATH": str(REPO), **extra}


def polyroute(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        polyroute_argv(*args), capture_output=True, text=True, timeout=120, env=_environment(env), cwd=cwd
    )


def reported(text: str, config: Path) -> list[str]:
    """The paths the report lists (``    <file>: <path>: <what happens>`` lines)."""
    return re.findall(rf"^\s+{re.escape(str(config))}: (\S+): ", text, flags=re.MULTILINE)


@dataclass
class Served:
    url: str
    output: str = ""

    def client(self, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)


@contextmanager
def serve(config: Path, env: dict[str, str], cwd: Path, *args: str) -> Iterator[Served]:
    """``polyroute serve --config CONFIG ARGS`` until the block ends; ``output`` holds its log afterwards."""
    port = free_port()
    argv = polyroute_argv("serve", "--config", str(config), "--port", str(port), *args)
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environment(env), cwd=cwd
    )
    served = Served(f"http://127.0.0.1:{port}")
    try:
        wait_until_healthy(served.url, process)
        yield served
    finally:
        process.terminate()
        served.output, _ = process.communicate(timeout=60)


# ---------------------------------------------------------------- the report: check, serve, --strict


@pytest.mark.parametrize("name", sorted(UNHONOURED))
def test_each_config_starts_and_reports_exactly_what_is_not_honoured(
    name: str, upstreams: dict[str, str], tmp_path: Path
) -> None:
    config = CONFIGS / name
    checked = polyroute(upstreams, tmp_path, "config", "check", "--config", str(config))
    assert reported(checked.stdout, config) == UNHONOURED[name], checked.stdout + checked.stderr
    assert checked.returncode == (2 if UNHONOURED[name] else 0)
    assert polyroute(upstreams, tmp_path, "serve", "--check", "--config", str(config)).stdout == checked.stdout
    dev = ("--dev",) if name in NO_MASTER_KEY else ()
    with serve(config, upstreams, tmp_path, *dev) as served:
        assert httpx.get(served.url + "/health").json() == {"status": "ok"}
    assert reported(served.output, config) == UNHONOURED[name]
    if UNHONOURED[name]:
        assert served.output.count("unsupported settings, not honoured") == 1  # one warning
        strict = polyroute(upstreams, tmp_path, "serve", "--strict", "--config", str(config), *dev)
        assert strict.returncode == 2 and "--strict" in strict.stderr
        assert reported(strict.stderr, config) == UNHONOURED[name]


def test_no_master_key_refuses_without_dev_and_says_it_is_deliberate(upstreams: dict[str, str], tmp_path: Path) -> None:
    out = polyroute(upstreams, tmp_path, "serve", "--config", str(CONFIGS / "simple.yaml"))
    assert out.returncode == 2
    assert "master_key" in out.stderr and "--dev" in out.stderr and "deliberately" in out.stderr


def test_a_check_names_an_unset_variable(upstreams: dict[str, str], tmp_path: Path) -> None:
    config = CONFIGS / "clouds.yaml"
    env = {k: v for k, v in upstreams.items() if k != "XAI_API_KEY"}
    out = polyroute(env, tmp_path, "config", "check", "--config", str(config))
    assert out.returncode == 2 and reported(out.stdout, config) == ["model_list[1].litellm_params.api_key"]
    assert "environment variable XAI_API_KEY is not set" in out.stdout


# ---------------------------------------------------------------- requests reach the right upstream


def test_bare_openai_names(upstreams: dict[str, str], servers: list[OpenAICompatUpstream], tmp_path: Path) -> None:
    cloud = servers[2]
    with serve(CONFIGS / "simple.yaml", upstreams, tmp_path, "--dev") as served, served.client() as client:
        reply = client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "Echo: hello litellm user"
        assert cloud.requests[-1].json["model"] == "gpt-4o" and cloud.requests[-1].token == "sk-openai-test-0123"
        client.chat.completions.create(model="gpt-3.5-turbo", messages=USER)  # type: ignore[arg-type]
        assert cloud.requests[-1].json["model"] == "gpt-3.5-turbo"
        assert len(client.embeddings.create(model="embedding", input=["a", "b"]).data) == 2
        assert cloud.requests[-1].path == "/v1/embeddings"
        assert cloud.requests[-1].json["model"] == "text-embedding-3-small"


def test_azure_deployments(upstreams: dict[str, str], azure: AzureUpstream, tmp_path: Path) -> None:
    master = "sk-litellm-azure-1234"
    with serve(CONFIGS / "azure.yaml", upstreams, tmp_path) as served, served.client(master) as client:
        reply = client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "Echo: hello litellm user"
        sent = azure.requests[-1]
        assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions"
        assert sent.query["api-version"] == "2024-06-01"  # the entry's api_version
        assert sent.headers["api-key"] == AZURE_KEY and "authorization" not in sent.headers
        client.chat.completions.create(model="gpt-4o-env", messages=USER)  # type: ignore[arg-type]
        assert azure.requests[-1].query["api-version"] == "2025-01-01-preview"  # AZURE_API_VERSION
        assert azure.requests[-1].headers["api-key"] == AZURE_KEY  # AZURE_API_KEY, to AZURE_API_BASE
        stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello litellm user"
        embedded = client.embeddings.create(model="text-embedding", input=["one", "two"])
        assert len(embedded.data) == 2
        assert azure.requests[-1].path == "/openai/deployments/embed-prod/embeddings"
        assert azure.requests[-1].query["api-version"] == "2025-01-01-preview"


def test_azure_refusal_reaches_the_client(upstreams: dict[str, str], tmp_path: Path) -> None:
    env = {**upstreams, "AZURE_API_KEY": "a-wrong-azure-key-000"}
    refused = pytest.raises(openai.InternalServerError, match="refused this proxy's credentials: Access denied")
    # the proxy's own credentials were refused: a 502 (the client's key is fine), with Azure's reason
    with serve(CONFIGS / "azure.yaml", env, tmp_path) as served, served.client("sk-litellm-azure-1234") as c, refused:
        c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]


def test_ollama_and_aliases(upstreams: dict[str, str], ollama: OllamaUpstream, tmp_path: Path) -> None:
    with serve(CONFIGS / "ollama.yaml", upstreams, tmp_path) as served, served.client("sk-ollama-master-1234") as c:
        c.chat.completions.create(model="llama3", messages=USER)  # type: ignore[arg-type]
        assert ollama.requests[-1].path == "/v1/chat/completions" and ollama.requests[-1].json["model"] == "llama3"
        assert "authorization" not in ollama.requests[-1].headers  # Ollama needs no key: none is sent
        c.chat.completions.create(model="llama3-chat", messages=USER)  # type: ignore[arg-type]
        assert ollama.requests[-1].json["model"] == "llama3:8b"
        assert len(c.embeddings.create(model="nomic-embed", input="x").data) == 1
        assert ollama.requests[-1].path == "/v1/embeddings"
        c.chat.completions.create(model="gpt-4", messages=USER)  # type: ignore[arg-type]  # alias of llama3
        assert ollama.requests[-1].json["model"] == "llama3"
        c.chat.completions.create(model="gpt-3.5-turbo", messages=USER)  # type: ignore[arg-type]  # hidden alias
        assert ollama.requests[-1].json["model"] == "llama3:8b"
        listed = [m.id for m in c.models.list()]
        assert listed == ["gpt-4", "llama3", "llama3-chat", "nomic-embed"]  # the hidden alias is not listed


def test_load_balancing_order_fallbacks_and_costs(
    upstreams: dict[str, str], servers: list[OpenAICompatUpstream], tmp_path: Path
) -> None:
    primary, secondary, _ = servers
    with (
        serve(CONFIGS / "load_balancing.yaml", upstreams, tmp_path) as served,
        served.client("sk-litellm-lb-1234") as client,
    ):
        for _ in range(4):  # order 1 takes every request while it is healthy
            raw = client.chat.completions.with_raw_response.create(model="chat", messages=USER)  # type: ignore[arg-type]
        assert [r.json["model"] for r in primary.requests] == ["primary-model"] * 4 and not secondary.requests
        usage = raw.parse().usage
        assert usage is not None
        cost = usage.prompt_tokens * 0.000002 + usage.completion_tokens * 0.000004  # the entry's costs
        assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(cost)
        primary.enqueue(Reply(status=500, json={"error": {"message": "primary down"}}))
        client.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
        assert secondary.requests[-1].json["model"] == "secondary-model"  # order 2 once order 1 failed
        refused = Reply(status=401, json={"error": {"message": "key revoked"}})  # this deployment only
        primary.enqueue(refused)
        secondary.enqueue(refused)
        client.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
        assert secondary.requests[-1].json["model"] == "backup-model"


def test_wildcard_groups_and_alias(
    upstreams: dict[str, str], servers: list[OpenAICompatUpstream], tmp_path: Path
) -> None:
    groq, _, cloud = servers
    with serve(CONFIGS / "wildcard.yaml", upstreams, tmp_path) as served, served.client("sk-litellm-wild-1234") as c:
        c.chat.completions.create(model="groq/llama-3.3-70b-versatile", messages=USER)  # type: ignore[arg-type]
        assert groq.requests[-1].json["model"] == "llama-3.3-70b-versatile"
        assert groq.requests[-1].token == "gsk-test-0123"
        c.chat.completions.create(model="openai/gpt-4.1", messages=USER)  # type: ignore[arg-type]
        assert cloud.requests[-1].json["model"] == "gpt-4.1"
        c.chat.completions.create(model="gpt-5-mini", messages=USER)  # type: ignore[arg-type]  # "*"
        assert cloud.requests[-1].json["model"] == "gpt-5-mini"
        c.chat.completions.create(model="my-alias", messages=USER)  # type: ignore[arg-type]
        assert cloud.requests[-1].json["model"] == "fixed-model"
        with pytest.raises(openai.BadRequestError, match="unknown provider prefix 'nope'"):
            c.chat.completions.create(model="nope/model", messages=USER)  # type: ignore[arg-type]
        assert len(groq.requests) == 1 and len(cloud.requests) == 3


CLOUDS = [
    ("mistral-large", "mistral-large-latest", "mistral-key-0123"),
    ("grok", "grok-3", "xai-key-0123"),
    ("deepseek-chat", "deepseek-chat", "deepseek-key-0123"),
    ("sonar", "sonar-pro", "pplx-key-0123"),
    ("gemini-flash", "gemini-2.0-flash", "gemini-key-0123"),
    ("claude", "claude-sonnet-4-20250514", "anthropic-key-0123"),
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together-key-0123"),
]


def test_openai_compatible_clouds_and_servers(
    upstreams: dict[str, str], servers: list[OpenAICompatUpstream], tmp_path: Path
) -> None:
    _, local, cloud = servers
    local.require_auth = False  # a vLLM or LM Studio server of one's own takes requests without a key
    try:
        _clouds(upstreams, cloud, local, tmp_path)
    finally:
        local.require_auth = True


def _clouds(
    upstreams: dict[str, str], cloud: OpenAICompatUpstream, local: OpenAICompatUpstream, tmp_path: Path
) -> None:
    with serve(CONFIGS / "clouds.yaml", upstreams, tmp_path) as served, served.client("sk-litellm-clouds-1234") as c:
        for group, model, key in CLOUDS:
            c.chat.completions.create(model=group, messages=USER)  # type: ignore[arg-type]
            assert (cloud.requests[-1].json["model"], cloud.requests[-1].token) == (model, key), group
        for group, model in (
            ("vllm-llama", "meta-llama/Llama-3.1-8B-Instruct"),
            ("lmstudio", "qwen2.5-7b-instruct"),
            ("my-openai-compatible", "my-model"),
        ):
            c.chat.completions.create(model=group, messages=USER)  # type: ignore[arg-type]
            assert local.requests[-1].json["model"] == model, group
        assert local.requests[-1].token == "none"  # the entry's own api_key


def test_unservable_groups_answer_501_naming_the_provider(
    upstreams: dict[str, str], servers: list[OpenAICompatUpstream], tmp_path: Path
) -> None:
    cloud = servers[2]
    master = "sk-litellm-unsupported-1234"
    with serve(CONFIGS / "unsupported.yaml", upstreams, tmp_path) as served, served.client(master) as client:
        client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]  # its openai one
        assert cloud.requests[-1].json["model"] == "gpt-4o"
        for group, provider in (
            ("claude-bedrock", "bedrock"),
            ("gemini-vertex", "vertex_ai"),
            ("sagemaker-llama", "sagemaker"),
            ("claude", "bedrock"),
        ):
            answer = httpx.post(
                served.url + "/v1/chat/completions",
                json={"model": group, "messages": USER},
                headers={"Authorization": f"Bearer {master}"},
            )
            assert answer.status_code == 501, answer.text
            assert provider in answer.json()["error"]["message"] and group in answer.json()["error"]["message"]
        assert "claude-bedrock" not in [m.id for m in client.models.list()]


def test_environment_variables_section(
    upstreams: dict[str, str], servers: list[OpenAICompatUpstream], tmp_path: Path
) -> None:
    cloud = servers[2]
    env = {k: v for k, v in upstreams.items() if k != "OPENAI_API_KEY"}
    with serve(CONFIGS / "environment.yaml", env, tmp_path, "--dev") as served, served.client() as client:
        client.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
    assert cloud.requests[-1].token == "sk-from-the-config-file-0123"
    assert cloud.requests[-1].headers["x-team"] == "team-from-file"
