"""Batch jobs over real HTTP: output format, cheapest fit, budgets, fallbacks, dry runs, resume."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router.batch import EXIT_BUDGET, EXIT_DONE, EXIT_FAILED_ROWS, parse_batch_config, run_batch
from router.batch.dryrun import adry_run, format_dry_run
from router.batch.journal import JobError, journal_path, read_state
from router.proxy.config import ConfigError
from router.types import ChatCompletion, EmbeddingResponse, ResponseMeta, attach_meta
from tests.upstreams import HFRouterUpstream, OpenAICompatUpstream

CHAT = "/v1/chat/completions"
PRICES = [
    {"model": "openai/cheap", "input_per_million": 1, "output_per_million": 2},
    {"model": "openai/dear", "input_per_million": 10, "output_per_million": 20},
    {"model": "openai/embed", "input_per_million": 0.5, "output_per_million": 0},
]


def oai_config(server: OpenAICompatUpstream, *, fallback: OpenAICompatUpstream | None = None, **extra: Any) -> Any:
    params = {"api_base": server.base_url, "api_key": "sk-test"}
    candidates: list[dict[str, Any]] = [
        {"name": "cheap", "model": "openai/cheap", "params": params},
        {"name": "dear", "model": "openai/dear", "params": params, "fallback_only": True},
    ]
    if fallback is not None:
        candidates[1]["params"] = {"api_base": fallback.base_url, "api_key": "sk-test"}
    candidates.append({"name": "embed", "model": "openai/embed", "params": params, "endpoint": "embeddings"})
    data = {"candidates": candidates, "pricing": PRICES, "defaults": {"max_tokens": 20}, **extra}
    return parse_batch_config(data)


def write_rows(path: Path, n: int, *, words: int = 6) -> Path:
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(f"word{j}" for j in range(words))
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"row {i} {text}"}]}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body}) + "\n")
    return path


def outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def pico(usd: float | None) -> int:
    return round(Decimal(str(usd)) * 10**12) if usd is not None else 0


def sent_rows(server: OpenAICompatUpstream) -> Counter[str]:
    return Counter(q.json["messages"][0]["content"].split()[1] for q in server.requests if q.path == CHAT)


# ---------------------------------------------------------------- output format, mixed input, bad lines


def test_mixed_input_gives_openai_batch_output_with_costs(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "custom_id": "a",
                "method": "POST",
                "url": CHAT,
                "body": {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5},
            }
        ),
        json.dumps({"messages": [{"role": "user", "content": "bare body"}]}),
        "",
        json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": ["a b", "c"]}}),
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    result = run_batch(src, tmp_path / "out.jsonl", oai_config(oai))
    assert result.exit_code == EXIT_DONE and (result.ok, result.failed) == (3, 0)
    rows = {r["custom_id"]: r for r in outputs(tmp_path / "out.jsonl")}
    assert set(rows) == {"a", "line-2", "e"}  # the bare body's id is its line number; blank lines are not rows
    a = rows["a"]
    assert a["id"].startswith("batch_req_") and a["error"] is None
    assert a["response"]["status_code"] == 200 and a["response"]["body"]["object"] == "chat.completion"
    assert a["response"]["body"]["choices"][0]["message"]["content"] == "Echo: hello there"
    usage = a["response"]["body"]["usage"]
    assert pico(a["cost_usd"]) == usage["prompt_tokens"] * 1_000_000 + usage["completion_tokens"] * 2_000_000
    assert (a["candidate"], a["provider"], a["model"], a["price_source"]) == ("cheap", "openai", "cheap", "config")
    assert rows["e"]["response"]["body"]["object"] == "list" and rows["e"]["candidate"] == "embed"
    body = a["response"]["body"]  # the typed result's whole JSON (every field, defaults included)
    assert ChatCompletion.model_validate(body).model_dump() == body and "refusal" in body["choices"][0]["message"]
    assert EmbeddingResponse.model_validate(rows["e"]["response"]["body"]).model_dump() == rows["e"]["response"]["body"]
    ids = {r["id"] for r in rows.values()}
    assert len(ids) == 3 and {len(i) for i in ids} == {len("batch_req_") + 24}
    assert [q.json.get("max_tokens") for q in oai.requests if q.path == CHAT] == [5, 20]  # defaults fill the gap
    state = read_state(journal_path(tmp_path / "out.jsonl"))
    assert state.spent_pico == sum(pico(r["cost_usd"]) for r in rows.values()) and state.rows_total == 3


def test_bad_lines_are_recorded_with_line_numbers_and_skipped(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "fine"}]}
    lines = [
        json.dumps({"custom_id": "x", "body": good}),
        "{not json",
        "[1, 2]",
        json.dumps({"custom_id": "x", "body": good}),  # duplicate id
        json.dumps({"custom_id": "y", "method": "GET", "url": CHAT, "body": good}),
        json.dumps({"custom_id": "z", "url": "/v1/images", "body": good}),
        json.dumps({"prompt": "no messages"}),
        json.dumps({"custom_id": "t", "body": {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}}),
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    result = run_batch(src, tmp_path / "out.jsonl", oai_config(oai))
    assert result.exit_code == EXIT_FAILED_ROWS and (result.ok, result.failed) == (1, 7)
    errors = {r["line"]: r["error"] for r in outputs(tmp_path / "out.jsonl") if r["error"]}
    assert set(errors) == {2, 3, 4, 5, 6, 7, 8}
    assert "line 2: not valid JSON" in errors[2]["message"] and errors[2]["code"] == "invalid_line"
    assert "expected a JSON object" in errors[3]["message"]
    assert "custom_id 'x' was already used" in errors[4]["message"]
    assert "method must be POST" in errors[5]["message"]
    assert "'/v1/images' is not supported" in errors[6]["message"]
    assert "neither an OpenAI Batch request" in errors[7]["message"]
    assert "temperature" in errors[8]["message"] and errors[8]["code"] == "invalid_request_argument_error"
    assert len([q for q in oai.requests if q.path == CHAT]) == 1  # only the good row reached the upstream


# ---------------------------------------------------------------- cheapest fit from the catalog


def test_each_row_goes_to_the_cheapest_candidate_that_fits(hf: HFRouterUpstream, tmp_path: Path) -> None:
    config = parse_batch_config(
        {
            "candidates": [
                {"name": "llama-novita", "model": "huggingface/novita/meta-llama/Llama-3.1-8B-Instruct"},
                {"name": "qwen", "model": "huggingface/Qwen/Qwen3-8B:cheapest"},
                {"name": "r1", "model": "huggingface/together/deepseek-ai/DeepSeek-R1"},
            ],
            "defaults": {"max_tokens": 100},
        }
    )
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    rows = {
        "short": {"messages": [{"role": "user", "content": "hi"}]},
        "structured": {"messages": [{"role": "user", "content": "json please"}], "response_format": schema},
        "tools": {"messages": [{"role": "user", "content": "search"}], "tools": [tool]},
        "long": {"messages": [{"role": "user", "content": "lorem " * 20_000}]},  # > novita's 16,384
        "longer": {"messages": [{"role": "user", "content": "lorem " * 45_000}]},  # > qwen's 40,960
        "pinned": {"model": "r1", "messages": [{"role": "user", "content": "hi"}]},
        "too-long": {"messages": [{"role": "user", "content": "lorem " * 200_000}]},  # fits nothing
    }
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"custom_id": k, "body": v}) + "\n" for k, v in rows.items()))
    result = run_batch(src, tmp_path / "out.jsonl", config, budget_usd=5)
    got = {r["custom_id"]: r for r in outputs(tmp_path / "out.jsonl")}
    assert {k: (r["candidate"], r["provider"]) for k, r in got.items() if not r["error"]} == {
        "short": ("llama-novita", "novita"),
        "structured": ("qwen", "nscale"),  # novita cannot do structured output
        "tools": ("llama-novita", "novita"),
        "long": ("qwen", "nscale"),
        "longer": ("r1", "together"),
        "pinned": ("r1", "together"),  # the row named a candidate
    }
    assert got["too-long"]["error"]["code"] == "no_candidate"
    assert "exceeds its context window" in got["too-long"]["error"]["message"]
    assert result.exit_code == EXIT_FAILED_ROWS
    # qwen's second provider (featherless) has no price: under a budget it is never used.
    assert all(not q.json["model"].endswith("featherless-ai") for q in hf.requests if q.path == CHAT)


# ---------------------------------------------------------------- budgets


def test_budget_caps_spend_under_64_concurrency_then_resume_finishes(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out.jsonl"
    config = oai_config(oai)
    # A row's worst case: ~(prompt 15 x 1.25) x $1/M + 20 x $2/M ~ $0.00006; $0.006 covers ~100 worst cases.
    budget = 0.006
    first = run_batch(src, out, config, budget_usd=budget, concurrency=64)
    assert first.exit_code == EXIT_BUDGET and first.reason == "budget"
    state = read_state(journal_path(out))
    assert 0 < state.ok < 300 and state.spent_pico <= budget * 10**12
    assert sum(sent_rows(oai).values()) == state.ok  # every row sent was recorded; refused rows never left
    assert first.rows_left == 300 - state.ok and first.needed_expected_usd and first.needed_max_usd
    assert first.needed_expected_usd <= first.needed_max_usd
    second = run_batch(src, out, config, budget_usd=budget + first.needed_max_usd, resume=True, concurrency=64)
    assert second.exit_code == EXIT_DONE and second.ok == 300
    rows = outputs(out)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(300))
    assert max(sent_rows(oai).values()) == 1  # no row was sent twice
    assert second.state.spent_pico == sum(pico(r["cost_usd"]) for r in rows)


def test_a_row_bigger_than_the_whole_budget_stops_at_once(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", 5)
    result = run_batch(src, tmp_path / "out.jsonl", oai_config(oai), budget_usd=0.0000001)
    assert result.exit_code == EXIT_BUDGET and result.ok == 0 and result.rows_left == 5
    assert not oai.requests


# ---------------------------------------------------------------- failures and fallbacks


def test_flaky_upstream_with_a_fallback_candidate_completes_every_row(
    oai: OpenAICompatUpstream, tmp_path: Path
) -> None:
    healthy = OpenAICompatUpstream().start()
    try:
        oai.fail_rate = 0.2
        src = write_rows(tmp_path / "in.jsonl", 400)
        config = oai_config(oai, fallback=healthy, router_settings={"num_retries": 0})
        result = run_batch(src, tmp_path / "out.jsonl", config, concurrency=64, budget_usd=1)
        assert result.exit_code == EXIT_DONE and (result.ok, result.failed) == (400, 0)
        served = Counter(r["candidate"] for r in outputs(tmp_path / "out.jsonl"))
        assert served["dear"] == oai.failures > 40  # each failure went to the fallback candidate once
        assert served["cheap"] + served["dear"] == 400
    finally:
        healthy.stop()


def test_failed_rows_are_recorded_then_retried(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", 50)
    out = tmp_path / "out.jsonl"
    oai.fail_rate = 0.3
    candidate = {"model": "openai/cheap", "params": {"api_base": oai.base_url, "api_key": "k"}}
    config = parse_batch_config({"candidates": [candidate], "pricing": PRICES, "router_settings": {"num_retries": 0}})
    first = run_batch(src, out, config)
    assert first.exit_code == EXIT_FAILED_ROWS and first.failed == oai.failures > 0
    failed = [r for r in outputs(out) if r["error"]]
    assert failed[0]["response"]["status_code"] == 503
    assert failed[0]["error"]["code"] == "service_unavailable_error"
    oai.fail_rate = 0.0
    with pytest.raises(JobError, match="already holds a job"):
        run_batch(src, out, config)
    again = run_batch(src, out, config, resume=True)  # plain resume: failed rows stay failed
    assert again.failed == first.failed and again.exit_code == EXIT_FAILED_ROWS
    retried = run_batch(src, out, config, retry_failed=True)
    assert retried.exit_code == EXIT_DONE and (retried.ok, retried.failed) == (50, 0)
    rows = outputs(out)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(50)) and not any(
        r["error"] for r in rows
    )
    assert retried.state.spent_pico == sum(pico(r["cost_usd"]) for r in rows)


def test_resume_refuses_a_changed_input(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    run_batch(src, out, oai_config(oai))
    src.write_text(src.read_text().replace("row 1", "row X"))
    with pytest.raises(JobError, match="the input changed since the job started"):
        run_batch(src, out, oai_config(oai), resume=True)
    other = tmp_path / "other.jsonl"
    other.write_text("not mine\n")
    with pytest.raises(JobError, match="not a polyroute batch output"):
        run_batch(src, other, oai_config(oai))


# ---------------------------------------------------------------- dry run


def test_dry_run_brackets_the_actual_cost_and_sends_nothing(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    oai.template_tokens = True  # the server counts prompts with a chat template, like real ones
    src = tmp_path / "in.jsonl"
    with src.open("w") as f:
        for i in range(120):
            words = " ".join(["review"] * (5 + i % 40))
            body = {
                "messages": [
                    {"role": "system", "content": "You label reviews."},
                    {"role": "user", "content": f"Label {i}: {words}"},
                ],
                "max_tokens": 4 + i % 30,
            }
            f.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")
        f.write("oops\n")
    config = oai_config(oai)
    import asyncio

    report = asyncio.run(adry_run(src, config, budget_usd=1))
    assert not oai.requests
    text = format_dry_run(report)
    assert "121 rows read" in text and "1 bad lines" in text and "cheap" in text
    result = run_batch(src, tmp_path / "out.jsonl", config, budget_usd=1)
    actual = result.spent_usd
    assert report.min_usd <= actual <= report.max_usd
    assert report.candidates["cheap"].planned == 120 and report.candidates["dear"].fits == 120
    assert report.min_usd < report.expected_usd < report.max_usd


# ---------------------------------------------------------------- config mistakes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "candidates: expected a non-empty list"),
        ({"candidates": [{"model": "openai/x"}], "budget": 3}, "unknown keys 'budget'"),
        ({"candidates": [{"group": "nope"}]}, "candidates\\[0\\].group: 'nope' is not a model_name"),
        ({"candidates": [{"model": "openai/x", "group": "g"}]}, "exactly one of 'model'"),
        ({"candidates": [{"model": "openai/x"}, {"model": "openai/x"}]}, "is used twice"),
        ({"candidates": [{"model": "openai/x", "fallback_only": True}]}, "every candidate is fallback_only"),
        ({"candidates": [{"model": "openai/x", "endpoint": "images"}]}, "expected 'chat' or 'embeddings'"),
        ({"candidates": ["openai/x"], "concurrency": 0}, "concurrency: expected a positive integer"),
    ],
)
def test_config_mistakes_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_batch_config(data)


def test_the_example_config_loads() -> None:
    from router.batch import load_batch_config

    config = load_batch_config(Path(__file__).parent.parent / "configs" / "batch.yaml")
    assert config.candidates and config.defaults.get("max_tokens")


def test_a_pricey_last_resort_does_not_stop_a_small_budget(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", 60)
    prices = [
        {"model": "openai/cheap", "input_per_million": 1, "output_per_million": 2},
        {"model": "openai/dear", "input_per_million": 1000, "output_per_million": 2000},
    ]
    config = parse_batch_config(
        {
            "candidates": [
                {"name": "cheap", "model": "openai/cheap", "params": {"api_base": oai.base_url, "api_key": "k"}},
                {
                    "name": "dear",
                    "model": "openai/dear",
                    "params": {"api_base": oai.base_url, "api_key": "k"},
                    "fallback_only": True,
                },
            ],
            "pricing": prices,
            "defaults": {"max_tokens": 20},
        }
    )
    result = run_batch(src, tmp_path / "out.jsonl", config, budget_usd=0.01)  # far below one "dear" worst case
    assert result.exit_code == EXIT_DONE and result.ok == 60 and result.spent_usd <= 0.01


def test_router_fallbacks_of_a_candidate_count_in_its_reservation(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    oai.fail_rate = 0.3
    src = write_rows(tmp_path / "in.jsonl", 200)
    params = {"api_base": oai.base_url, "api_key": "k"}
    config = parse_batch_config(
        {
            "candidates": [{"name": "cheap", "model": "openai/cheap", "params": params}],
            "model_list": [{"model_name": "dear", "params": {"model": "openai/dear", **params}}],
            "router_settings": {"num_retries": 0, "fallbacks": [{"cheap": ["dear"]}]},
            "pricing": PRICES,
            "defaults": {"max_tokens": 20},
        }
    )
    budget = 0.01
    result = run_batch(src, tmp_path / "out.jsonl", config, budget_usd=budget, concurrency=64)
    assert result.state.spent_pico <= budget * 10**12  # dear answers were reserved for
    assert result.exit_code in (EXIT_BUDGET, EXIT_DONE, EXIT_FAILED_ROWS)


def test_bad_numbers_in_a_row_are_that_rows_error(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    rows = [
        {"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}], "max_tokens": "abc"}},
        {"custom_id": "b", "body": {"messages": [{"role": "user", "content": "x"}], "n": -2}},
        {"custom_id": "c", "body": {"messages": [{"role": "user", "content": "x"}], "api_base": "http://evil"}},
        {"custom_id": "d", "body": {"messages": [{"role": "user", "content": "x"}], "store": True}},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_batch(src, tmp_path / "out.jsonl", oai_config(oai), budget_usd=1)
    got = {r["custom_id"]: r["error"] for r in outputs(tmp_path / "out.jsonl")}
    assert "max_tokens must be a positive integer" in got["a"]["message"]
    assert "n must be a positive integer" in got["b"]["message"]
    assert "api_base cannot be set per row" in got["c"]["message"]
    assert got["d"] is None and result.ok == 1  # OpenAI-only fields are dropped


def test_a_full_disk_stops_the_job_and_resume_loses_nothing(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    import resource
    import signal
    import subprocess

    from tests.cli import REPO, batch_run_argv
    from tests.test_batch_kill import requested, write_config, write_input

    write_input(tmp_path / "in.jsonl", 100)
    write_config(tmp_path / "b.yaml", oai)
    cmd = batch_run_argv(tmp_path / "in.jsonl", tmp_path / "b.yaml", tmp_path / "o.jsonl", "--progress", "none")

    def small_files() -> None:  # writes past 30 kB fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    full = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, preexec_fn=small_files, timeout=60)
    assert full.returncode == 1 and "failed" in full.stderr and "--resume" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr
    first = read_state(journal_path(tmp_path / "o.jsonl"))
    assert 0 < first.ok < 100
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = outputs(tmp_path / "o.jsonl")
    assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(100))
    state = read_state(journal_path(tmp_path / "o.jsonl"))
    assert state.spent_pico == sum(pico(r["cost_usd"]) for r in rows)
    assert sum(requested(oai).values()) >= 100


def test_a_configured_price_makes_an_unpriced_hf_provider_usable_under_a_budget(
    hf: HFRouterUpstream, tmp_path: Path
) -> None:
    model = "huggingface/featherless-ai/Qwen/Qwen3-8B"  # the catalog lists no price for it
    config = parse_batch_config(
        {
            "candidates": [{"name": "feather", "model": model}],
            "pricing": [{"model": model, "input_per_million": 0.1, "output_per_million": 0.2}],
            "defaults": {"max_tokens": 10},
        }
    )
    src = write_rows(tmp_path / "in.jsonl", 3)
    result = run_batch(src, tmp_path / "out.jsonl", config, budget_usd=1)
    assert result.exit_code == EXIT_DONE and result.ok == 3
    assert {r["provider"] for r in outputs(tmp_path / "out.jsonl")} == {"featherless-ai"}


def test_a_result_keeps_its_meta_through_copies_pickles_and_equality() -> None:
    """The batch reads ``result.meta`` (a plain slot, not a pydantic private attribute): it travels as before."""
    import copy
    import pickle

    data = {"id": "c1", "created": 1, "model": "m", "choices": [{"message": {"content": "hi"}}], "extra": 1}
    result = ChatCompletion.model_validate(data)
    with pytest.raises(AttributeError, match="not produced by a polyroute call"):
        _ = result.meta
    meta = ResponseMeta(provider="p", model="m", api_base="http://x", latency_ms=1.0, model_string="openai/m")
    attach_meta(result, meta)
    assert result.meta is meta and "_meta" not in result.model_dump() and "meta" not in result.model_dump_json()
    assert result.model_copy().meta is meta and result.model_copy(update={"id": "c2"}).meta is meta
    deep = copy.deepcopy(result)
    assert deep.meta == meta and deep.meta is not meta
    assert pickle.loads(pickle.dumps(result)).meta == meta and pickle.loads(pickle.dumps(result)) == result
    bare = ChatCompletion.model_validate(data)
    assert bare == ChatCompletion.model_validate(data) and bare != result  # meta counts in ==, as it did


def test_the_jobs_loop_ledger_follows_the_in_memory_ledgers_rule() -> None:
    """Same answers as InMemoryLedger for any sequence of reserve / settle / release (ids aside)."""
    import random

    from router.batch.runner import LoopLedger
    from router.ledger import InMemoryLedger

    rng = random.Random(7)
    ours, reference = LoopLedger(), InMemoryLedger()
    open_ids: list[tuple[str, str]] = []  # (ours, reference)
    for _ in range(5000):
        op = rng.random()
        if op < 0.5 or not open_ids:
            amount, limit = rng.randint(0, 400), rng.randint(0, 20_000)
            a, b = ours.reserve("job", amount, limit), reference.reserve("job", amount, limit)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                open_ids.append((a, b))
        else:
            a, b = open_ids.pop(rng.randrange(len(open_ids)))
            if op < 0.8:
                actual = rng.randint(0, 400)
                ours.settle("job", a, actual), reference.settle("job", b, actual)
                ours.settle("job", a, actual), reference.settle("job", b, actual)  # a second settle is a no-op
            else:
                ours.release("job", a), reference.release("job", b)
        assert ours.totals("job") == reference.totals("job")
    assert ours.totals("other") == (0, 0)


def test_success_meta_fills_every_field_by_name() -> None:
    """success_meta builds ResponseMeta and Attempt positionally (hot path): each value lands in its field."""
    import time

    from providers.registry import Registry
    from providers.tasks import Auth, chat_helper
    from providers.transport import HttpRequest, HttpResponse, Timeouts
    from router.chat import CHAT
    from router.pipeline import Call, success_meta
    from router.pricing.catalog import Catalog, PriceLookup
    from router.pricing.cost import cost_of
    from router.pricing.prices import Price

    target = Registry().resolve("openai/cheap", "http://127.0.0.1:9/v1")
    request = HttpRequest("POST", "http://127.0.0.1:9/v1/chat/completions", {})
    call = Call(
        CHAT, target, chat_helper(target), [], {}, Auth(), Timeouts(), Catalog(), time.perf_counter(), request=request
    )
    usage = {"prompt_tokens": 12, "completion_tokens": 6, "estimated_cost": 0.5}
    lookup = PriceLookup(Price(Decimal(1), Decimal(2), "config", 123.0))
    meta = success_meta(
        call,
        HttpResponse(201, {"x-request-id": "req-9"}, b""),
        provider="served",
        model="m-1",
        usage=usage,
        usage_estimated=True,
        lookup=lookup,
    )
    cost = cost_of(lookup, usage, estimated=True)
    assert (meta.provider, meta.model, meta.api_base, meta.model_string) == (
        "served",
        "m-1",
        "http://127.0.0.1:9/v1",
        "openai/cheap",
    )
    assert meta.usage_estimated is True and meta.upstream_request_id == "req-9" and meta.time_to_first_token_ms is None
    assert (meta.cost_usd, meta.cost_pico, meta.cost_estimated, meta.price_source, meta.price_fetched_at) == (
        cost.cost_usd,
        cost.cost_pico,
        True,
        "config",
        123.0,
    )
    assert meta.unpriced_reason is None and meta.upstream_cost_usd == 0.5 and meta.latency_ms > 0
    (only,) = meta.attempts
    assert (only.model, only.provider, only.api_base, only.status_code, only.error, only.deployment) == (
        "openai/cheap",
        target.label,
        "http://127.0.0.1:9/v1",
        201,
        None,
        None,
    )
    assert only.latency_ms == meta.latency_ms and only.waited_ms == 0.0
