"""Shared fixtures: local upstream servers (real HTTP on 127.0.0.1) and a clean environment.

Servers start once per session and are reset before each test. The environment is stripped of
every credential and base-URL variable so tests never reach the internet by accident.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from providers.hub_mapping import default_hub_cache
from router.pricing import Catalog, default_catalog
from tests.served import server_fixture
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, HubUpstream, OpenAICompatUpstream, TGIUpstream

_ENV_VARS = (
    "HUGGINGFACE_HUB_TOKEN",
    "HF_TOKEN",
    "HUGGINGFACE_API_KEY",
    "DEEPINFRA_API_KEY",
    "OPENAI_API_KEY",
    "HF_ROUTER_URL",
    "HF_ENDPOINT",
    "DEEPINFRA_API_BASE",
    "OPENAI_API_BASE",
    "TOGETHER_API_KEY",
    "TOGETHERAI_API_KEY",
    "GROQ_API_KEY",
)


def pytest_configure(config: pytest.Config) -> None:
    # Nothing in the test run may go to the internet: every base URL points at loopback (clean_env
    # removes the real ones; the fixtures set local servers).
    # The catalog's disk cache goes to a throwaway folder, never the user's ~/.cache.
    os.environ["POLYROUTE_CACHE_DIR"] = tempfile.mkdtemp(prefix="polyroute-test-cache-")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    default_hub_cache().clear()  # each test sees the Hub afresh


def _fresh(server: object) -> None:
    """Forget requests and scripted replies, and undo per-test tweaks of a session server."""
    server.reset()  # type: ignore[attr-defined]
    server.valid_tokens = None  # type: ignore[attr-defined]
    server.unknown_models = set()  # type: ignore[attr-defined]
    server.reasoning_field = None  # type: ignore[attr-defined]
    server.stream_delay = 0.0  # type: ignore[attr-defined]
    server.fail_rate = 0.0  # type: ignore[attr-defined]
    server.failures = 0  # type: ignore[attr-defined]
    server.template_tokens = False  # type: ignore[attr-defined]
    server.latency = 0.0  # type: ignore[attr-defined]


def _session_server(name: str, server_cls: type, **kw: object) -> Any:
    """A session fixture ``name``: one server of ``server_cls`` for the whole run."""
    return server_fixture(name, server_cls, **kw)


_hf_session = _session_server("_hf_session", HFRouterUpstream)
_hub_session = _session_server("_hub_session", HubUpstream)
_deepinfra_session = _session_server("_deepinfra_session", DeepInfraUpstream)
_tgi_session = _session_server("_tgi_session", TGIUpstream)
_tgi2_session = _session_server("_tgi2_session", TGIUpstream, version="2.x")
_oai_session = _session_server("_oai_session", OpenAICompatUpstream)


@pytest.fixture
def hf(_hf_session: HFRouterUpstream, _hub_session: HubUpstream, monkeypatch: pytest.MonkeyPatch) -> HFRouterUpstream:
    """The HF router (and the Hub behind HF_ENDPOINT), with HF_TOKEN set."""
    _fresh(_hf_session)
    _fresh(_hub_session)
    monkeypatch.setenv("HF_ROUTER_URL", _hf_session.url)
    monkeypatch.setenv("HF_ENDPOINT", _hub_session.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_123456")
    # Load the price catalog now so that tests counting requests see only their own calls.
    default_catalog().source("huggingface")
    _hf_session.reset()
    return _hf_session


@pytest.fixture
def hub(hf: HFRouterUpstream, _hub_session: HubUpstream) -> HubUpstream:
    return _hub_session


@pytest.fixture
def deepinfra(_deepinfra_session: DeepInfraUpstream, monkeypatch: pytest.MonkeyPatch) -> DeepInfraUpstream:
    _fresh(_deepinfra_session)
    monkeypatch.setenv("DEEPINFRA_API_BASE", _deepinfra_session.url + "/v1/openai")
    monkeypatch.setenv("DEEPINFRA_API_KEY", "di-test-key-abcdef")
    default_catalog().source("deepinfra")
    _deepinfra_session.reset()
    return _deepinfra_session


def _fresh_server(name: str, session: str) -> Any:
    """A fixture ``name``: the session server ``session``, made fresh for the test."""

    def fresh(request: pytest.FixtureRequest) -> Any:
        server = request.getfixturevalue(session)
        _fresh(server)
        return server

    return pytest.fixture(name=name)(fresh)


tgi = _fresh_server("tgi", "_tgi_session")  # TGIUpstream
tgi2 = _fresh_server("tgi2", "_tgi2_session")  # TGIUpstream, version 2.x
oai = _fresh_server("oai", "_oai_session")  # OpenAICompatUpstream


@pytest.fixture
def priced() -> Catalog:
    """A catalog of its own (no disk cache) that prices openai/m."""
    catalog = Catalog(cache_dir=False)
    catalog.set_price("openai/m", input_per_million=1, output_per_million=1)  # $1 per 1M tokens either way
    return catalog


@pytest.fixture(scope="module")
def servers() -> Iterator[list[OpenAICompatUpstream]]:
    """Three OpenAI-compatible upstreams of the test module's own; ``a``, ``b``, ``c`` reset them for a test."""
    started = [OpenAICompatUpstream().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def _reset(server: OpenAICompatUpstream) -> OpenAICompatUpstream:
    server.reset()
    return server


@pytest.fixture
def a(servers: list[OpenAICompatUpstream]) -> OpenAICompatUpstream:
    return _reset(servers[0])


@pytest.fixture
def b(servers: list[OpenAICompatUpstream]) -> OpenAICompatUpstream:
    return _reset(servers[1])


@pytest.fixture
def c(servers: list[OpenAICompatUpstream]) -> OpenAICompatUpstream:
    return _reset(servers[2])


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own on the machine's Redis, dropped afterwards."""
    from tests.services import drop_prefix, fresh_prefix, require_redis

    require_redis()
    name = fresh_prefix()
    yield name
    drop_prefix(name)
