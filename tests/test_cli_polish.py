"""The first hour with the CLI: a busy port is one line, a closed pipe is a quiet exit, ``--version``,
``serve --help`` and ``--log-level``, and ``polyroute models`` naming the key variable a 401 asks for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router import cli
from tests.cli import REPO, polyroute_argv, wait_until_healthy
from tests.services import free_port
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, HubUpstream

MASTER = "sk-polish-master-1234"


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without credentials or base URLs, plus ``extra``."""
    dropped = ("HF_", "HUGGINGFACE", "DEEPINFRA", "OPENAI", "TOGETHER", "GROQ")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)} | extra


def _run(*args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        polyroute_argv(*args), cwd=REPO, capture_output=True, text=True, env=env or _env(), timeout=60, **kw
    )


def _config(tmp_path: Path, model: str = "huggingface/together/Qwen/Qwen3-8B") -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        f"model_list:\n  - model_name: chat\n    params: {{model: {model}}}\n"
        f"general_settings: {{master_key: {MASTER}, database_url: 'sqlite:///{tmp_path / 'p.db'}'}}\n"
    )
    return path


# ---------------------------------------------------------------- serve: busy port, help, log level


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another server is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_serve_on_a_busy_port_is_one_line_naming_the_address_and_the_fix(tmp_path: Path, busy_port: int) -> None:
    out = _run("serve", "--config", str(_config(tmp_path)), "--port", str(busy_port))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "serving" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("polyroute serve:")]
    assert len(errors) == 1, out.stderr
    assert f"127.0.0.1:{busy_port}" in errors[0] and "--port" in errors[0] and "stop" in errors[0], errors[0]


def test_serve_help_documents_host_port_and_log_level() -> None:
    out = _run("serve", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--host HOST address to listen on" in text and "--port PORT TCP port to listen on" in text, text
    assert "--log-level {debug,info,warning,error}" in text, text
    bad = _run("serve", "--config", "x.yaml", "--log-level", "loud")
    assert bad.returncode == 2 and "invalid choice: 'loud'" in bad.stderr


def _serve_one_chat(tmp_path: Path, hf: HFRouterUpstream, hub: HubUpstream, *args: str) -> str:
    """Start ``polyroute serve ARGS`` on the HF upstream, make one chat call, stop it; its log."""
    port = free_port()
    env = _env(HF_ROUTER_URL=hf.url, HF_ENDPOINT=hub.url, HF_TOKEN="hf_polish_token_123456")
    env["POLYROUTE_CACHE_DIR"] = str(tmp_path / "cache")  # the catalog is fetched live (with httpx) by the proxy
    argv = polyroute_argv("serve", "--config", str(_config(tmp_path)), "--port", str(port), *args)
    server = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server)
        answer = httpx.post(
            url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert any(r.path.endswith("/v1/models") for r in hf.requests), "the proxy fetched no catalog"
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        output = server.communicate(timeout=30)[0]
    return output


def test_serve_logs_serving_once_listening_and_no_http_client_info_lines(
    tmp_path: Path, hf: HFRouterUpstream, hub: HubUpstream
) -> None:
    output = _serve_one_chat(tmp_path, hf, hub)
    serving = [line for line in output.splitlines() if "serving" in line]
    assert len(serving) == 1 and "on http://127.0.0.1:" in serving[0], output
    assert "HTTP Request:" not in output and " httpx:" not in output and " httpcore" not in output, output


def test_serve_log_level_debug_shows_http_client_lines_and_warning_hides_info(
    tmp_path: Path, hf: HFRouterUpstream, hub: HubUpstream
) -> None:
    debug = _serve_one_chat(tmp_path, hf, hub, "--log-level", "debug")
    assert "HTTP Request:" in debug, debug
    quiet = _serve_one_chat(tmp_path, hf, hub, "--log-level", "warning")
    assert " INFO " not in quiet and "serving" not in quiet, quiet


# ---------------------------------------------------------------- a reader that goes away


def _into_closed_pipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``polyroute ARGS`` with stdout a pipe whose reader is already gone (``... | head`` once head exits)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            polyroute_argv(*args), cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=60
        )
    finally:
        os.close(write)


def _assert_quiet(out: subprocess.CompletedProcess[str]) -> None:
    assert out.stderr == "", out.stderr
    assert out.returncode == 141  # as a command killed by SIGPIPE


def test_models_into_a_closed_pipe_exits_quietly(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream) -> None:
    env = _env(HF_ROUTER_URL=hf.url, DEEPINFRA_API_BASE=deepinfra.url + "/v1/openai")
    _assert_quiet(_into_closed_pipe("models", env=env))
    _assert_quiet(_into_closed_pipe("models", "--json", env=env))
    for help_text in (("--help",), ("serve", "--help"), ("--version",)):  # argparse ignores a closed stdout itself
        out = _into_closed_pipe(*help_text, env=env)
        assert out.stderr == "" and out.returncode == 0, out.stderr


def test_chat_and_batch_status_into_a_closed_pipe_exit_quietly(hf: HFRouterUpstream, tmp_path: Path) -> None:
    env = _env(HF_ROUTER_URL=hf.url, HF_TOKEN="hf_polish_token_123456")
    _assert_quiet(_into_closed_pipe("chat", "-q", "-m", "huggingface/Qwen/Qwen3-8B", "hello", env=env))
    _assert_quiet(_into_closed_pipe("chat", "-q", "--no-stream", "-m", "huggingface/Qwen/Qwen3-8B", "hi", env=env))
    requests = tmp_path / "in.jsonl"
    requests.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    out = tmp_path / "out.jsonl"
    done = _run("batch", "run", str(requests), "-m", "huggingface/Qwen/Qwen3-8B", "-o", str(out), env=env)
    assert done.returncode == 0, done.stderr
    _assert_quiet(_into_closed_pipe("batch", "status", str(out), env=env))


# ---------------------------------------------------------------- --version


def test_version() -> None:
    from importlib.metadata import version

    out = _run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"polyroute {version('polyroute')}\n"


def test_version_of_a_source_tree_that_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    pyproject = (REPO / "pyproject.toml").read_text()
    declared = next(line.split('"')[1] for line in pyproject.splitlines() if line.startswith("version ="))
    assert cli.package_version() == f"{declared} (source tree, not installed)"


# ---------------------------------------------------------------- models: which variable a 401 asks for


def test_models_names_the_key_variable_when_the_catalog_says_401(deepinfra: DeepInfraUpstream, tmp_path: Path) -> None:
    env = _env(
        DEEPINFRA_API_BASE=deepinfra.url + "/v1/openai",
        HF_ROUTER_URL="http://127.0.0.1:9",
        POLYROUTE_CACHE_DIR=str(tmp_path / "cache"),
    )
    out = _run("models", "--provider", "deepinfra", "--refresh", env=env)
    line = next(line for line in out.stdout.splitlines() if line.startswith("deepinfra:"))
    assert "HTTP 401" in line and "set DEEPINFRA_API_KEY" in line, line
    deepinfra.valid_tokens = {"di-right-key"}
    refused = _run("models", "--provider", "deepinfra", "--refresh", env=env | {"DEEPINFRA_API_KEY": "di-wrong-key"})
    line = next(line for line in refused.stdout.splitlines() if line.startswith("deepinfra:"))
    assert "HTTP 401" in line and "DEEPINFRA_API_KEY was refused" in line and "di-wrong-key" not in line, line
