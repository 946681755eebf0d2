"""Deployments without upstream credentials (a warning at startup, skipped by routing, a 503 that says the
server is misconfigured), and ``GET /v1/models/{id}``: over real HTTP, with the OpenAI SDK."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from router.proxy.config import ConfigError, load_config
from tests.http_checks import openai_error
from tests.services import free_port
from tests.test_proxy import MASTER, USER, ProxyServer
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, TGIUpstream

REPO = Path(__file__).resolve().parent.parent
DI_MODEL = "deepinfra/openai/gpt-oss-120b"
R1 = "huggingface/together/deepseek-ai/DeepSeek-R1"


def _config(tgi: TGIUpstream) -> dict:
    return {
        "model_list": [
            {"model_name": "chat", "params": {"model": DI_MODEL}},  # DEEPINFRA_API_KEY unset
            {"model_name": "chat", "params": {"model": "huggingface/tgi", "api_base": tgi.url}},  # needs no key
            {"model_name": "only-di", "params": {"model": DI_MODEL}},
            # An unset os.environ/ reference: never served with HF_TOKEN instead of the key the operator named.
            {"model_name": "r1", "litellm_params": {"model": R1, "api_key": "os.environ/POLYROUTE_TEST_UNSET_KEY"}},
            {
                "model_name": "meta-llama/Llama-3.3-70B-Instruct",
                "params": {"model": "huggingface/tgi", "api_base": tgi.url},
            },
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
    }


@pytest.fixture
def unset(deepinfra: DeepInfraUpstream, monkeypatch: pytest.MonkeyPatch) -> DeepInfraUpstream:
    """The local DeepInfra upstream with its base URL set but DEEPINFRA_API_KEY not."""
    monkeypatch.delenv("DEEPINFRA_API_KEY")
    monkeypatch.delenv("POLYROUTE_TEST_UNSET_KEY", raising=False)
    return deepinfra


def test_missing_keys_warned_once_skipped_and_a_503(
    unset: DeepInfraUpstream, hf: HFRouterUpstream, tgi: TGIUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="polyroute.proxy"):
        server = ProxyServer(_config(tgi))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    about = [w for w in warnings if "no upstream credentials" in w]
    assert len(about) == 1, warnings
    text = about[0]
    assert f"chat[0]:{DI_MODEL}" in text and f"only-di[0]:{DI_MODEL}" in text and "DEEPINFRA_API_KEY" in text
    assert f"r1[0]:{R1}" in text and "POLYROUTE_TEST_UNSET_KEY" in text
    assert "chat[1]" not in text and "meta-llama" not in text
    assert "hf_test_token_123456" not in text  # names, never values
    with server, openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0) as client:
        for _ in range(6):  # the keyless deployment is skipped, not tried first and failed over
            raw = client.chat.completions.with_raw_response.create(model="chat", messages=USER)  # type: ignore[arg-type]
            assert raw.parse().choices[0].message.content == "Echo: hello proxy"
        assert not unset.requests
        caplog.clear()
        for model, stream in (("only-di", False), ("only-di", True), ("r1", False)):
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model=model, messages=USER, stream=stream)  # type: ignore[call-overload, arg-type]
            assert info.value.status_code == 503
            message = str(info.value)
            assert "server is misconfigured" in message and "api_key" not in message, message
            assert info.value.body["code"] == "server_misconfigured"  # type: ignore[index]
        assert not unset.requests and not any(q.path.endswith("/chat/completions") for q in hf.requests)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "DEEPINFRA_API_KEY" in logged and "POLYROUTE_TEST_UNSET_KEY" in logged  # the operator learns which
        # A virtual key reads the same 503, without the deployment's model string.
        key = httpx.post(
            server.url + "/admin/keys", headers={"Authorization": f"Bearer {MASTER}"}, json={"alias": "t"}
        ).json()["key"]
        answer = httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "only-di", "messages": USER},
        )
        error = openai_error(answer, 503)
        assert "misconfigured" in error["message"] and "deepinfra" not in error["message"]


def test_a_key_set_after_startup_is_used(unset: DeepInfraUpstream, tgi: TGIUpstream) -> None:
    with (
        ProxyServer(_config(tgi)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0) as client,
    ):
        os.environ["DEEPINFRA_API_KEY"] = "di-test-key-abcdef"  # monkeypatch's delenv restores it afterwards
        reply = client.chat.completions.create(model="only-di", messages=USER)  # type: ignore[arg-type]
        assert reply.choices[0].message.content and unset.requests[-1].token == "di-test-key-abcdef"


def test_unset_environ_reference_is_fatal_only_when_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    path = tmp_path / "p.yaml"
    path.write_text(
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/m, api_key: os.environ/NOPE_KEY}\n"
        "  - model_name: b\n    params: {model: openai/m, extra_headers: {X-Team: os.environ/NOPE_TEAM}}\n"
    )
    config = load_config(path)
    assert config.model_list[0] == {
        "model_name": "a",
        "litellm_params": {"model": "openai/m"},
        "unset_env": ["NOPE_KEY"],
    }
    assert config.model_list[1]["params"] == {"model": "openai/m", "extra_headers": {}}
    assert config.model_list[1]["unset_env"] == ["NOPE_TEAM"]
    with pytest.raises(
        ConfigError, match=r"p.yaml: model_list\[0\].litellm_params.api_key: environment variable NOPE_KEY"
    ):
        load_config(path, strict=True)
    path.write_text("model_list:\n  - model_name: a\n    params: {model: os.environ/NOPE_MODEL}\n")
    with pytest.raises(ConfigError, match="NOPE_MODEL is not set"):  # no model string: no deployment to skip
        load_config(path)


def test_readme_command_starts_without_hf_token(
    unset: DeepInfraUpstream, hf: HFRouterUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``POLYROUTE_MASTER_KEY=change-me python3 -m router.cli serve --config configs/proxy.yaml`` on a machine
    without HF_TOKEN: it starts, says what to set, and answers with the 503 of a misconfigured server."""
    for var in ("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HUGGINGFACE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    port = free_port()
    env = {**os.environ, "POLYROUTE_MASTER_KEY": "change-me", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "router.cli", "serve", "--config", str(REPO / "configs/proxy.yaml")]
    server = subprocess.Popen(
        [*argv, "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        from tests.cli import wait_until_healthy

        wait_until_healthy(url, server)
        with openai.OpenAI(base_url=url + "/v1", api_key="change-me", max_retries=0) as client:
            with pytest.raises(openai.InternalServerError, match="misconfigured") as info:
                client.chat.completions.create(model="my-r1-model", messages=USER)  # type: ignore[arg-type]
            assert info.value.status_code == 503
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out
    warning = next(line for line in out.splitlines() if "no upstream credentials" in line and "WARNING" in line)
    assert "my-r1-model[0]" in warning and "HF_TOKEN" in warning and "DEEPINFRA_API_KEY" in warning
    assert "chat[1]:deepinfra/openai/gpt-oss-120b" in warning


# ---------------------------------------------------------------- GET /v1/models/{id}


def test_retrieve_a_model(tgi: TGIUpstream, hf: HFRouterUpstream) -> None:
    with (
        ProxyServer(_config(tgi)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0) as client,
    ):
        model = client.models.retrieve("meta-llama/Llama-3.3-70B-Instruct")
        assert (model.id, model.object, model.owned_by) == ("meta-llama/Llama-3.3-70B-Instruct", "model", "polyroute")
        assert model.created == client.models.list().data[0].created
        assert client.models.retrieve("chat").id == "chat"
        with pytest.raises(openai.NotFoundError, match="does not exist") as info:
            client.models.retrieve("gpt-4")
        assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
        auth = {"Authorization": f"Bearer {MASTER}"}
        bare = httpx.get(server.url + "/models/meta-llama/Llama-3.3-70B-Instruct", headers=auth)
        assert bare.status_code == 200 and bare.json()["id"] == "meta-llama/Llama-3.3-70B-Instruct"
        assert openai_error(httpx.get(server.url + "/v1/models/meta-llama", headers=auth), 404)["code"] == (
            "model_not_found"
        )
        assert openai_error(httpx.get(server.url + "/v1/models/chat"), 401)  # no key, no answer
        # A virtual key sees only its models: another model is as unknown as one that does not exist.
        key = httpx.post(server.url + "/admin/keys", headers=auth, json={"models": ["chat"]}).json()["key"]
        with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as team:
            assert team.models.retrieve("chat").id == "chat"
            with pytest.raises(openai.NotFoundError):
                team.models.retrieve("meta-llama/Llama-3.3-70B-Instruct")
            assert [m.id for m in team.models.list()] == ["chat"]
