"""Legacy text completions (``/v1/completions``): a task added through the task table, end to end.

The library (``text_completion``), the Router and the proxy (with the real OpenAI SDK) against local
OpenAI-compatible, DeepInfra and TGI servers; the HF router has no such route and is refused before
any request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from router import Budget, Catalog, Router, atext_completion, errors, text_completion
from tests.test_proxy import MASTER, ProxyServer, _config
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, OpenAICompatUpstream, Reply, TGIUpstream


def _completions(server: OpenAICompatUpstream | TGIUpstream | DeepInfraUpstream) -> list[dict]:
    return [q.json for q in server.requests if q.path.endswith("/completions") and "chat" not in q.path]


def _from(server: OpenAICompatUpstream, **kw: Any) -> Any:
    """``text_completion`` of ``openai/m`` on ``server``."""
    return text_completion(model="openai/m", api_base=server.url + "/v1", api_key="sk-a", **kw)


def test_a_text_completion_from_an_openai_compatible_server(a: OpenAICompatUpstream) -> None:
    r = text_completion(
        model="openai/m", api_base=a.url + "/v1", api_key="sk-a", prompt="Say this is a test", max_tokens=3
    )
    assert r.object == "text_completion" and [c.text for c in r.choices] == [" Say this is"]
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 3)
    assert r.meta.provider == "openai" and r.meta.usage_estimated is False
    (sent,) = _completions(a)
    assert sent == {"model": "m", "prompt": "Say this is a test", "max_tokens": 3}  # one prompt goes as a string


def test_several_prompts_keep_their_order_with_n_answers_each(a: OpenAICompatUpstream) -> None:
    r = asyncio.run(
        atext_completion(model="openai/m", api_base=a.url + "/v1", api_key="sk-a", prompt=["one", "two three"], n=2)
    )
    assert [(c.index, c.text) for c in r.choices] == [(0, " one"), (1, " one"), (2, " two three"), (3, " two three")]


def test_tgi_serves_completions_at_its_own_route(tgi: TGIUpstream) -> None:
    r = text_completion(model="huggingface/tgi", api_base=tgi.url, prompt="def fib(n):", max_tokens=5)
    assert r.choices[0].text == " def fib(n):" and r.meta.provider == "tgi"
    (sent,) = _completions(tgi)
    assert sent["model"] == "tgi"


def test_the_hf_router_has_no_text_completions(hf: HFRouterUpstream) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match=r"'huggingface' does not serve completions.*chat"):
        text_completion(model="huggingface/Qwen/Qwen3-8B", prompt="hello")
    assert hf.requests == []


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"prompt": ""}, r"prompt\[0\] is an empty string"),
        ({"prompt": [1, 2, 3]}, "token-id prompts"),
        ({"prompt": ["ok", ""]}, r"prompt\[1\] is an empty string"),
        ({"prompt": "x", "logprobs": 9}, "logprobs must be an integer from 0 to 5"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options is only for stream=True"),
        ({"prompt": "x", "stream": True, "stream_options": "usage"}, "stream_options must be a dict"),
        ({"prompt": "x", "extra_body": {"prompt": "y"}}, "prompt"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_arguments_are_clear_errors_before_any_request(a: OpenAICompatUpstream, kw: dict, needle: str) -> None:
    with pytest.raises(errors.InvalidRequestArgumentError, match=needle):
        text_completion(model="openai/m", api_base=a.url + "/v1", api_key="sk-a", **kw)
    assert _completions(a) == []


def test_under_a_budget_the_worst_case_is_reserved_and_the_cost_settled(
    a: OpenAICompatUpstream, priced: Catalog
) -> None:
    priced.set_price("openai/m", input_per_million=100, output_per_million=200)
    budget = Budget(1.0, name="legacy")
    r = _from(
        a,
        prompt="a b c d",
        max_tokens=2,
        catalog=priced,
        budget=budget,
    )
    assert r.meta.cost_pico == 4 * 100_000_000 + 2 * 200_000_000  # 4 prompt, 2 completion tokens
    assert budget.spent_usd == pytest.approx(r.meta.cost_usd) and budget.reserved_usd == 0
    with pytest.raises(errors.InvalidRequestArgumentError, match="set max_tokens"):
        text_completion(
            model="openai/m", api_base=a.url + "/v1", api_key="sk-a", prompt="x", catalog=priced, budget=budget
        )


def test_the_router_fails_over_between_deployments(a: OpenAICompatUpstream, b: OpenAICompatUpstream) -> None:
    a.enqueue(Reply(status=500, json={"error": {"message": "boom", "type": "server_error"}}))
    router = Router(
        [
            {
                "model_name": "legacy",
                "params": {"model": "openai/m", "api_base": a.url + "/v1", "api_key": "k", "weight": 1000},
            },
            {
                "model_name": "legacy",
                "params": {"model": "openai/m", "api_base": b.url + "/v1", "api_key": "k", "weight": 0.001},
            },
        ],
        num_retries=1,
        seed=3,
    )
    r = router.text_completion("legacy", "hello there", max_tokens=4)
    assert r.choices[0].text == " hello there"
    assert [x.status_code for x in r.meta.attempts] == [500, 200]
    with pytest.raises(errors.InvalidRequestArgumentError, match="unexpected argument"):
        router.text_completion("legacy", "hello", tools=[])


@pytest.fixture
def proxy(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(_config(hf, deepinfra, tgi)) as server:
        yield server


def test_the_openai_sdk_default_completions_call_through_the_proxy(
    proxy: ProxyServer, deepinfra: DeepInfraUpstream
) -> None:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER, max_retries=0)
    r = client.completions.create(model="chat", prompt="Say this is a test", max_tokens=7)
    assert r.object == "text_completion" and r.choices[0].text == " Say this is a test"
    assert r.usage is not None and r.usage.total_tokens == 10
    assert _completions(deepinfra)[0]["model"] == "openai/gpt-oss-120b"
    with pytest.raises(openai.BadRequestError, match="completions"):  # the HF router cannot serve it
        client.completions.create(model="r1", prompt="hi")


# ---------------------------------------------------------------------------------------------- streams
def test_a_stream_from_an_openai_compatible_server_ends_with_the_upstreams_usage(a: OpenAICompatUpstream) -> None:
    stream = _from(
        a,
        prompt="Say this is a test",
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " Say this is"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk the caller asked for
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    assert stream.meta.usage_estimated is False and stream.meta.provider == "openai"
    (sent,) = _completions(a)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_tgi_stream_is_normalized_and_its_usage_counted_locally(tgi: TGIUpstream) -> None:
    async def read() -> tuple[list, object]:
        stream = await atext_completion(model="huggingface/tgi", api_base=tgi.url, prompt="def fib(n):", stream=True)
        return [chunk async for chunk in stream], stream

    chunks, stream = asyncio.run(read())
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[:-1] == [None] * (len(reasons) - 1) and reasons[-1] == "stop"  # TGI: "" then eos_token
    assert "".join(c.choices[0].text for c in chunks) == " def fib(n):"
    assert chunks[0].id.startswith("cmpl-")  # TGI sends an empty id
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked
    assert stream.meta.usage_estimated is True and stream.usage.completion_tokens > 0  # type: ignore[attr-defined]


def _budgeted_stream(server: OpenAICompatUpstream, priced: Catalog, prompt: str, max_tokens: int) -> tuple[Any, Budget]:
    """A stream of ``openai/m`` on ``server`` priced at $100/$200 per million tokens, under a $1 budget."""
    priced.set_price("openai/m", input_per_million=100, output_per_million=200)
    budget = Budget(1.0, name="streamed")
    stream = _from(server, prompt=prompt, max_tokens=max_tokens, stream=True, catalog=priced, budget=budget)
    return stream, budget


def test_a_cut_stream_raises_and_its_budget_pays_for_what_arrived(
    a: OpenAICompatUpstream, priced: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.upstreams.completions import TextStreamStyle

    monkeypatch.setattr(a, "text_stream_style", TextStreamStyle(cut_after=2))
    stream, budget = _budgeted_stream(a, priced, "one two three four five", 5)
    got = []
    with pytest.raises(errors.APIConnectionError, match="ended before completion"):
        for chunk in stream:
            got.append(chunk.choices[0].text)
    assert got == [" one", " two"]
    assert budget.reserved_usd == 0 and budget.spent_usd > 0  # charged the prompt and the two words, not released


def test_a_streamed_budget_settles_at_the_upstreams_usage(a: OpenAICompatUpstream, priced: Catalog) -> None:
    stream, budget = _budgeted_stream(a, priced, "a b c d", 2)
    assert budget.reserved_usd > 0  # held while the stream is open
    list(stream)
    assert stream.meta.cost_pico == 4 * 100_000_000 + 2 * 200_000_000
    assert budget.spent_usd == pytest.approx(stream.meta.cost_usd) and budget.reserved_usd == 0


def test_the_router_streams_and_fails_over_before_the_first_text(
    a: OpenAICompatUpstream, b: OpenAICompatUpstream
) -> None:
    a.enqueue(Reply(status=500, json={"error": {"message": "boom", "type": "server_error"}}))
    router = Router(
        [
            {"model_name": "legacy", "params": {"model": "openai/m", "api_base": a.url + "/v1", "api_key": "k"}},
            {"model_name": "legacy", "params": {"model": "openai/m", "api_base": b.url + "/v1", "api_key": "k"}},
        ],
        num_retries=1,
        strategy="simple-shuffle",
        seed=3,
    )
    stream = router.text_completion("legacy", "hello there", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == " hello there"
    assert [x.status_code for x in stream.meta.attempts] == [500, 200]
    with pytest.raises(errors.InvalidRequestArgumentError, match="only for stream=True"):
        router.text_completion("legacy", "hello", stream_options={"include_usage": True})


def test_the_openai_sdk_streams_completions_through_the_proxy(proxy: ProxyServer) -> None:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER, max_retries=0)
    stream = client.completions.create(
        model="chat", prompt="Say this is a test", max_tokens=7, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " Say this is a test"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.completions.create(model="chat", prompt="x", stream_options={"include_usage": True})
