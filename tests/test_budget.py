"""Budgets are reservations: the limit is never crossed, refusals never reach the upstream, nothing leaks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from router import acompletion, completion, errors
from router.budget import Budget
from router.ledger import InMemoryLedger, SqliteLedger
from router.pricing import Catalog
from router.streaming import AsyncStream, Stream
from router.types import ChatCompletion
from tests.ledgers import race_for_the_cap
from tests.upstreams import HFRouterUpstream, OpenAICompatUpstream, Reply, completion_json

USER = [{"role": "user", "content": "spend some money"}]
ANSWER = completion_json("ok", (10, 90), cid="chatcmpl-b")


def call_kw(
    server: OpenAICompatUpstream, catalog: Catalog, *, api_key: str = "sk-1234567", messages: Any = USER, **extra: Any
) -> dict[str, Any]:
    """The arguments of a call of openai/m on the server, priced by the catalog."""
    return {
        "model": "openai/m",
        "api_base": server.url + "/v1",
        "api_key": api_key,
        "messages": messages,
        "catalog": catalog,
        **extra,
    }


def _chat_requests(server: OpenAICompatUpstream | HFRouterUpstream) -> int:
    return sum(1 for q in server.requests if q.path.endswith("/chat/completions"))


def test_settles_to_the_real_cost(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    budget = Budget(1.0)
    r = completion(**call_kw(oai, priced, max_tokens=500, budget=budget))  # type: ignore[arg-type]
    assert isinstance(r, ChatCompletion) and r.meta.cost_pico
    assert budget.spent_usd == pytest.approx(r.meta.cost_usd) and budget.reserved_usd == 0
    assert budget.remaining_usd == pytest.approx(1.0 - r.meta.cost_usd)  # type: ignore[operator]


def test_refused_before_the_upstream_with_the_numbers(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    budget = Budget("0.0001")  # $0.0001 = 100 tokens at $1/M; max_tokens 500 cannot fit
    with pytest.raises(errors.BudgetExceededError) as info:
        completion(**call_kw(oai, priced, max_tokens=500, budget=budget))  # type: ignore[arg-type]
    assert _chat_requests(oai) == 0
    err = info.value
    assert err.needed_usd > err.limit_usd == pytest.approx(0.0001) and "lower max_tokens" in err.message


def test_64_concurrent_calls_never_cross_the_limit(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    for _ in range(64):
        oai.enqueue(Reply(json=ANSWER, delay=0.2), path="/v1/chat/completions")
    budget = Budget(0)  # sized below from one call's worst case
    worst = budget.worst_case(
        priced.registry.resolve("openai/m", oai.url + "/v1"),
        {"max_tokens": 1000},
        USER,
        priced.candidates(priced.registry.resolve("openai/m", oai.url + "/v1")),
    )
    budget = Budget(worst.amount_pico * 20.5 / 10**12)

    async def one() -> str:
        try:
            await acompletion(**call_kw(oai, priced, max_tokens=1000, budget=budget))  # type: ignore[arg-type]
        except errors.BudgetExceededError:
            return "refused"
        return "ok"

    async def main() -> list[str]:
        return await asyncio.gather(*[one() for _ in range(64)])

    outcomes = asyncio.run(main())
    ok = outcomes.count("ok")
    assert ok >= 20 and outcomes.count("refused") == 64 - ok
    assert _chat_requests(oai) == ok  # every refused call raised before reaching the upstream
    assert budget.spent_usd <= budget.limit_usd and budget.reserved_usd == 0
    assert budget.spent_usd == pytest.approx(ok * 100 / 1_000_000)


def test_cancelled_calls_leak_no_reservation(oai: OpenAICompatUpstream, priced: Catalog, tmp_path: Path) -> None:
    for ledger in (InMemoryLedger(), SqliteLedger(tmp_path / "spend.db")):
        for _ in range(20):
            oai.enqueue(Reply(json=ANSWER, delay=1.0), path="/v1/chat/completions")
        budget = Budget(10.0, ledger)

        async def main(b: Budget = budget) -> None:
            tasks = [
                asyncio.create_task(acompletion(**call_kw(oai, priced, max_tokens=100, budget=b)))  # type: ignore[arg-type]
                for _ in range(20)
            ]
            await asyncio.sleep(0.3)
            assert b.reserved_usd > 0
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())
        assert budget.reserved_usd == 0 and budget.spent_usd == 0
        oai.reset()


def test_failed_call_releases_its_reservation(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    budget = Budget(1.0)
    oai.enqueue(Reply(status=500, json={"error": {"message": "boom"}}))
    with pytest.raises(errors.InternalServerError):
        completion(**call_kw(oai, priced, max_tokens=10, budget=budget))  # type: ignore[arg-type]
    assert budget.spent_usd == 0 and budget.reserved_usd == 0


def test_unpriced_calls_are_refused_unless_allowed(oai: OpenAICompatUpstream) -> None:
    bare = Catalog(cache_dir=False)
    with pytest.raises(errors.UnpricedCallError, match="allow_unpriced"):
        completion(**call_kw(oai, bare, max_tokens=10, budget=Budget(1.0)))  # type: ignore[arg-type]
    assert _chat_requests(oai) == 0
    lenient = Budget(1.0, allow_unpriced=True)
    r = completion(**call_kw(oai, bare, max_tokens=10, budget=lenient))  # type: ignore[arg-type]
    assert isinstance(r, ChatCompletion) and r.meta.cost_usd is None and r.meta.unpriced_reason
    assert lenient.spent_usd == 0 and lenient.reserved_usd == 0


def test_worst_case_uses_the_priciest_provider_the_router_may_pick(hf: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    budget = Budget(100)
    unpinned = catalog.registry.resolve("huggingface/deepseek-ai/DeepSeek-R1")
    pinned = catalog.registry.resolve("huggingface/novita/deepseek-ai/DeepSeek-R1")
    body = {"max_tokens": 1000}
    worst_any = budget.worst_case(unpinned, body, USER, catalog.candidates(unpinned))
    worst_novita = budget.worst_case(pinned, body, USER, catalog.candidates(pinned))
    p = worst_any.prompt_tokens
    assert worst_any.amount_pico == p * 3_000_000 + 1000 * 7_000_000  # together: $3 / $7 per M
    assert worst_novita.amount_pico == p * 700_000 + 1000 * 2_500_000  # novita: $0.7 / $2.5 per M


def test_without_max_tokens_the_models_limit_is_reserved(hf: HFRouterUpstream, oai: OpenAICompatUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    budget = Budget(100)
    target = catalog.registry.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")
    worst = budget.worst_case(target, {}, USER, catalog.candidates(target))
    assert worst.completion_tokens == 163840 - worst.prompt_tokens  # context length minus the prompt
    priced = Catalog(cache_dir=False)
    priced.set_price("openai/m", input_per_million=1, output_per_million=1)
    with pytest.raises(errors.InvalidRequestArgumentError, match="set max_tokens"):
        completion(**call_kw(oai, priced, budget=budget))  # type: ignore[arg-type]


def test_streams_settle_at_the_end_or_at_what_arrived(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    budget = Budget(1.0)
    stream = completion(**call_kw(oai, priced, max_tokens=500, budget=budget, stream=True))  # type: ignore[arg-type]
    assert isinstance(stream, Stream) and budget.reserved_usd > 0
    list(stream)
    assert budget.reserved_usd == 0 and budget.spent_usd == pytest.approx(stream.meta.cost_usd)
    cut = Budget(1.0)
    early = completion(**call_kw(oai, priced, max_tokens=500, budget=cut, stream=True))  # type: ignore[arg-type]
    assert isinstance(early, Stream)
    next(early)
    early.close()
    assert cut.reserved_usd == 0 and 0 < cut.spent_usd < 0.0005  # the prompt and one chunk, not the worst case

    async def main() -> None:
        b = Budget(1.0)
        s = await acompletion(**call_kw(oai, priced, max_tokens=500, budget=b, stream=True))  # type: ignore[arg-type]
        assert isinstance(s, AsyncStream)
        async with s:
            pass
        assert b.reserved_usd == 0 and b.spent_usd > 0

    asyncio.run(main())


def test_ledgers_settle_and_release_once(tmp_path: Path) -> None:
    for ledger in (InMemoryLedger(), SqliteLedger(tmp_path / "l.db")):
        rid = ledger.reserve("b", 100, 250)
        assert rid is not None and ledger.reserve("b", 200, 250) is None
        ledger.settle("b", rid, 40)
        ledger.settle("b", rid, 40)  # repeated: no double count
        assert ledger.totals("b") == (40, 0)
        rid2 = ledger.reserve("b", 210, 250)
        assert rid2 is not None
        ledger.release("b", rid2)
        ledger.release("b", rid2)
        assert ledger.totals("b") == (40, 0)


def test_sqlite_ledger_holds_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    SqliteLedger(db)  # create the schema once
    make = f"SqliteLedger({str(db)!r})"
    counts = race_for_the_cap("from router.ledger import SqliteLedger", make, tries=60, timeout=60)
    assert sum(counts) == 60  # exactly the limit, across three processes racing
    assert SqliteLedger(db).totals("shared") == (600, 0)


def test_bad_budget_arguments() -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="non-negative"):
        Budget(-1)
    with pytest.raises(errors.InvalidRequestArgumentError, match="non-negative"):
        Budget("ten dollars")


def test_tools_and_images_are_part_of_the_worst_case(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    budget = Budget(1.0)
    target = priced.registry.resolve("openai/m", oai.url + "/v1")
    tools = [
        {
            "type": "function",
            "function": {"name": f"tool_{i}", "description": "word " * 300, "parameters": {"type": "object"}},
        }
        for i in range(10)
    ]
    plain = budget.worst_case(target, {"max_tokens": 10}, USER, priced.candidates(target))
    with_tools = budget.worst_case(target, {"max_tokens": 10, "tools": tools}, USER, priced.candidates(target))
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]
    with_image = budget.worst_case(target, {"max_tokens": 10}, image, priced.candidates(target))
    assert with_tools.prompt_tokens > plain.prompt_tokens + 3000
    assert with_image.prompt_tokens > plain.prompt_tokens + 2000


def test_a_per_provider_override_prices_the_reservation_too(hf: HFRouterUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.set_price("huggingface/novita/deepseek-ai/DeepSeek-R1", input_per_million=1000, output_per_million=1000)
    budget = Budget(0.01)
    with pytest.raises(errors.BudgetExceededError):  # novita may serve an unpinned call: its price counts
        completion(
            model="huggingface/deepseek-ai/DeepSeek-R1", messages=USER, max_tokens=100, catalog=catalog, budget=budget
        )
    assert budget.spent_usd == 0


def test_early_cancellation_leaks_nothing_with_sqlite(
    oai: OpenAICompatUpstream, priced: Catalog, tmp_path: Path
) -> None:
    budget = Budget(10.0, SqliteLedger(tmp_path / "early.db"))

    async def main() -> None:
        tasks = [
            asyncio.create_task(acompletion(**call_kw(oai, priced, max_tokens=100, budget=budget)))  # type: ignore[arg-type]
            for _ in range(20)
        ]
        await asyncio.sleep(0.001)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # reservations that landed after the cancel are released when they land

    asyncio.run(main())
    assert budget.reserved_usd == 0


def test_a_stream_failing_before_content_releases_its_reservation(oai: OpenAICompatUpstream, priced: Catalog) -> None:
    oai.enqueue(Reply(sse=[b'data: {"error": {"message": "overloaded", "http_status_code": 503}}\n\n']))
    budget = Budget(1.0)
    stream = completion(**call_kw(oai, priced, max_tokens=50, budget=budget, stream=True))  # type: ignore[arg-type]
    with pytest.raises(errors.ServiceUnavailableError):
        list(stream)  # type: ignore[arg-type]
    assert budget.spent_usd == 0 and budget.reserved_usd == 0
