"""The Router against local upstreams with injected faults: retries, waits, fallbacks, cooldowns, strategies."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest

from router import Budget, Catalog, Router, acompletion, completion, errors
from router.types import ChatCompletion
from tests.upstreams import HFRouterUpstream, OpenAICompatUpstream, Reply, completion_json

USER = [{"role": "user", "content": "route me"}]
CHAT = "/v1/chat/completions"


def dep(group: str, server: OpenAICompatUpstream, name: str = "m", **params: Any) -> dict[str, Any]:
    return {
        "model_name": group,
        "params": {"model": f"openai/{name}", "api_base": server.url + "/v1", "api_key": "sk-router-1234", **params},
    }


def a_first(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> list[dict[str, Any]]:
    """One group "chat" of a and b, where a is all but always picked first."""
    return [dep("chat", a, weight=1000), dep("chat", b, weight=0.001)]


async def ok_or_limited(router: Router) -> str:
    try:
        await router.acompletion(model="chat", messages=USER)
    except errors.RateLimitError:
        return "limited"
    return "ok"


def calls(server: OpenAICompatUpstream) -> int:
    return sum(1 for q in server.requests if q.path == CHAT)


def chat(router: Router, **kw: Any) -> ChatCompletion:
    result = router.completion(model=kw.pop("model", "chat"), messages=kw.pop("messages", USER), **kw)
    assert isinstance(result, ChatCompletion)
    return result


# ---------------------------------------------------------------- retries and waits


def test_retry_after_is_honoured_and_measured(a: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "1"}), CHAT)
    router = Router([dep("chat", a)], num_retries=2)
    started = time.monotonic()
    r = chat(router)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5
    assert [(x.status_code, x.error) for x in r.meta.attempts] == [(429, "RateLimitError"), (200, None)]
    assert r.meta.attempts[1].waited_ms >= 950


def test_hf_estimated_time_is_honoured(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(status=503, json={"error": "Model X is currently loading", "estimated_time": 0.6}), CHAT)
    router = Router([{"model_name": "chat", "params": {"model": "huggingface/Qwen/Qwen3-8B"}}], num_retries=1)
    started = time.monotonic()
    r = chat(router)
    assert time.monotonic() - started >= 0.6 and r.meta.attempts[0].error == "ServiceUnavailableError"


def test_a_deployment_that_said_wait_is_not_asked_again_before_then(
    a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    a.enqueue(Reply(status=429, json={"error": {"message": "busy"}}, headers={"Retry-After": "3"}), CHAT)
    router = Router(a_first(a, b), num_retries=2, seed=1)
    started = time.monotonic()
    first = chat(router)
    assert [x.deployment for x in first.meta.attempts] == ["chat[0]:openai/m", "chat[1]:openai/m"]
    for _ in range(5):
        chat(router)  # a is still inside its Retry-After: b takes these, at once
    assert time.monotonic() - started < 2.0
    assert (calls(a), calls(b)) == (1, 6)


def test_no_retry_on_400(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=400, json={"error": {"message": "bad temperature"}}), CHAT)
    router = Router(a_first(a, b), num_retries=3, seed=1)
    with pytest.raises(errors.BadRequestError) as info:
        chat(router)
    assert (calls(a), calls(b)) == (1, 0)
    assert [x.status_code for x in info.value.attempts] == [400]


def test_404_and_auth_errors_move_on_but_are_never_retried_on_the_same(
    a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    a.enqueue(Reply(status=401, json={"error": {"message": "Incorrect API key provided"}}), CHAT)
    router = Router(a_first(a, b), num_retries=3, seed=1)
    r = chat(router)
    assert [x.error for x in r.meta.attempts] == ["AuthenticationError", None] and calls(a) == 1
    a.enqueue(Reply(status=404, json={"error": {"message": "The model `m` does not exist"}}), CHAT)
    r = chat(router)
    assert [x.error for x in r.meta.attempts] == ["NotFoundError", None]


def test_retries_are_bounded_and_the_last_error_raised(a: OpenAICompatUpstream) -> None:
    for _ in range(5):
        a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
    router = Router([dep("chat", a)], num_retries=2, backoff_base=0.01)
    with pytest.raises(errors.InternalServerError) as info:
        chat(router)
    assert calls(a) == 3 and len(info.value.attempts) == 3


def test_total_timeout_caps_the_wait(a: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=429, json={"error": {"message": "later"}}, headers={"Retry-After": "30"}), CHAT)
    router = Router([dep("chat", a)], num_retries=3, timeout=2)
    started = time.monotonic()
    with pytest.raises(errors.RateLimitError):
        chat(router)
    assert time.monotonic() - started < 1.0  # gave up at once: waiting 30 s would pass the 2 s budget


# ---------------------------------------------------------------- fallbacks


def test_fallbacks_in_order(a: OpenAICompatUpstream, b: OpenAICompatUpstream, c: OpenAICompatUpstream) -> None:
    for server in (a, b):
        for _ in range(3):
            server.enqueue(Reply(status=503, json={"error": {"message": "down"}}), CHAT)
    router = Router(
        [dep("chat", a), dep("first", b), dep("second", c)], num_retries=0, fallbacks=[{"chat": ["first", "second"]}]
    )
    r = chat(router)
    assert [x.deployment for x in r.meta.attempts] == ["chat[0]:openai/m", "first[0]:openai/m", "second[0]:openai/m"]
    assert (calls(a), calls(b), calls(c)) == (1, 1, 1)


def test_context_window_fallback_chosen_before_the_call(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    long_prompt = [{"role": "user", "content": "word " * 300}]
    router = Router(
        [dep("chat", a, context_length=100), dep("long", b, context_length=100_000)],
        context_window_fallbacks=[{"chat": ["long"]}],
    )
    r = chat(router, messages=long_prompt)
    assert calls(a) == 0 and calls(b) == 1 and r.meta.attempts[0].deployment == "long[0]:openai/m"
    short = chat(router)
    assert short.meta.attempts[0].deployment == "chat[0]:openai/m"
    no_fallback = Router([dep("chat", a, context_length=100)])
    with pytest.raises(errors.ContextWindowExceededError, match="exceeds every context window"):
        chat(no_fallback, messages=long_prompt)
    assert calls(a) == 1


def test_context_window_error_after_the_call_falls_back(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.enqueue(
        Reply(
            status=400,
            json={
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                }
            },
        ),
        CHAT,
    )
    router = Router([dep("chat", a), dep("long", b)], context_window_fallbacks=[{"chat": ["long"]}])
    r = chat(router)
    assert [x.error for x in r.meta.attempts] == ["ContextWindowExceededError", None]


def test_content_policy_fallback(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.enqueue(
        Reply(
            status=400,
            json={"error": {"message": "flagged by our content management policy", "code": "content_policy_violation"}},
        ),
        CHAT,
    )
    router = Router([dep("chat", a), dep("lenient", b)], content_policy_fallbacks=[{"chat": ["lenient"]}])
    assert [x.error for x in chat(router).meta.attempts] == ["ContentPolicyViolationError", None]
    a.enqueue(
        Reply(
            status=400,
            json={"error": {"message": "flagged by our content management policy", "code": "content_policy_violation"}},
        ),
        CHAT,
    )
    with pytest.raises(errors.ContentPolicyViolationError):
        chat(Router([dep("chat", a)]))


# ---------------------------------------------------------------- cooldowns


def test_cooldown_entry_probe_and_recovery(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    # A long backoff: the retry goes to b at once however slow the machine (a later retry could go back to a).
    router = Router(a_first(a, b), num_retries=1, allowed_fails=2, cooldown_seconds=0.6, backoff_base=30, seed=3)
    for _ in range(2):
        a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
        chat(router)  # a fails, b answers
    for _ in range(3):
        assert chat(router).meta.attempts[0].deployment == "chat[1]:openai/m"  # a is cooling down
    assert calls(a) == 2
    time.sleep(0.7)
    probe = chat(router)  # after the cooldown: one probe request goes to a, and a is healthy again
    assert probe.meta.attempts[0].deployment == "chat[0]:openai/m"
    assert chat(router).meta.attempts[0].deployment == "chat[0]:openai/m"


def test_failed_probe_goes_straight_back_to_cooldown(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    router = Router(a_first(a, b), num_retries=1, allowed_fails=1, cooldown_seconds=0.4, backoff_base=0.001, seed=3)
    a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
    chat(router)
    time.sleep(0.5)
    a.enqueue(Reply(status=500, json={"error": {"message": "still broken"}}), CHAT)
    probe = chat(router)
    assert [x.deployment for x in probe.meta.attempts] == ["chat[0]:openai/m", "chat[1]:openai/m"]
    assert chat(router).meta.attempts[0].deployment == "chat[1]:openai/m"


def test_cooldown_never_empties_the_group(a: OpenAICompatUpstream) -> None:
    router = Router([dep("chat", a)], num_retries=0, allowed_fails=1, cooldown_seconds=60)
    a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
    with pytest.raises(errors.InternalServerError):
        chat(router)
    assert chat(router).meta.attempts[0].deployment == "chat[0]:openai/m"  # the only way to answer: tried
    a.enqueue(Reply(status=500, json={"error": {"message": "boom again"}}), CHAT)
    a.enqueue(Reply(status=500, json={"error": {"message": "boom again"}}), CHAT)
    with pytest.raises(errors.InternalServerError):
        chat(router)
    with pytest.raises(errors.InternalServerError, match="cooling down and is the only way left"):
        chat(router)


# ---------------------------------------------------------------- strategies


def test_weighted_distribution(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    router = Router([dep("chat", a, weight=3), dep("chat", b, weight=1)], strategy="weighted", seed=42)
    for _ in range(400):
        chat(router)
    share = calls(a) / 400
    assert 0.70 <= share <= 0.80  # expected 0.75; the band is > 4 standard deviations wide (sd 0.022)


def test_least_in_flight_balances_concurrent_calls(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    for server in (a, b):
        for _ in range(20):
            server.enqueue(Reply(json=_answer(), delay=0.3), CHAT)
    router = Router([dep("chat", a), dep("chat", b)], strategy="least-in-flight", seed=7)

    async def main() -> None:
        await asyncio.gather(*[router.acompletion(model="chat", messages=USER) for _ in range(20)])

    asyncio.run(main())
    assert (calls(a), calls(b)) == (10, 10)


def test_latency_strategy_prefers_the_fast_deployment(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    for _ in range(40):
        a.enqueue(Reply(json=_answer(), delay=0.05), CHAT)
    router = Router([dep("chat", a), dep("chat", b)], strategy="latency-based-routing", seed=1)
    for _ in range(20):
        chat(router)
    assert calls(b) >= 18  # each is tried once, then the faster one takes the traffic


def test_cheapest_strategy_uses_catalog_prices(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.set_price("openai/pricey", input_per_million=5, output_per_million=5)
    catalog.set_price("openai/thrifty", input_per_million=0.1, output_per_million=0.2)
    router = Router([dep("chat", a, "pricey"), dep("chat", b, "thrifty")], strategy="cheapest", catalog=catalog)
    for _ in range(5):
        chat(router, max_tokens=20)
    assert (calls(a), calls(b)) == (0, 5)


def test_rpm_limit_holds_under_64_concurrent_callers(a: OpenAICompatUpstream) -> None:
    router = Router([dep("chat", a, rpm=10)], strategy="usage", on_limit="raise")

    async def main() -> list[str]:
        return await asyncio.gather(*[ok_or_limited(router) for _ in range(64)])

    outcomes = Counter(asyncio.run(main()))
    assert outcomes == {"ok": 10, "limited": 54} and calls(a) == 10


def test_usage_strategy_picks_the_most_headroom_and_waits_when_asked(
    a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    router = Router([dep("chat", a, rpm=2), dep("chat", b, rpm=4)], strategy="usage", on_limit="wait", timeout=1.5)
    for _ in range(6):
        chat(router)
    assert (calls(a), calls(b)) == (2, 4)
    with pytest.raises(errors.RateLimitError):  # both full for a minute: waiting would pass the timeout
        chat(router)


# ---------------------------------------------------------------- HF policies, streams, budgets, hooks


def test_cheapest_hf_policy_fails_over_to_the_next_provider(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(status=503, json={"error": "overloaded"}), CHAT)
    router = Router([{"model_name": "r1", "params": {"model": "huggingface/deepseek-ai/DeepSeek-R1:cheapest"}}])
    r = chat(router, model="r1")
    sent = [q.json["model"] for q in hf.requests if q.path == CHAT]
    assert sent == ["deepseek-ai/DeepSeek-R1:novita", "deepseek-ai/DeepSeek-R1:together"]
    assert r.meta.provider == "together" and r.usage is not None
    assert r.meta.cost_pico == r.usage.prompt_tokens * 3_000_000 + r.usage.completion_tokens * 7_000_000
    fastest = chat(
        Router([{"model_name": "f", "params": {"model": "huggingface/deepseek-ai/DeepSeek-R1:fastest"}}]), model="f"
    )
    assert fastest.meta.provider == "together"  # 45.4 tok/s beats novita's 24.7


def test_hf_policy_skips_providers_the_catalog_says_lack_a_feature(hf: HFRouterUpstream) -> None:
    llama = "huggingface/meta-llama/Llama-3.1-8B-Instruct:cheapest"
    router = Router([{"model_name": "llama", "params": {"model": llama}}])
    plain = chat(router, model="llama")
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    structured = chat(router, model="llama", response_format=schema)
    # novita is cheapest but does not support structured output: nebius, the next cheapest, gets that call.
    assert (plain.meta.provider, structured.meta.provider) == ("novita", "nebius")
    router = Router(
        [
            {"model_name": "novita-only", "params": {"model": "huggingface/novita/meta-llama/Llama-3.1-8B-Instruct"}},
            {"model_name": "qwen", "params": {"model": "huggingface/Qwen/Qwen3-8B:cheapest"}},
        ],
        fallbacks=[{"novita-only": ["qwen"]}],
    )
    r = chat(router, model="novita-only", response_format=schema)
    assert r.meta.provider == "nscale" and [q.json["model"] for q in hf.requests if q.path == CHAT][-1].endswith(
        ":nscale"
    )
    alone = Router(
        [{"model_name": "novita-only", "params": {"model": "huggingface/novita/meta-llama/Llama-3.1-8B-Instruct"}}]
    )
    with pytest.raises(errors.BadRequestError, match=r"structured_output.*novita-only"):
        chat(alone, model="novita-only", response_format=schema)
    assert not [
        q
        for q in hf.requests
        if q.path == CHAT and q.json["model"].endswith(":novita") and q.json.get("response_format")
    ]  # never sent to a provider that cannot do it


def test_hf_policy_sends_a_long_prompt_only_to_providers_with_room(hf: HFRouterUpstream) -> None:
    llama = "huggingface/meta-llama/Llama-3.1-8B-Instruct:cheapest"
    router = Router([{"model_name": "llama", "params": {"model": llama}}])
    long_prompt = [{"role": "user", "content": "lorem " * 20_000}]  # > novita's 16,384, < nebius' 131,072
    r = router.completion(model="llama", messages=long_prompt, max_tokens=10)
    assert r.meta.provider == "nebius"  # the cheapest provider whose window has room
    assert [q.json["model"] for q in hf.requests if q.path == CHAT] == ["meta-llama/Llama-3.1-8B-Instruct:nebius"]


def test_per_call_fallbacks_follow_the_groups_own_chain(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=500, json={"error": {"message": "down"}}), CHAT)
    router = Router([dep("first", a), dep("second", b)], num_retries=0)
    r = chat(router, model="first", fallbacks=["second"])
    assert [x.deployment for x in r.meta.attempts] == ["first[0]:openai/m", "second[0]:openai/m"]
    with pytest.raises(errors.InvalidRequestArgumentError, match="'nope' is not a model_name"):
        chat(router, model="first", fallbacks=["nope"])
    a.enqueue(Reply(status=500, json={"error": {"message": "down"}}), CHAT)
    with pytest.raises(errors.InternalServerError):  # without per-call fallbacks the group has none
        chat(router, model="first")


def _stream_breaking_on_a(
    a: OpenAICompatUpstream, b: OpenAICompatUpstream, delta: dict[str, Any], message: str, status: int
) -> Any:
    """A stream routed to a (b a far second) whose upstream sends a chunk with ``delta``, then an error event."""
    chunk = {"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta}]}
    error = {"error": {"message": message, "http_status_code": status}}
    frames = [json.dumps(chunk, separators=(",", ":")), json.dumps(error)]
    a.enqueue(Reply(sse=[f"data: {frame}\n\n".encode() for frame in frames]), CHAT)
    router = Router(a_first(a, b), seed=1)
    return router.completion(model="chat", messages=USER, stream=True)


def test_stream_fails_over_before_the_first_token(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    stream = _stream_breaking_on_a(a, b, {"role": "assistant"}, "overloaded", 503)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "Echo: route me"
    assert [x.error for x in stream.meta.attempts] == ["ServiceUnavailableError", None]


def test_stream_error_after_the_first_token_surfaces(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    stream = _stream_breaking_on_a(a, b, {"content": "par"}, "died", 500)
    got = []
    with pytest.raises(errors.InternalServerError):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["par"] and calls(b) == 0


def _falling_back(a: OpenAICompatUpstream, b: OpenAICompatUpstream, **kw: Any) -> Router:
    """Group "chat" on a falls back to group "backup" on b, with no retries."""
    return Router([dep("chat", a), dep("backup", b)], fallbacks=[{"chat": ["backup"]}], num_retries=0, **kw)


def test_budget_across_fallbacks_one_reservation_per_attempt(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.set_price("openai/m", input_per_million=1, output_per_million=1)
    a.enqueue(Reply(status=503, json={"error": {"message": "down"}}), CHAT)
    budget = Budget(1.0)
    router = _falling_back(a, b, catalog=catalog, budget=budget)
    r = chat(router, max_tokens=50)
    assert budget.reserved_usd == 0 and budget.spent_usd == pytest.approx(r.meta.cost_usd)


def test_hooks_receive_every_attempt(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    seen: list[tuple[str, str | None]] = []
    async_seen: list[str] = []

    async def on_failure(record: Any, err: BaseException | None) -> None:
        async_seen.append(type(err).__name__)

    a.enqueue(Reply(status=503, json={"error": {"message": "down"}}), CHAT)

    def on_success(rec: Any, err: BaseException | None) -> None:
        seen.append((rec.deployment, rec.error))

    router = _falling_back(a, b, on_success=on_success, on_failure=on_failure)
    chat(router)
    assert seen == [("backup[0]:openai/m", None)] and async_seen == ["ServiceUnavailableError"]


def test_completion_with_fallbacks_and_num_retries(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    for _ in range(2):
        a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
    r = completion(
        model="openai/m",
        api_base=a.url + "/v1",
        api_key="sk-1234567",
        messages=USER,
        num_retries=1,
        fallbacks=[{"model": "openai/m2", "api_base": b.url + "/v1", "api_key": "sk-7654321"}],
    )
    assert isinstance(r, ChatCompletion)
    assert [(x.deployment, x.error) for x in r.meta.attempts][-1] == ("openai/m2[0]:openai/m2", None)
    assert calls(a) == 2 and b.requests[-1].json["model"] == "m2"

    async def main() -> Any:
        return await acompletion(
            model="openai/m", api_base=a.url + "/v1", api_key="sk-1234567", messages=USER, num_retries=0
        )

    assert isinstance(asyncio.run(main()), ChatCompletion)


def test_embeddings_through_the_router(hf: HFRouterUpstream) -> None:
    router = Router([{"model_name": "emb", "params": {"model": "huggingface/intfloat/multilingual-e5-large"}}])
    r = router.embedding(model="emb", input=["a", "b"])
    assert len(r.data) == 2 and r.meta.attempts[0].deployment == "emb[0]:huggingface/intfloat/multilingual-e5-large"
    r2 = asyncio.run(router.aembedding(model="emb", input="c"))
    assert len(r2.data) == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model_list": []}, "non-empty list"),
        ({"model_list": [{"model_name": "x", "params": {"model": "openai/m", "wieght": 2}}]}, r"params.wieght"),
        ({"model_list": [{"model_name": "x", "litellm_params": {"model": "nope/m"}}]}, "unknown provider prefix"),
        (
            {"model_list": [{"model_name": "x", "params": {"model": "openai/m"}}], "fallbacks": [{"x": ["y"]}]},
            "'y' is not a model_name",
        ),
        (
            {"model_list": [{"model_name": "x", "params": {"model": "openai/m"}}], "strategy": "fastest"},
            "unknown routing strategy",
        ),
        ({"model_list": [{"model_name": "x", "params": {"model": "openai/m", "rpm": 0}}]}, "positive int"),
    ],
)
def test_bad_router_config(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match=needle):
        Router(**kwargs)


def test_unknown_group_is_a_clear_error(a: OpenAICompatUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match="not a model_name of this router; known: chat"):
        Router([dep("chat", a)]).completion(model="gpt-4", messages=USER)


def _answer() -> dict[str, Any]:
    return completion_json("ok", (3, 1), cid="chatcmpl-r")


def test_async_stream_through_the_router_fails_over(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=503, json={"error": {"message": "down"}}), CHAT)
    router = Router(a_first(a, b), seed=1)

    async def main() -> tuple[str, list[str | None]]:
        stream = await router.acompletion(
            model="chat", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        assert stream.usage is not None and stream.meta.time_to_first_token_ms is not None
        return text, [x.error for x in stream.meta.attempts]

    text, errors_seen = asyncio.run(main())
    assert text == "Echo: route me" and errors_seen == ["ServiceUnavailableError", None]


# ---------------------------------------------------------------- review findings, pinned down


def test_cheapest_compares_catalog_and_configured_prices_in_one_unit(deepinfra: Any, a: OpenAICompatUpstream) -> None:
    catalog = Catalog(cache_dir=False)
    catalog.set_price("openai/m", input_per_million="0.01", output_per_million="0.01")
    router = Router(
        [{"model_name": "chat", "params": {"model": "deepinfra/openai/gpt-oss-120b"}}, dep("chat", a)],
        strategy="cheapest",
        catalog=catalog,
    )
    chat(router, max_tokens=20)
    assert calls(a) == 1  # $0.01/M beats the catalog's $0.05/$0.45
    catalog.set_price("openai/m", input_per_million=50, output_per_million=50)
    chat(router, max_tokens=20)
    assert calls(a) == 1 and sum(1 for q in deepinfra.requests if q.path.endswith("/chat/completions")) == 1


def test_router_timeout_bounds_a_slow_call(a: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(json=_answer(), delay=3.0), CHAT)
    router = Router([dep("chat", a)], timeout=1.0, num_retries=0)
    started = time.monotonic()
    with pytest.raises(errors.APITimeoutError):
        chat(router)
    assert time.monotonic() - started < 2.0


def test_moving_on_is_not_a_retry(a: OpenAICompatUpstream, b: OpenAICompatUpstream, hf: HFRouterUpstream) -> None:
    a.enqueue(Reply(status=401, json={"error": {"message": "Incorrect API key provided"}}), CHAT)
    router = Router(a_first(a, b), num_retries=0, seed=1)
    assert [x.error for x in chat(router).meta.attempts] == ["AuthenticationError", None]
    hf.enqueue(Reply(status=503, json={"error": "overloaded"}), CHAT)
    r1 = Router(
        [{"model_name": "r1", "params": {"model": "huggingface/deepseek-ai/DeepSeek-R1:cheapest"}}], num_retries=0
    )
    assert chat(r1, model="r1").meta.provider == "together"


def test_a_providers_retry_after_is_remembered_under_cheapest(hf: HFRouterUpstream) -> None:
    hf.enqueue(Reply(status=429, json={"error": "slow down"}, headers={"Retry-After": "30"}), CHAT)
    r1 = Router([{"model_name": "r1", "params": {"model": "huggingface/deepseek-ai/DeepSeek-R1:cheapest"}}])
    assert chat(r1, model="r1").meta.provider == "together"
    second = chat(r1, model="r1")
    assert [x.provider for x in second.meta.attempts] == ["huggingface:together"]  # novita still waiting


def test_our_own_backoff_does_not_delay_other_requests(a: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=500, json={"error": {"message": "boom"}}), CHAT)
    router = Router([dep("chat", a)], num_retries=0, backoff_base=2.0, allowed_fails=5)
    with pytest.raises(errors.InternalServerError):
        chat(router)
    started = time.monotonic()
    chat(router)  # no Retry-After was sent: nothing makes this request wait
    assert time.monotonic() - started < 0.5


def test_a_raising_hook_changes_nothing(a: OpenAICompatUpstream) -> None:
    def broken(record: Any, err: BaseException | None) -> None:
        raise RuntimeError("hook bug")

    router = Router([dep("chat", a)], on_success=broken)
    assert chat(router).choices[0].message.content
    assert router.groups["chat"][0].state.in_flight == 0


def test_a_stream_stays_in_flight_until_it_ends(a: OpenAICompatUpstream) -> None:
    router = Router([dep("chat", a)])
    stream = router.completion(model="chat", messages=USER, stream=True)
    assert router.groups["chat"][0].state.in_flight == 1
    list(stream)
    assert router.groups["chat"][0].state.in_flight == 0


def test_rpm_limit_holds_across_threads(a: OpenAICompatUpstream) -> None:
    import concurrent.futures

    router = Router([dep("chat", a, rpm=10)], strategy="usage", on_limit="raise")

    def one() -> str:
        try:
            chat(router)
        except errors.RateLimitError:
            return "limited"
        return "ok"

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(lambda _: one(), range(64)))
    assert outcomes == {"ok": 10, "limited": 54} and calls(a) == 10


def test_tpm_counts_the_prompt_without_max_tokens(a: OpenAICompatUpstream) -> None:
    router = Router([dep("chat", a, tpm=500)], on_limit="raise")
    long_prompt = [{"role": "user", "content": "word " * 200}]  # ~200 tokens each
    ok = 0
    for _ in range(5):
        try:
            chat(router, messages=long_prompt)
            ok += 1
        except errors.RateLimitError:
            pass
    assert ok == 2 and calls(a) == 2


def test_a_callers_extra_body_adds_to_the_deployments_and_never_replaces_it(a: OpenAICompatUpstream) -> None:
    params = {"model": "openai/m", "api_base": a.url + "/v1", "api_key": "sk-a-123456", "extra_body": {"top_k": 5}}
    router = Router(model_list=[{"model_name": "g", "params": params}], num_retries=0)
    router.completion("g", [{"role": "user", "content": "hi"}], extra_body={"repetition_penalty": 1.1})
    sent = a.requests[-1].json
    assert sent["top_k"] == 5 and sent["repetition_penalty"] == 1.1  # the operator's field survived
    with pytest.raises(errors.InvalidRequestArgumentError, match="top_k"):
        router.completion("g", [{"role": "user", "content": "hi"}], extra_body={"top_k": 50})
    router.close()
