"""Budgets hold against what upstreams really bill: output caps they pick themselves, prompt counts far
above ours, streams the client leaves. Real HTTP to an upstream that bills like that (tests/upstreams/greedy.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router import acompletion, completion, errors
from router.budget import OVERSHOOTS, Budget
from router.calibration import PromptCounts
from router.ledger import InMemoryLedger, SqliteLedger
from router.pricing import Catalog
from router.pricing.prices import PICO_PER_USD
from tests.test_budget import call_kw
from tests.test_proxy import MASTER, ProxyServer, _admin
from tests.upstreams.greedy import GreedyUpstream

ONE_WORD = [{"role": "user", "content": "hi"}]


@pytest.fixture
def greedy() -> Iterator[GreedyUpstream]:
    with GreedyUpstream() as server:
        yield server


def _kw(server: GreedyUpstream, catalog: Catalog, **extra: Any) -> dict[str, Any]:
    return call_kw(server, catalog, api_key="sk-test-1234567", messages=ONE_WORD, **extra)


def _chats(server: GreedyUpstream) -> int:
    return sum(1 for q in server.requests if q.path.endswith("/chat/completions"))


def _billed_pico(server: GreedyUpstream) -> int:
    return sum(b["prompt_tokens"] + b["completion_tokens"] for b in server.billed) * PICO_PER_USD // 1_000_000


async def _spend_concurrently(kw: dict[str, Any], calls: int) -> tuple[int, int]:
    """(answered, refused) of ``calls`` concurrent calls."""

    async def one() -> bool:
        try:
            await acompletion(**kw)
        except errors.BudgetExceededError:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(calls)))
    return sum(results), calls - sum(results)


@pytest.fixture
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    if kind == "memory":
        yield InMemoryLedger()
    elif kind == "sqlite":
        sqlite = SqliteLedger(tmp_path / "spend.db")
        yield sqlite
        sqlite.close()
    else:
        from router.shared import RedisLedger, RedisLink
        from tests.services import REDIS_URL, drop_prefix, fresh_prefix, require_redis

        require_redis()
        prefix = fresh_prefix()
        yield RedisLedger(RedisLink(REDIS_URL, prefix=prefix))
        drop_prefix(prefix)


@pytest.mark.parametrize("ledger", ["memory", "sqlite", "redis"], indirect=True)
def test_the_largest_output_cap_is_reserved(greedy: GreedyUpstream, priced: Catalog, ledger: Any) -> None:
    """60 concurrent calls saying max_completion_tokens=1 but max_tokens=500 to an upstream that honours
    max_tokens (TGI does): the budget reserves 500 and holds (it used to settle 30x the limit)."""
    overshoots = OVERSHOOTS.count
    budget = Budget(0.01, ledger, name=f"cap-{os.urandom(4).hex()}")
    kw = _kw(greedy, priced, max_completion_tokens=1, max_tokens=500, budget=budget)
    answered, refused = asyncio.run(_spend_concurrently(kw, 60))
    assert answered >= 5 and refused > 0  # the upstream served what fitted, and the rest was refused
    assert _chats(greedy) == answered  # no refused call reached the upstream
    spent, reserved = ledger.totals(budget.name)
    assert reserved == 0 and spent == _billed_pico(greedy)  # settled exactly what the upstream billed
    assert spent <= budget.limit_pico
    assert OVERSHOOTS.count == overshoots  # no settlement went above its reservation


@pytest.mark.parametrize("ledger", ["memory", "sqlite", "redis"], indirect=True)
def test_inflated_prompt_counts_are_learned(greedy: GreedyUpstream, priced: Catalog, ledger: Any) -> None:
    """An upstream billing 100 prompt tokens for a one-word prompt (templates, injected system prompts): the
    first call is bounded generously and alone; after it, every reservation covers the real count."""
    greedy.prompt_overhead = 100
    overshoots = OVERSHOOTS.count
    budget = Budget(0.0005, ledger, name=f"inflated-{os.urandom(4).hex()}")  # 500 tokens at $1/M
    kw = _kw(greedy, priced, max_tokens=5, budget=budget)
    answered, refused = asyncio.run(_spend_concurrently(kw, 30))
    assert answered >= 2 and refused > 0
    assert _chats(greedy) == answered
    spent, reserved = ledger.totals(budget.name)
    assert reserved == 0 and spent == _billed_pico(greedy) <= budget.limit_pico  # was 4.7x the limit
    assert OVERSHOOTS.count == overshoots
    # The learned bound is tight: a call now reserves about what the upstream bills, not the first-call guess.
    target = priced.registry.resolve("openai/m", greedy.url + "/v1")
    assert priced.prompt_counts.overhead(priced.prompt_counts.key_of(target, "openai")) is not None
    body = {"max_tokens": 5, "messages": ONE_WORD}
    worst = budget.worst_case(target, body, ONE_WORD, priced.candidates(target), priced.prompt_counts)
    billed_prompt = greedy.billed[0]["prompt_tokens"]
    assert billed_prompt <= worst.prompt_tokens <= billed_prompt + 16


def test_learned_overheads_survive_a_restart(greedy: GreedyUpstream, tmp_path: Path) -> None:
    greedy.prompt_overhead = 70
    catalog = Catalog(cache_dir=tmp_path)
    catalog.set_price("openai/m", input_per_million=1, output_per_million=1)
    completion(**_kw(greedy, catalog, max_tokens=3, budget=Budget(1.0)))
    target = catalog.registry.resolve("openai/m", greedy.url + "/v1")
    key = PromptCounts.key_of(target, "openai")
    learned = catalog.prompt_counts.overhead(key)
    assert learned is not None and learned >= 60
    again = Catalog(cache_dir=tmp_path)  # a new process would build this
    assert again.prompt_counts.overhead(key) == learned


def test_first_calls_to_an_unlearned_deployment_go_one_at_a_time(greedy: GreedyUpstream, priced: Catalog) -> None:
    """Until the deployment reported usage, budgeted calls wait for the one in flight; after it they run
    together (20 concurrent calls to a slow upstream)."""
    greedy.prompt_overhead = 100
    greedy.answer_delay = 0.2
    kw = _kw(greedy, priced, max_tokens=5, budget=Budget(1.0))

    async def main() -> None:
        await asyncio.gather(*(acompletion(**kw) for _ in range(20)))

    asyncio.run(main())
    spans = sorted(greedy.spans)
    assert len(spans) == 20
    first_answered = spans[0][1]
    assert all(arrived >= first_answered for arrived, _ in spans[1:])  # nobody was sent beside the first call
    assert greedy.most_in_flight > 1  # and once it reported, the others were not held one by one


def test_streams_left_early_settle_what_the_upstream_counts(greedy: GreedyUpstream, priced: Catalog) -> None:
    """20 streams abandoned after two chunks: the upstream bills its own prompt count (100 for one word) plus
    what it sent; the budget settles at least that (it used to settle the local count, 10 tokens)."""
    greedy.prompt_overhead = 100
    greedy.stream_delay = 0.02
    overshoots = OVERSHOOTS.count
    budget = Budget(1.0)
    completion(**_kw(greedy, priced, max_tokens=3, budget=budget))  # the deployment reports its usage once
    before = budget.spent_usd

    async def main() -> None:
        async def one() -> None:
            stream = await acompletion(**_kw(greedy, priced, max_tokens=200, stream=True, budget=budget))
            seen = 0
            async for chunk in stream:
                seen += bool(chunk.choices and chunk.choices[0].delta.content)
                if seen == 2:
                    break
            await stream.aclose()

        await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(main())
    spent_tokens = (budget.spent_usd - before) * 1_000_000
    prompt_billed = greedy.billed[0]["prompt_tokens"]  # the upstream's count of this prompt
    assert spent_tokens >= 20 * (prompt_billed + 2)
    assert budget.reserved_usd == 0
    assert OVERSHOOTS.count == overshoots


def test_proxy_key_budget_holds_against_a_greedy_upstream(greedy: GreedyUpstream) -> None:
    """Through the proxy, as a client with a virtual key: the cap trick and inflated prompts at once,
    60 concurrent requests; the key's settled spend stays within its budget and /metrics shows no overshoot."""
    greedy.prompt_overhead = 100
    config = {
        "model_list": [
            {
                "model_name": "m",
                "params": {"model": "openai/m", "api_base": greedy.url + "/v1", "api_key": "sk-upstream-1234567"},
            }
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "pricing": [{"model": "openai/m", "input_per_million": 1, "output_per_million": 1}],
    }
    with ProxyServer(config) as proxy:
        key = _admin(proxy, "POST", "/admin/keys", json={"max_budget_usd": 0.01}).json()["key"]

        async def main() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as http:

                async def one() -> int:
                    r = await http.post(
                        f"{proxy.url}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "m", "messages": ONE_WORD, "max_completion_tokens": 1, "max_tokens": 500},
                    )
                    return r.status_code

                return await asyncio.gather(*(one() for _ in range(60)))

        overshoot_before = _overshoot_usd(proxy)
        statuses = asyncio.run(main())
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0
        assert _chats(greedy) == statuses.count(200)
        billed = _billed_pico(greedy)
        assert billed <= 0.01 * PICO_PER_USD  # what the upstream billed this key stayed within its budget
        assert _overshoot_usd(proxy) == overshoot_before  # exported, and nothing was settled above a reservation


def _overshoot_usd(proxy: ProxyServer) -> float:
    metrics = httpx.get(f"{proxy.url}/metrics", headers={"Authorization": f"Bearer {MASTER}"}).text
    line = next(x for x in metrics.splitlines() if x.startswith("polyroute_budget_overshoot_usd_total "))
    return float(line.split()[1])


def test_batch_budget_holds_against_inflated_prompt_counts(greedy: GreedyUpstream, tmp_path: Path) -> None:
    """A budgeted batch job whose upstream bills 100 prompt tokens per short row and honours max_tokens over
    max_completion_tokens: the job stops at its cap (exit 3), spends at most it, and no row settles above
    its reservation (it used to spend several times the cap)."""
    from router.batch import EXIT_BUDGET, parse_batch_config, run_batch

    greedy.prompt_overhead = 100
    src = tmp_path / "in.jsonl"
    with src.open("w") as f:
        for i in range(200):
            body = {"messages": [{"role": "user", "content": f"row {i}"}], "max_completion_tokens": 1, "max_tokens": 20}
            f.write(orjson.dumps({"custom_id": f"r{i}", "body": body}).decode() + "\n")
    config = parse_batch_config(
        {
            "candidates": [
                {
                    "name": "m",
                    "model": "openai/m",
                    "params": {"api_base": greedy.url + "/v1", "api_key": "sk-test-1234567"},
                }
            ],
            "pricing": [{"model": "openai/m", "input_per_million": 1, "output_per_million": 1}],
        }
    )
    overshoots = OVERSHOOTS.count
    budget = 0.002  # 2,000 tokens: ~16 rows as billed (100 + ~4 prompt + 20 answer each)
    result = run_batch(src, tmp_path / "out.jsonl", config, budget_usd=budget, concurrency=32)
    assert result.exit_code == EXIT_BUDGET
    assert 5 <= _chats(greedy) < 200
    assert _billed_pico(greedy) <= budget * PICO_PER_USD
    assert OVERSHOOTS.count == overshoots


def test_an_answer_cut_short_is_charged_in_doubt_before_the_retry(priced: Catalog) -> None:
    """The upstream answered 200 and the body was cut: it may bill the call, so the budget keeps that attempt's
    worst case (on the attempt, in doubt) while the router retries elsewhere; the request was not free."""
    from router import Router
    from tests.upstreams.faulty import FaultyUpstream

    with FaultyUpstream(fault_rate=1.0, faults={"cut": 1}) as cutting, FaultyUpstream(fault_rate=0.0) as clean:
        priced.set_price("openai/m", input_per_million=1, output_per_million=1)
        a = {"model": "openai/m", "api_base": cutting.url + "/v1", "api_key": "sk-a"}
        b = {"model": "openai/m", "api_base": clean.url + "/v1", "api_key": "sk-b"}
        router = Router(
            model_list=[{"model_name": "a", "params": a}, {"model_name": "b", "params": b}],
            num_retries=0,
            fallbacks=[{"a": ["b"]}],
            catalog=priced,
        )
        budget = Budget(1.0)
        result = router.completion("a", ONE_WORD, max_tokens=5, budget=budget)
        router.close()
    attempts = result.meta.attempts
    cut = [a for a in attempts if a.error is not None]
    assert [a.api_base for a in cut] == [cutting.url + "/v1"] and cut[0].charged_pico
    assert attempts[-1].error is None and attempts[-1].charged_pico is None
    spent = round(budget.spent_usd * PICO_PER_USD)
    assert spent == result.meta.cost_pico + cut[0].charged_pico and budget.reserved_usd == 0


def test_proxy_spend_records_carry_what_a_cut_answer_was_charged() -> None:
    """Through the proxy: the key's spend record of a request whose first answer was cut short (and charged in
    doubt) before the fallback served it costs what the key's budget was charged, both attempts."""
    from router.ledger import SqliteLedger
    from tests.upstreams.faulty import FaultyUpstream

    with FaultyUpstream(fault_rate=1.0, faults={"cut": 1}) as cutting, FaultyUpstream(fault_rate=0.0) as clean:
        a = {"model": "openai/m", "api_base": cutting.url + "/v1", "api_key": "sk-a1"}
        b = {"model": "openai/m", "api_base": clean.url + "/v1", "api_key": "sk-b1"}
        config = {
            "model_list": [{"model_name": "a", "params": a}, {"model_name": "b", "params": b}],
            "router_settings": {"num_retries": 0, "fallbacks": [{"a": ["b"]}]},
            "general_settings": {"master_key": MASTER},
            "pricing": [{"model": "openai/m", "input_per_million": 1, "output_per_million": 1}],
        }
        with ProxyServer(config) as proxy:
            made = _admin(proxy, "POST", "/admin/keys", json={"max_budget_usd": 1.0}).json()
            r = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {made['key']}"},
                json={"model": "a", "messages": ONE_WORD, "max_tokens": 5},
                timeout=30,
            )
            assert r.status_code == 200
            store = proxy.store
            deadline = time.monotonic() + 10
            while store.spend_count() < 1 and time.monotonic() < deadline:  # records are written every second
                time.sleep(0.05)
            (cost,) = store._exec("SELECT cost_pico FROM spend").fetchone()
            ledger = SqliteLedger(store.path)  # type: ignore[attr-defined]
            spent, reserved = ledger.totals(f"key:{made['id']}")
            ledger.close()
    assert reserved == 0 and cost == spent
    assert spent > float(r.headers["x-polyroute-cost-usd"]) * PICO_PER_USD  # the cut attempt was charged too
