"""Shared state in real Redis: the budget ledger, rpm/tpm windows, and router state across replicas
(several Routers or processes on one Redis), including Redis going away and coming back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from router import Budget, Router, errors
from router.errors import BudgetUnavailableError
from router.shared import RedisLedger, RedisLink, SharedRouterState, SharedWindows
from tests.ledgers import race_for_the_cap
from tests.services import REDIS_URL, PrivateRedis
from tests.test_router import CHAT, USER, a_first, calls, chat, dep, ok_or_limited
from tests.upstreams import OpenAICompatUpstream, Reply, completion_json

pytestmark = pytest.mark.services


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


# ---------------------------------------------------------------- the ledger


def test_ledger_reserve_settle_release_are_exact_and_idempotent(prefix: str) -> None:
    ledger = RedisLedger(RedisLink(REDIS_URL, prefix=prefix))
    first = ledger.reserve("team", 400, limit=1_000)
    second = ledger.reserve("team", 500, limit=1_000)
    assert first and second and ledger.reserve("team", 101, limit=1_000) is None  # 400 + 500 + 101 > 1000
    ledger.settle("team", first, 123)
    ledger.settle("team", first, 999)  # a repeated settle changes nothing
    ledger.release("team", second)
    assert ledger.totals("team") == (123, 0)
    big = 9 * 10**15  # $9,000 in pico-USD: integer arithmetic in Redis stays exact
    rid = ledger.reserve("big", big, limit=10**16)
    assert rid is not None
    ledger.settle("big", rid, big - 1)
    assert ledger.totals("big") == (big - 1, 0)


def test_ledger_cap_holds_across_processes(prefix: str) -> None:
    make = f"RedisLedger(RedisLink({REDIS_URL!r}, prefix={prefix!r}))"
    counts = race_for_the_cap("from router.shared import RedisLedger, RedisLink", make, tries=40, timeout=120)
    assert sum(counts) == 60
    assert RedisLedger(RedisLink(REDIS_URL, prefix=prefix)).totals("shared") == (600, 0)


def test_budget_fails_safe_when_redis_is_unreachable(private_redis: PrivateRedis) -> None:
    ledger = RedisLedger(RedisLink(private_redis.url, socket_timeout=0.2))
    budget = Budget(1.0, ledger=ledger, name="team")
    before = budget.reserve(10**9)
    private_redis.freeze()  # connections stall like a dead host: a timeout, not a refusal
    try:
        started = time.monotonic()
        with pytest.raises(BudgetUnavailableError, match=r"unreachable.*fail-safe") as info:
            budget.reserve(10**9)
        assert info.value.status_code == 503
        assert str(private_redis.port) not in str(info.value)  # API clients learn nothing about the infrastructure
        with pytest.raises(BudgetUnavailableError):  # marked down: refused at once, no second timeout
            budget.reserve(10**9)
        assert time.monotonic() - started < 1.0
        before.settle(7 * 10**8)  # a call that was in flight finishes during the outage: owed, not lost
        # Owed: that settlement, and giving up the reservation whose script timed out (Redis may run it late).
        assert ledger.pending() == 2
    finally:
        private_redis.thaw()
    time.sleep(ledger.link.retry_seconds)
    after = budget.reserve(10**6)  # Redis is back: the owed settlement is written first
    assert ledger.pending() == 0
    after.release()
    assert ledger.totals("team") == (7 * 10**8, 0)


def test_local_mode_keeps_spending_and_pays_redis_back(private_redis: PrivateRedis) -> None:
    ledger = RedisLedger(RedisLink(private_redis.url, socket_timeout=0.2), on_unavailable="local")
    budget = Budget(1.0, ledger=ledger, name="team")  # 10**12 pico
    budget.reserve(6 * 10**11).settle(6 * 10**11)
    budget.reserve(10**9).release()  # every reservation reply carries the totals the local count starts from
    private_redis.freeze()
    try:
        during = budget.reserve(3 * 10**11)  # served from local counting, which starts at the last seen totals
        with pytest.raises(errors.BudgetExceededError):
            budget.reserve(2 * 10**11)  # 6 + 3 + 2 > 10: refused locally too
        during.settle(2 * 10**11)
    finally:
        private_redis.thaw()
    time.sleep(ledger.link.retry_seconds)
    ledger.flush()
    assert ledger.pending() == 0 and ledger.totals("team") == (8 * 10**11, 0)
    ledger.flush()  # paying back twice adds nothing
    assert ledger.totals("team") == (8 * 10**11, 0)
    # A second outage starts from the fresh totals (8 of 10 spent), not from the first outage's count.
    private_redis.freeze()
    try:
        assert budget.reserve(2 * 10**11) is not None
        with pytest.raises(errors.BudgetExceededError):
            budget.reserve(10**9)
    finally:
        private_redis.thaw()


def test_async_settlements_owed_during_an_outage_reach_redis_without_another_call(
    private_redis: PrivateRedis, a: OpenAICompatUpstream
) -> None:
    link = RedisLink(private_redis.url, socket_timeout=0.2)
    ledger = RedisLedger(link)
    shared = SharedRouterState(link, interval=0.05)
    shared.flushers.append(ledger.flush)  # what the proxy does
    router = Router([dep("chat", a)], shared_state=shared)

    async def main() -> None:
        rid = await ledger.areserve("team", 500, limit=1_000)
        assert rid is not None
        private_redis.freeze()
        try:
            await ledger.asettle("team", rid, 300)  # times out: owed
            assert ledger.pending() == 1
        finally:
            private_redis.thaw()

    try:
        asyncio.run(main())
        deadline = time.monotonic() + 5
        while ledger.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ledger.pending() == 0 and ledger.totals("team") == (300, 0)
    finally:
        router.close()


def test_a_reservation_sent_twice_reserves_once_and_free_models_settle(prefix: str) -> None:
    from router.shared import scripts

    link = RedisLink(REDIS_URL, prefix=prefix)
    ledger = RedisLedger(link)
    keys = [link.key("budget", "b"), link.key("budget", "b") + ":open", link.key("budget", "b") + ":closed"]
    for _ in range(2):  # a retry after a reply lost on a dropped connection
        assert link.eval("reserve", scripts.RESERVE, keys, [100, 1_000, "rid-1", "1.0"])[0] == 1
    assert ledger.totals("b") == (0, 100)
    ledger.settle("b", "rid-1", 40)
    assert ledger.totals("b") == (40, 0)
    free = ledger.reserve("b", 0, limit=1_000)  # a model priced at 0
    assert free is not None
    ledger.settle("b", free, 0)
    assert ledger.totals("b") == (40, 0)


@pytest.mark.parametrize(
    "url",
    [
        "redis://app:s3cret-pw@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=s3cret-pw",
        "redis://:s3cret-pw@127.0.0.1:1",
    ],
)
def test_a_redis_password_never_shows(url: str, caplog: pytest.LogCaptureFixture) -> None:
    link = RedisLink(url, socket_timeout=0.1)
    assert not link.ping()
    shown = " ".join([repr(link), link.where, str(link.status()), str(link.last_error), caplog.text])
    assert "s3cret-pw" not in shown and "127.0.0.1:1" in shown
    ledger = RedisLedger(link)
    with pytest.raises(BudgetUnavailableError) as info:
        ledger.reserve("b", 1, 10)
    assert "s3cret-pw" not in str(info.value) and "s3cret-pw" not in repr(ledger)


# ---------------------------------------------------------------- rpm / tpm windows


def test_rpm_window_holds_across_replicas_under_concurrency(prefix: str) -> None:
    replicas = [SharedWindows(RedisLink(REDIS_URL, prefix=prefix)) for _ in range(2)]

    async def main() -> list[float]:
        return await asyncio.gather(*[replicas[i % 2].aadmit("key:k1", rpm=7, tpm=None, tokens=0) for i in range(40)])

    waits = asyncio.run(main())
    assert sum(1 for w in waits if w == 0) == 7
    assert all(0 < w <= 60 for w in waits if w)
    assert replicas[0].used("key:k1") == (7, 0)


def test_tpm_window_refuses_once_the_tokens_are_used(prefix: str) -> None:
    windows = SharedWindows(RedisLink(REDIS_URL, prefix=prefix))
    assert windows.admit("dep:x", rpm=None, tpm=1_000, tokens=600) == 0
    assert windows.admit("dep:x", rpm=None, tpm=1_000, tokens=300) == 0
    assert windows.admit("dep:x", rpm=None, tpm=1_000, tokens=300) > 0  # 1,200 > 1,000
    assert windows.used("dep:x") == (2, 900)


# ---------------------------------------------------------------- router state across replicas


def _replica(prefix: str, model_list: list[dict[str, Any]], **kw: Any) -> Router:
    shared = SharedRouterState(RedisLink(REDIS_URL, prefix=prefix), interval=0.05)
    return Router(model_list, shared_state=shared, **kw)


def _cooling_replicas(prefix: str, a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> tuple[Router, Router]:
    """Two replicas preferring a, where 2 failures in a row cool a deployment down for 30 s."""
    model_list = a_first(a, b)
    # A long backoff: the retry goes to b at once, however slow the machine (with a 1 ms one, a retry that
    # came later went back to a, and its success cleared the fleet-wide count).
    settings = {"num_retries": 1, "allowed_fails": 2, "cooldown_seconds": 30, "backoff_base": 30, "seed": 3}
    return _replica(prefix, model_list, **settings), _replica(prefix, model_list, **settings)


def test_a_deployment_cooled_down_by_one_replica_is_skipped_by_another(
    prefix: str, a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    one, two = _cooling_replicas(prefix, a, b)
    try:
        assert chat(two).meta.attempts[0].deployment == "chat[0]:openai/m"  # two prefers a too
        for _ in range(2):
            a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
            chat(one)  # a fails on replica one, b answers
        assert one.shared is not None and one.shared.sync_now()
        assert two.shared is not None and two.shared.sync_now()
        served = [chat(two).meta.attempts[0].deployment for _ in range(5)]
        assert served == ["chat[1]:openai/m"] * 5 and calls(a) == 3  # two never asked a again
    finally:
        one.close()
        two.close()


def test_failures_on_two_replicas_add_up_to_one_cooldown(
    prefix: str, a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    one, two = _cooling_replicas(prefix, a, b)
    try:
        for router in (one, two):  # one failure each: neither alone reaches allowed_fails
            a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
            chat(router)
            assert router.shared is not None and router.shared.sync_now()
        assert one.shared is not None and one.shared.sync_now()
        assert [chat(r).meta.attempts[0].deployment for r in (one, two)] == ["chat[1]:openai/m"] * 2
    finally:
        one.close()
        two.close()


def test_a_success_between_failures_resets_the_fleet_wide_count(
    prefix: str, a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    model_list = a_first(a, b)
    router = _replica(
        prefix, model_list, num_retries=1, allowed_fails=3, cooldown_seconds=30, backoff_base=0.001, seed=3
    )
    try:
        assert router.shared is not None
        for outcome in ("fail", "fail", "ok", "fail"):  # never 3 failures in a row: no cooldown
            if outcome == "fail":
                a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
            chat(router)
            assert router.shared.sync_now()
        assert [chat(router).meta.attempts[0].deployment for _ in range(3)] == ["chat[0]:openai/m"] * 3
    finally:
        router.close()


def test_a_cancelled_admission_leaves_nothing_in_flight(private_redis: PrivateRedis, a: OpenAICompatUpstream) -> None:
    shared = SharedRouterState(RedisLink(private_redis.url, socket_timeout=0.5), interval=0.05)
    router = Router([dep("chat", a, rpm=100)], shared_state=shared)

    async def main() -> None:
        private_redis.freeze()  # the admission script stalls ...
        try:
            with pytest.raises(asyncio.TimeoutError):  # ... and the caller gives up first
                await asyncio.wait_for(router.acompletion(model="chat", messages=USER), 0.1)
        finally:
            private_redis.thaw()

    try:
        asyncio.run(main())
        state = router.groups["chat"][0].state
        assert (state.in_flight, state.probing, len(state.requests)) == (0, False, 0)
        chat(router)
    finally:
        router.close()


def test_deployment_rpm_holds_across_two_routers(prefix: str, a: OpenAICompatUpstream) -> None:
    one = _replica(prefix, [dep("chat", a, rpm=6)], on_limit="raise")
    two = _replica(prefix, [dep("chat", a, rpm=6)], on_limit="raise")

    async def main() -> list[str]:
        return await asyncio.gather(*[ok_or_limited((one, two)[i % 2]) for i in range(20)])

    try:
        outcomes = Counter(asyncio.run(main()))
        assert outcomes == {"ok": 6, "limited": 14} and calls(a) == 6
    finally:
        one.close()
        two.close()


def test_in_flight_and_latency_are_seen_by_the_other_replica(
    prefix: str, a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    model_list = [dep("chat", a), dep("chat", b)]
    one = _replica(prefix, model_list, strategy="least-in-flight", seed=1)
    two = _replica(prefix, model_list, strategy="least-in-flight", seed=1)
    slow_answer = completion_json("slow")
    for server in (a, b):
        for _ in range(2):
            server.enqueue(Reply(json=slow_answer, delay=1.0), CHAT)

    async def main() -> None:
        assert one.shared is not None and two.shared is not None
        # Replica one sends 4 slow requests (least-in-flight: 2 on a, 2 on b); two sees them as in flight.
        slow = [asyncio.create_task(one.acompletion(model="chat", messages=USER)) for _ in range(4)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(one.shared.sync_now)
        await asyncio.to_thread(two.shared.sync_now)
        assert [d.state.remote_in_flight for d in two.groups["chat"]] == [2, 2]
        assert [d.state.remote_in_flight for d in one.groups["chat"]] == [0, 0]  # its own are not "remote"
        await asyncio.gather(*slow)

    try:
        asyncio.run(main())
        assert one.shared is not None and two.shared is not None
        one.shared.sync_now()
        two.shared.sync_now()
        latencies = [d.state.latency_ewma_ms for d in two.groups["chat"]]
        assert all(value is not None for value in latencies)  # measured by one, known to two
        assert sum(d.state.remote_in_flight for d in two.groups["chat"]) == 0
        assert two.shared.status()["replicas"] == 2
    finally:
        one.close()
        two.close()


def test_router_keeps_serving_when_redis_goes_away(private_redis: PrivateRedis, a: OpenAICompatUpstream) -> None:
    shared = SharedRouterState(RedisLink(private_redis.url, socket_timeout=0.2), interval=0.05)
    router = Router([dep("chat", a, rpm=100)], shared_state=shared)
    try:
        chat(router)
        private_redis.stop()
        for _ in range(5):  # the shared rpm window is unreachable: the local one decides
            chat(router)
        assert not shared.link.up and shared.status()["redis"] == "down"
        private_redis.start()
        deadline = time.monotonic() + 5
        while not shared.link.up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shared.link.up
        chat(router)
    finally:
        router.close()


@pytest.mark.parametrize(
    ("general", "needle"),
    [
        ({"redis_url": "http://cache:6379"}, "general_settings.redis_url: expected redis://"),
        (
            {"redis_url": "redis://c:6379/0", "on_redis_unavailable": "ignore"},
            "on_redis_unavailable: expected 'refuse'",
        ),
        ({"redis_url": "redis://c:6379/0", "redis_sync_interval": 0}, "redis_sync_interval: expected seconds"),
        ({"redis_url": "redis://c:6379/0", "redis_prefix": "a b"}, "redis_prefix: expected a non-empty word"),
    ],
)
def test_bad_shared_state_settings_name_the_key(general: dict[str, Any], needle: str) -> None:
    from router.proxy.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=needle):
        parse_config(
            {"model_list": [{"model_name": "m", "params": {"model": "openai/m"}}], "general_settings": general},
            "p.yaml",
        )
