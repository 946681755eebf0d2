"""The proxy with real clients: the OpenAI SDK and huggingface_hub's InferenceClient, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from router.proxy.app import build_app
from router.proxy.config import ConfigError, load_config, parse_config
from router.proxy.server import build_router
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, Reply, TGIUpstream

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MASTER = "sk-master-test-0123456789"


class ProxyServer:
    """The proxy app served from a thread on 127.0.0.1 (ephemeral port)."""

    def __init__(self, config_data: dict, source: str = "test.yaml") -> None:
        self.config = parse_config(config_data, source)
        self.app = build_app(self.config, build_router(self.config))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> ProxyServer:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def _config(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream, **general: object) -> dict:
    return {
        "model_list": [
            {"model_name": "r1", "litellm_params": {"model": "huggingface/together/deepseek-ai/DeepSeek-R1",
                                                    "api_key": "os.environ/HF_TOKEN"}},
            {"model_name": "chat", "params": {"model": "deepinfra/openai/gpt-oss-120b"}},
            {"model_name": "local", "params": {"model": "huggingface/tgi", "api_base": tgi.url}},
            {"model_name": "embed", "params": {"model": "huggingface/intfloat/multilingual-e5-large"}},
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER, **general},
    }  # fmt: skip


@pytest.fixture
def proxy(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(_config(hf, deepinfra, tgi)) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER, max_retries=0) as c:
        yield c


USER = [{"role": "user", "content": "hello proxy"}]


def test_chat_through_the_openai_sdk(client: openai.OpenAI, hf: HFRouterUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="r1", messages=USER)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello proxy"
    assert raw.headers["x-polyroute-provider"] == "together"
    assert float(raw.headers["x-polyroute-cost-usd"]) > 0
    assert hf.requests[-1].json["model"] == "deepseek-ai/DeepSeek-R1:together"
    assert hf.requests[-1].token == "hf_test_token_123456"  # the config's key, not the client's


def test_streaming_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="chat", messages=USER, stream=True,  # type: ignore[arg-type]
                                            stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello proxy" and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_embeddings_models_and_paths_without_v1(client: openai.OpenAI, proxy: ProxyServer) -> None:
    from tests.upstreams import fake_embedding

    emb = client.embeddings.create(model="embed", input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in emb.data] == [fake_embedding("a"), fake_embedding("b")]
    assert sorted(m.id for m in client.models.list()) == ["chat", "embed", "local", "r1"]
    bare = httpx.get(proxy.url + "/models", headers={"Authorization": f"Bearer {MASTER}"})
    assert bare.status_code == 200 and len(bare.json()["data"]) == 4


def test_huggingface_hub_inference_client(proxy: ProxyServer) -> None:
    from huggingface_hub import InferenceClient

    hub = InferenceClient(base_url=proxy.url, api_key=MASTER)
    out = hub.chat_completion(model="local", messages=USER)  # type: ignore[arg-type]
    assert out.choices[0].message.content == "Echo: hello proxy"


def test_every_error_is_openai_json(client: openai.OpenAI, proxy: ProxyServer, hf: HFRouterUpstream) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="use one of: chat, embed, local, r1"):
        client.chat.completions.create(model="gpt-4", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="cannot be set by clients"):
        client.chat.completions.create(model="r1", messages=USER,  # type: ignore[arg-type]
                                       extra_body={"api_base": "http://evil.example"})  # fmt: skip
    assert not any(q.path == "/v1/chat/completions" for q in hf.requests)
    hf.enqueue(Reply(status=429, json={"error": "slow down"}, headers={"Retry-After": "0"}), "/v1/chat/completions")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="messages is empty"):
        client.chat.completions.create(model="r1", messages=[])
    auth = {"Authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    bad = httpx.post(proxy.url + "/v1/chat/completions", content=b"{not json", headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = httpx.post(proxy.url + "/v1/chat/completions", content=b"x" * 5_000_000, headers=auth)
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.post(proxy.url + "/v1/chat/completions", json={"model": "r1", "messages": USER})
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
    assert MASTER not in bad.text + big.text + missing.text


def test_upstream_rejecting_the_proxys_key_is_a_502(client: openai.OpenAI, hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(status=401, json={"error": "Invalid username or password."}), "/v1/chat/completions")
    with pytest.raises(openai.InternalServerError, match="refused this proxy's credentials") as info:
        client.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    assert info.value.status_code == 502


def test_a_stream_that_fails_after_it_started_ends_with_an_error_event(proxy: ProxyServer, tgi: TGIUpstream) -> None:
    tgi.stream_error_after = 1
    try:
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                          json={"model": "local", "messages": USER, "stream": True}) as response:  # fmt: skip
            lines = [line for line in response.iter_lines() if line]
    finally:
        tgi.stream_error_after = None
    assert response.status_code == 200
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][len("data: ") :])
    assert error["error"]["message"].startswith("Input validation error")


def test_health_needs_no_key(proxy: ProxyServer) -> None:
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}
    assert httpx.get(proxy.url + "/health/ready").json()["status"] == "ready"


# ---------------------------------------------------------------- config


def test_example_configs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_config_token")
    monkeypatch.setenv("POLYROUTE_MASTER_KEY", "sk-master-from-env")
    proxy_config = load_config(CONFIGS / "proxy.yaml")
    assert proxy_config.master_key == "sk-master-from-env" and not proxy_config.unsupported
    router = build_router(proxy_config)
    assert sorted(router.groups) == ["chat", "embed", "my-r1-model", "qwen"]
    assert router.strategy == "least-in-flight" and router.fallbacks == {"my-r1-model": ["qwen"], "chat": ["qwen"]}
    litellm_docs = load_config(CONFIGS / "litellm_hf_docs.yaml")
    assert build_router(litellm_docs).groups["my-r1-model"][0].params["api_key"] == "hf_config_token"
    assert "hf_config_token" not in repr(litellm_docs) and "sk-master" not in repr(proxy_config)


def test_config_mistakes_name_file_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/m, api_key: os.environ/NOPE_KEY}\n"
    )
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(
        ConfigError, match=r"p.yaml: model_list\[0\].litellm_params.api_key: environment variable NOPE_KEY"
    ):
        load_config(path)
    path.write_text("model_list: []\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: model_list: expected a non-empty list"):
        load_config(path)
    path.write_text(
        "model_list:\n  - model_name: a\n    params: {model: openai/m}\n"
        "litellm_settings: {success_callback: [langfuse], num_retries: 3}\nenvironment_variables: {}\n"
    )
    config = load_config(path)
    assert config.unsupported == ["environment_variables", "litellm_settings.success_callback"]
    assert config.router_kwargs == {"num_retries": 3}
    with pytest.raises(ConfigError, match="unsupported settings"):
        load_config(path, strict=True)


def test_serve_refuses_to_start_without_a_master_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("model_list:\n  - model_name: a\n    params: {model: openai/m, api_base: http://127.0.0.1:9/v1}\n")
    out = subprocess.run([sys.executable, "-m", "router.cli", "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PATH": os.environ.get("PATH", "")})  # fmt: skip
    assert out.returncode == 2 and "master_key" in out.stderr and "--dev" in out.stderr
