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
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from router.proxy.app import build_app
from router.proxy.config import ConfigError, load_config, parse_config
from router.proxy.server import build_router
from tests.cli import start_serve, wait_until_healthy
from tests.services import free_port
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, Reply, TGIUpstream, completion_json

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MASTER = "sk-master-test-0123456789"


class ProxyServer:
    """The proxy app served from a thread on 127.0.0.1 (ephemeral port)."""

    def __init__(self, config_data: dict, source: str = "test.yaml", store: object = None) -> None:
        import tempfile

        from router.proxy.store import SqliteStore

        self.config = parse_config(config_data, source)
        self._tmp = tempfile.TemporaryDirectory()
        self.store = store or SqliteStore(os.path.join(self._tmp.name, "proxy.db"))
        self.router = build_router(self.config)
        self.app = build_app(self.config, self.router, self.store)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._done = threading.Event()
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
        self._done.set()

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._done.wait(10)
        self._tmp.cleanup()


def _config(
    hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream, pricing: Any = None, **general: object
) -> dict:
    """The proxy config most tests serve: four groups on the local upstreams (``pricing``: its pricing section)."""
    config = {
        "model_list": [
            {
                "model_name": "r1",
                "litellm_params": {
                    "model": "huggingface/together/deepseek-ai/DeepSeek-R1",
                    "api_key": "os.environ/HF_TOKEN",
                },
            },
            {"model_name": "chat", "params": {"model": "deepinfra/openai/gpt-oss-120b"}},
            {"model_name": "local", "params": {"model": "huggingface/tgi", "api_base": tgi.url}},
            {"model_name": "embed", "params": {"model": "huggingface/intfloat/multilingual-e5-large"}},
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER, **general},
    }
    if pricing is not None:
        config["pricing"] = pricing
    return config


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
    stream = client.chat.completions.create(
        model="chat",
        messages=USER,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
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
        client.chat.completions.create(
            model="r1",
            messages=USER,  # type: ignore[arg-type]
            extra_body={"api_base": "http://evil.example"},
        )
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
        with httpx.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER}"},
            json={"model": "local", "messages": USER, "stream": True},
        ) as response:
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
        load_config(path, strict=True)  # without strict: the deployment is warned about and skipped
    path.write_text("model_list: []\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: model_list: expected a non-empty list"):
        load_config(path)
    path.write_text(
        "model_list:\n  - model_name: a\n    params: {model: openai/m}\n"
        "litellm_settings: {success_callback: [langfuse], num_retries: 3}\nenvironment_variables: {}\n"
    )
    config = load_config(path)
    # environment_variables is applied (issue 17), so only the callback is reported
    assert config.unsupported == ["litellm_settings.success_callback"]
    assert config.router_kwargs == {"num_retries": 3}
    with pytest.raises(ConfigError, match="unsupported settings"):
        load_config(path, strict=True)


def test_serve_refuses_to_start_without_a_master_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("model_list:\n  - model_name: a\n    params: {model: openai/m, api_base: http://127.0.0.1:9/v1}\n")
    out = subprocess.run(
        [sys.executable, "-m", "router.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": os.environ.get("PATH", "")},
    )
    assert out.returncode == 2 and "master_key" in out.stderr and "--dev" in out.stderr


# ---------------------------------------------------------------- virtual keys, budgets, spend


def _admin(proxy: ProxyServer, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, proxy.url + path, headers={"Authorization": f"Bearer {MASTER}"}, **kw)  # type: ignore[arg-type]


def _wait_for_spend(proxy: ProxyServer, count: int) -> None:
    import time

    deadline = time.time() + 10
    while proxy.store.spend_count() < count:
        assert time.time() < deadline, f"only {proxy.store.spend_count()} of {count} spend records written"
        time.sleep(0.05)


def test_virtual_keys_lifecycle(proxy: ProxyServer) -> None:
    created = _admin(proxy, "POST", "/admin/keys", json={"alias": "team-a", "models": ["r1"]})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("sk-poly-")
    listed = _admin(proxy, "GET", "/admin/keys").json()["data"]
    assert [k["alias"] for k in listed] == ["team-a"] and key not in json.dumps(listed)
    assert "key_hash" not in listed[0] and listed[0]["key_hint"].endswith("…")
    team = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    assert team.chat.completions.create(model="r1", messages=USER).choices[0].message.content  # type: ignore[arg-type]
    assert [m.id for m in team.models.list()] == ["r1"]
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'chat'"):
        team.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.AuthenticationError):  # a virtual key is not the master key
        openai.OpenAI(base_url=proxy.url, api_key=key, max_retries=0).with_options().post(
            "/admin/keys", body={}, cast_to=object
        )
    key_id = created.json()["id"]
    assert _admin(proxy, "PATCH", f"/admin/keys/{key_id}", json={"models": None}).json()["models"] is None
    assert team.chat.completions.create(model="chat", messages=USER).choices  # type: ignore[arg-type]
    assert _admin(proxy, "DELETE", f"/admin/keys/{key_id}").json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        team.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    expired = _admin(proxy, "POST", "/admin/keys", json={"expires_at": 1.0}).json()["key"]
    with pytest.raises(openai.AuthenticationError, match="expired"):
        openai.OpenAI(base_url=proxy.url + "/v1", api_key=expired, max_retries=0).models.list()
    bad = _admin(proxy, "POST", "/admin/keys", json={"rpm": "lots"})
    assert bad.status_code == 400 and "rpm must be int" in bad.json()["error"]["message"]


def test_key_rpm_limit(proxy: ProxyServer) -> None:
    key = _admin(proxy, "POST", "/admin/keys", json={"rpm": 2}).json()["key"]
    team = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    for _ in range(2):
        team.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError, match="2 requests per minute"):
        team.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]


def test_key_budget_holds_under_64_concurrent_requests(
    hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream
) -> None:
    config = _config(hf, deepinfra, tgi)
    # $100 per 1M tokens: each call reserves ~$0.011 (prompt + max_tokens 100) while in flight, so only a few
    # fit the $0.05 budget at once: without enforcement all 64 would be answered and none refused.
    config["pricing"] = [{"model": "huggingface/tgi", "input_per_million": 100, "output_per_million": 100}]
    with ProxyServer(config) as proxy:
        assert_budget_holds(proxy, tgi, limit=0.05)


def assert_budget_holds(proxy: ProxyServer, tgi: TGIUpstream, limit: float) -> None:
    """64 concurrent requests on one key: refusals happen, reach no upstream, and spend stays <= limit."""
    key = _admin(proxy, "POST", "/admin/keys", json={"max_budget_usd": limit}).json()["key"]

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:

            async def one() -> int:
                r = await http.post(
                    proxy.url + "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "local", "messages": USER, "max_tokens": 100},
                )
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "budget_exceeded"
                return r.status_code

            return await asyncio.gather(*[one() for _ in range(64)])

    statuses = asyncio.run(main())
    ok = statuses.count(200)
    assert statuses.count(429) > 0 and ok + statuses.count(429) == 64 and ok > 0
    assert sum(1 for q in tgi.requests if q.path == "/v1/chat/completions") == ok
    _wait_for_spend(proxy, 64)
    spent = sum(r["cost_usd"] for r in _admin(proxy, "GET", "/admin/spend?group_by=key").json()["data"])
    assert 0 < spent <= limit


def test_spend_report_by_key_model_provider(proxy: ProxyServer, client: openai.OpenAI) -> None:
    key = _admin(proxy, "POST", "/admin/keys", json={"alias": "reporting"}).json()
    team = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key["key"], max_retries=0)
    team.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    client.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
    list(client.chat.completions.create(model="chat", messages=USER, stream=True))  # type: ignore[arg-type]
    _wait_for_spend(proxy, 3)
    by_key = {r["key"]: r for r in _admin(proxy, "GET", "/admin/spend?group_by=key").json()["data"]}
    assert by_key[key["id"]]["requests"] == 1 and by_key[None]["requests"] == 2
    by_model = {r["model"]: r for r in _admin(proxy, "GET", "/admin/spend?group_by=model").json()["data"]}
    assert by_model["chat"]["requests"] == 2 and by_model["chat"]["cost_usd"] > 0
    providers = {r["provider"] for r in _admin(proxy, "GET", "/admin/spend?group_by=provider").json()["data"]}
    assert providers == {"together", "deepinfra"}
    assert _admin(proxy, "GET", "/admin/spend?group_by=colour").status_code == 400


def test_sigterm_lets_requests_finish_and_loses_no_record(tmp_path: Path) -> None:
    import signal

    from tests.upstreams import OpenAICompatUpstream

    with OpenAICompatUpstream() as upstream:
        upstream.require_auth = False
        for _ in range(5):
            upstream.enqueue(
                Reply(
                    json=completion_json("ok", (3, 1)),
                    delay=1.5,
                ),
                "/v1/chat/completions",
            )
        db = tmp_path / "spend.db"
        config = tmp_path / "proxy.yaml"
        config.write_text(
            "model_list:\n  - model_name: slow\n    params: {model: openai/m, api_base: " + upstream.url + "/v1}\n"
            f"general_settings: {{master_key: {MASTER}, database_url: 'sqlite:///{db}'}}\n"
        )
        port = free_port()
        server = start_serve(config, port)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, server)

            async def main() -> list[int]:
                async with httpx.AsyncClient(timeout=30) as http:
                    calls = [
                        http.post(
                            url + "/v1/chat/completions",
                            headers={"Authorization": f"Bearer {MASTER}"},
                            json={"model": "slow", "messages": USER},
                        )
                        for _ in range(5)
                    ]
                    tasks = [asyncio.ensure_future(c) for c in calls]
                    await asyncio.sleep(0.5)  # all five are in flight upstream
                    server.send_signal(signal.SIGTERM)
                    return [(await t).status_code for t in tasks]

            assert asyncio.run(main()) == [200] * 5
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                server.kill()
            server.communicate()
    from router.proxy.store import SqliteStore

    assert SqliteStore(db).spend_count() == 5


def test_metrics(proxy: ProxyServer, client: openai.OpenAI, hf: HFRouterUpstream) -> None:
    client.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    hf.enqueue(Reply(status=429, json={"error": "slow"}, headers={"Retry-After": "0"}), "/v1/chat/completions")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="r1", messages=USER)  # type: ignore[arg-type]
    assert httpx.get(proxy.url + "/metrics").status_code == 401
    text = _admin(proxy, "GET", "/metrics").text
    assert 'polyroute_requests_total{model="r1",provider="together",key="master",status="200"} 1' in text
    assert 'polyroute_request_errors_total{model="r1",status="429"} 1' in text
    assert 'polyroute_request_latency_seconds_count{model="r1"} 2' in text
    cost = next(line for line in text.splitlines() if line.startswith("polyroute_cost_usd_total"))
    assert float(cost.split()[-1]) > 0


def test_embeddings_spend_from_the_key_budget(proxy: ProxyServer, deepinfra: DeepInfraUpstream) -> None:
    catalog_price = [
        {"model": "huggingface/intfloat/multilingual-e5-large", "input_per_million": 1000, "output_per_million": 0}
    ]
    proxy.router.catalog.load_overrides(catalog_price)
    # $1000 per 1M input tokens: each call reserves ~$0.009 and really costs ~$0.005; $0.03 covers a few.
    key = _admin(proxy, "POST", "/admin/keys", json={"max_budget_usd": 0.03}).json()["key"]
    team = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    answered = refused = 0
    for _ in range(20):
        try:
            team.embeddings.create(model="embed", input="several words to embed here", encoding_format="float")
            answered += 1
        except openai.RateLimitError:
            refused += 1
    assert answered >= 1 and refused >= 1


def test_auth_comes_before_the_body(proxy: ProxyServer) -> None:
    anonymous = httpx.post(
        proxy.url + "/v1/chat/completions", json={"model": "nope", "messages": USER, "api_base": "http://x"}
    )
    assert anonymous.status_code == 401 and "nope" not in anonymous.text
    key = _admin(proxy, "POST", "/admin/keys", json={"models": ["r1"]}).json()["key"]
    hidden = httpx.post(
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "nope", "messages": USER},
    )
    assert hidden.status_code == 404 and hidden.json()["error"]["message"].endswith("use one of: r1")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "r1", "messages": "hi"}, 400),
        ({"model": "r1", "messages": USER, "max_tokens": "abc"}, 400),
        ({"messages": USER}, 400),
        ({"model": "r1", "messages": USER, "apiBase": "http://evil"}, 400),
        ({"model": "r1", "messages": USER, "extra_body": {"API_KEY": "x"}}, 400),
    ],
)
def test_bad_bodies_are_openai_json(proxy: ProxyServer, body: dict, status: int) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"}, json=body)
    assert r.status_code == status and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["message"]
    weird = httpx.get(proxy.url + "/v1/models", headers={"Authorization": "Bearer k\u00e9y".encode()})
    assert weird.status_code == 401


def test_upstream_addresses_never_reach_clients(
    hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream
) -> None:
    config = _config(hf, deepinfra, tgi)
    dead = {"model": "huggingface/tgi", "api_base": "http://127.0.0.1:9/internal"}
    config["model_list"].append({"model_name": "dead", "params": dead})
    with ProxyServer(config) as proxy:
        r = httpx.post(
            proxy.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER}"},
            json={"model": "dead", "messages": USER},
        )
    assert r.status_code == 502 and "127.0.0.1" not in r.text and "internal" not in r.text


def test_a_client_leaving_mid_stream_is_charged_what_arrived(proxy: ProxyServer, tgi: TGIUpstream) -> None:
    import time

    proxy.router.catalog.load_overrides(
        [{"model": "huggingface/tgi", "input_per_million": 100, "output_per_million": 100}]
    )
    key = _admin(proxy, "POST", "/admin/keys", json={"max_budget_usd": 1.0}).json()
    tgi.stream_delay = 0.05
    words = " ".join(f"w{i}" for i in range(100))
    with httpx.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": "local", "stream": True, "max_tokens": 500, "messages": [{"role": "user", "content": words}]},
    ) as r:
        assert r.status_code == 200, r.read()
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    assert tgi.wait_for_disconnect(5)
    _wait_for_spend(proxy, 1)
    deadline = time.time() + 5
    ledger = proxy.store.ledger()
    while ledger.totals(f"key:{key['id']}")[1] != 0:
        assert time.time() < deadline, "the reservation was not closed"
        time.sleep(0.05)
    spent_pico = ledger.totals(f"key:{key['id']}")[0]
    (row,) = _admin(proxy, "GET", "/admin/spend?group_by=key").json()["data"]
    assert spent_pico > 0 and row["cost_usd"] == pytest.approx(spent_pico / 10**12)
    ledger.close()
