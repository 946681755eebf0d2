"""Two proxy replicas (separate processes) sharing Redis and PostgreSQL behave as one proxy:
a key's budget and rpm hold across both, a deployment cooled down by one is skipped by the other,
and losing Redis keeps them serving (degraded, budgets failing safe) until it is back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.replicas import Replicas
from tests.services import PrivateRedis, postgres_schema, postgres_url
from tests.test_router import CHAT
from tests.upstreams import OpenAICompatUpstream, Reply

pytestmark = pytest.mark.services
MASTER = "sk-master-replicas-0123456789"
USER = [{"role": "user", "content": "hello replicas"}]


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL schema, as a database_url both replicas use."""
    with postgres_schema("replicas") as name:
        yield postgres_url(name)


@pytest.fixture(scope="module")
def upstreams(servers: list[OpenAICompatUpstream]) -> list[OpenAICompatUpstream]:
    return servers[:2]


def _config(upstreams: list[OpenAICompatUpstream], database: str, redis_url: str, prefix: str) -> dict[str, Any]:
    a, b = upstreams
    return {
        "model_list": [
            {
                "model_name": "chat",
                "params": {"model": "openai/m", "api_base": a.url + "/v1", "api_key": "sk-up-1111", "weight": 1000},
            },
            {
                "model_name": "chat",
                "params": {"model": "openai/m", "api_base": b.url + "/v1", "api_key": "sk-up-2222", "weight": 0.001},
            },
        ],
        "router_settings": {"num_retries": 1, "allowed_fails": 2, "cooldown_time": 60},
        "pricing": [{"model": "openai/m", "input_per_million": 100, "output_per_million": 100}],
        "general_settings": {
            "master_key": MASTER,
            "database_url": database,
            "redis_url": redis_url,
            "redis_prefix": prefix,
            "redis_sync_interval": 0.05,
        },
    }


def _chat_requests(server: OpenAICompatUpstream) -> int:
    return sum(1 for q in server.requests if q.path == CHAT)


def _admin(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {MASTER}"}, timeout=10, **kw)


def _alternating(urls: list[str], key: str, n: int, **body: Any) -> list[httpx.Response]:
    """``n`` concurrent requests from one client, alternating between the replicas."""

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(
                *[
                    http.post(
                        urls[i % len(urls)] + "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "chat", "messages": USER, **body},
                    )
                    for i in range(n)
                ]
            )

    return asyncio.run(main())


def test_a_keys_budget_and_rpm_hold_across_replicas(
    upstreams: list[OpenAICompatUpstream], database: str, prefix: str
) -> None:
    for server in upstreams:
        server.reset()
    with Replicas(_config(upstreams, database, "redis://127.0.0.1:6379/0", prefix)) as proxy:
        one, two = proxy.urls
        # rpm: 12 per minute for the key, 40 requests alternating between the replicas
        limited = _admin(one, "POST", "/admin/keys", json={"rpm": 12}).json()["key"]
        statuses = Counter(r.status_code for r in _alternating(proxy.urls, limited, 40))
        assert statuses == {200: 12, 429: 28}
        # budget: $0.05 at $100/M tokens; each call reserves its worst case first (prompt + 10 tokens: ~20 fit)
        budgeted = _admin(two, "POST", "/admin/keys", json={"max_budget_usd": 0.05}).json()
        before = sum(_chat_requests(s) for s in upstreams)
        replies = _alternating(proxy.urls, budgeted["key"], 64, max_tokens=10)
        codes = Counter(r.status_code for r in replies)
        assert codes[200] > 0 and codes[429] > 0 and codes[200] + codes[429] == 64
        assert {r.json()["error"]["code"] for r in replies if r.status_code == 429} == {"budget_exceeded"}
        assert sum(_chat_requests(s) for s in upstreams) - before == codes[200]  # refused calls reach no upstream
        served_by = Counter(r.url.port for r in replies if r.status_code == 200)
        assert len(served_by) == 2  # both replicas spent from the one budget
        spent = 0.0
        deadline = time.monotonic() + 10  # spend records are written in batches (about every second)
        while time.monotonic() < deadline:
            rows = _admin(one, "GET", "/admin/spend?group_by=key").json()["data"]
            found = [r for r in rows if r["key"] == budgeted["id"]]
            if found and found[0]["requests"] >= 64:
                spent = found[0]["cost_usd"]
                break
            time.sleep(0.2)
        assert 0 < spent <= 0.05


def test_a_deployment_cooled_down_by_one_replica_is_skipped_by_the_other(
    upstreams: list[OpenAICompatUpstream], database: str, prefix: str
) -> None:
    a, b = upstreams
    with Replicas(_config(upstreams, database, "redis://127.0.0.1:6379/0", prefix)) as proxy:
        one, two = proxy.urls
        a.reset()
        b.reset()
        for _ in range(2):  # a fails twice on replica one (b answers): allowed_fails reached, a cools down
            a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
            assert _admin(one, "POST", "/v1/chat/completions", json={"model": "chat", "messages": USER}).is_success
        assert _chat_requests(a) == 2
        time.sleep(0.5)  # ten sync intervals
        for _ in range(6):
            assert _admin(two, "POST", "/v1/chat/completions", json={"model": "chat", "messages": USER}).is_success
        assert _chat_requests(a) == 2 and _chat_requests(b) == 8  # replica two never asked a


def test_losing_redis_keeps_serving_degraded_and_budgets_fail_safe(
    upstreams: list[OpenAICompatUpstream], database: str
) -> None:
    redis_server = PrivateRedis().start()
    try:
        config = _config(upstreams, database, redis_server.url, "polyroute")
        with Replicas(config) as proxy:
            one, two = proxy.urls
            budgeted = _admin(one, "POST", "/admin/keys", json={"max_budget_usd": 5}).json()["key"]
            plain = _admin(one, "POST", "/admin/keys", json={"rpm": 1000}).json()["key"]
            for url in proxy.urls:
                assert _admin(url, "GET", "/health/ready").json()["status"] == "ready"
            assert _alternating(proxy.urls, budgeted, 2, max_tokens=50)[0].status_code == 200
            redis_server.stop()
            for server in upstreams:
                server.reset()
            served = _alternating(proxy.urls, plain, 10)  # no budget: served on local state
            assert [r.status_code for r in served] == [200] * 10
            refused = _alternating(proxy.urls, budgeted, 4, max_tokens=50)  # budgets fail safe
            assert [r.status_code for r in refused] == [503] * 4
            assert {r.json()["error"]["code"] for r in refused} == {"budget_unavailable"}
            assert "unreachable" in refused[0].json()["error"]["message"]
            assert sum(_chat_requests(s) for s in upstreams) == 10
            for url in proxy.urls:
                ready = _admin(url, "GET", "/health/ready")
                assert ready.status_code == 200 and ready.json()["status"] == "degraded"
                assert ready.json()["redis"] == "down"
                metrics = _admin(url, "GET", "/metrics").text
                assert "polyroute_redis_up 0" in metrics
            redis_server.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if all(_admin(u, "GET", "/health/ready").json()["status"] == "ready" for u in proxy.urls):
                    break
                time.sleep(0.1)
            assert [_admin(u, "GET", "/health/ready").json()["status"] for u in proxy.urls] == ["ready", "ready"]
            back = _alternating(proxy.urls, budgeted, 2, max_tokens=50)
            assert [r.status_code for r in back] == [200, 200], [r.text for r in back] + [proxy.log(0)[-3000:]]
            assert "polyroute_redis_up 1" in _admin(two, "GET", "/metrics").text
    finally:
        redis_server.stop()
