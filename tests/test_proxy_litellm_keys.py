"""LiteLLM's key management API on the real proxy (over HTTP, curl-shaped JSON as LiteLLM's docs show it), on
the SQLite and PostgreSQL stores: generate, use, spend, info, update, delete, list, spend logs, model info and
health, and what a hostile caller gets."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import openai
import pytest

from router.proxy.store import PostgresStore
from tests.services import POSTGRES_URL, REDIS_URL, postgres_schema
from tests.test_proxy import MASTER, USER, ProxyServer, _config
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, TGIUpstream

PRICING = [{"model": "huggingface/tgi", "input_per_million": 100, "output_per_million": 100}]
UPSTREAM_SECRET = "sk-upstream-secret-0123456789"


@pytest.fixture(params=["sqlite", "postgres"])
def proxy(
    request: pytest.FixtureRequest, hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream
) -> Iterator[ProxyServer]:
    config = _config(hf, deepinfra, tgi)
    config["pricing"] = PRICING
    if request.param == "sqlite":
        with ProxyServer(config) as server:
            yield server
        return
    with (
        postgres_schema("keyapi") as schema,
        ProxyServer(config, store=PostgresStore(POSTGRES_URL, schema=schema)) as server,
    ):
        yield server


@pytest.fixture
def sqlite_proxy(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(_config(hf, deepinfra, tgi, pricing=PRICING)) as server:
        yield server


def call(proxy: ProxyServer, method: str, path: str, key: str | None = MASTER, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(method, proxy.url + path, headers=headers, timeout=30, **kw)


def generate(proxy: ProxyServer, **body: Any) -> dict[str, Any]:
    answer = call(proxy, "POST", "/key/generate", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def chat(proxy: ProxyServer, key: str, model: str = "local") -> httpx.Response:
    return call(proxy, "POST", "/v1/chat/completions", key, json={"model": model, "messages": USER, "max_tokens": 20})


def info(proxy: ProxyServer, ref: str) -> dict[str, Any]:
    answer = call(proxy, "GET", "/key/info", params={"key": ref})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["info"])


def test_a_generated_key_chats_spends_and_shows_its_spend(proxy: ProxyServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = generate(
        proxy,
        models=["local"],
        max_budget=1.0,
        duration="30d",
        key_alias="team-a",
        metadata={"team": "core-infra"},
        rpm_limit=100,
        tpm_limit=100_000,
    )
    key, token = made["key"], made["token"]
    assert key.startswith("sk-") and made["token_id"] == token and made["key_name"] == key[:12] + "…"
    assert made["models"] == ["local"] and made["max_budget"] == 1.0 and made["key_alias"] == "team-a"
    assert made["metadata"] == {"team": "core-infra"} and made["rpm_limit"] == 100 and made["tpm_limit"] == 100_000
    days = (
        datetime.fromisoformat(made["expires"]) - datetime.fromisoformat(made["created_at"])
    ).total_seconds() / 86_400
    assert round(days, 3) == 30.0 and made["duration"] == "30d" and made["spend"] == 0.0
    # The key works like any virtual key (the OpenAI SDK), for its models only.
    team = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
    assert team.chat.completions.create(model="local", messages=USER, max_tokens=20).choices[0].message.content  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError):
        team.chat.completions.create(model="chat", messages=USER)  # type: ignore[arg-type]
    team.close()
    # /key/info by the key and by its token (master key), and by the key itself about itself.
    shown = info(proxy, key)
    assert shown == info(proxy, token)
    assert shown["spend"] > 0 and shown["reserved_spend"] == 0.0
    assert shown["remaining_budget"] == pytest.approx(1.0 - shown["spend"], abs=1e-9)
    own = call(proxy, "GET", "/key/info", key)
    assert own.status_code == 200 and own.json() == {"key": token, "info": shown}
    # /admin/keys: the same store, the same spend.
    listed = {k["id"]: k for k in call(proxy, "GET", "/admin/keys").json()["data"]}
    assert listed[token]["spend_usd"] == shown["spend"] and listed[token]["requests"] == 1
    assert listed[token]["remaining_budget_usd"] == shown["remaining_budget"] and listed[token]["reserved_usd"] == 0.0
    assert listed[token]["metadata"] == {"team": "core-infra"}
    # One spend log row per request served (the refused one reached no upstream), adding up to the key's spend.
    assert chat(proxy, key, model="local").status_code == 200
    rows = call(proxy, "GET", "/spend/logs", params={"api_key": key}).json()
    assert [r["status"] for r in rows] == ["success", "success"] and {r["api_key"] for r in rows} == {token}
    assert sum(r["spend"] for r in rows) == pytest.approx(info(proxy, token)["spend"])
    assert rows[0]["model_group"] == "local" and rows[0]["total_tokens"] > 0 and rows[0]["request_id"]
    assert call(proxy, "GET", "/spend/logs", params={"api_key": token}).json() == rows
    by_id = call(proxy, "GET", "/spend/logs", params={"request_id": rows[0]["request_id"]}).json()
    assert by_id == rows[:1]
    # The key was in one answer only: never in a line the proxy logged (the test's own HTTP clients log URLs).
    clients = {"httpx", "httpx2", "httpcore", "httpcore2", "openai"}
    assert not [r for r in caplog.records if key in r.getMessage() and r.name.split(".")[0] not in clients]


def test_budget_exceeded_is_the_virtual_keys_refusal(proxy: ProxyServer) -> None:
    litellm_key = generate(proxy, max_budget=0.000001)["key"]
    admin_key = call(proxy, "POST", "/admin/keys", json={"max_budget_usd": 0.000001}).json()["key"]
    refusals = [chat(proxy, k) for k in (litellm_key, admin_key)]
    assert [r.status_code for r in refusals] == [429, 429]
    assert [r.json()["error"]["code"] for r in refusals] == ["budget_exceeded", "budget_exceeded"]
    assert info(proxy, litellm_key)["spend"] == 0.0


def test_budget_spent_then_refused_and_remaining_reaches_zero(sqlite_proxy: ProxyServer) -> None:
    made = generate(sqlite_proxy, max_budget=0.01)  # a call costs ~ $0.001 here ($100 per 1M tokens)
    statuses = [chat(sqlite_proxy, made["key"]).status_code]
    while statuses[-1] == 200 and len(statuses) < 100:
        statuses.append(chat(sqlite_proxy, made["key"]).status_code)
    assert statuses[0] == 200 and statuses[-1] == 429
    shown = info(sqlite_proxy, made["token"])
    assert 0 < shown["spend"] <= 0.01 and shown["remaining_budget"] < 0.01


def test_key_spend_with_budgets_in_redis(
    hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream, prefix: str
) -> None:
    config = _config(hf, deepinfra, tgi, redis_url=REDIS_URL, redis_prefix=prefix)
    config["pricing"] = PRICING
    with ProxyServer(config) as proxy:
        made = generate(proxy, max_budget=1.0)
        assert chat(proxy, made["key"]).status_code == 200
        shown = info(proxy, made["key"])
        assert shown["spend"] > 0 and shown["reserved_spend"] == 0.0
        assert shown["remaining_budget"] == pytest.approx(1.0 - shown["spend"], abs=1e-9)


def test_duration_expiry(proxy: ProxyServer) -> None:
    made = generate(proxy, duration="1h")
    assert chat(proxy, made["key"]).status_code == 200
    shortened = call(proxy, "POST", "/key/update", json={"key": made["token"], "duration": "1s"}).json()
    expires = datetime.fromisoformat(shortened["expires"]).timestamp()
    assert expires < datetime.fromisoformat(made["expires"]).timestamp()
    time.sleep(max(0.0, expires - time.time()) + 0.05)  # until the time the answer named
    refused = chat(proxy, made["key"])
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    assert info(proxy, made["token"])["expires"] == shortened["expires"]  # still there, for its history


def test_update_changes_limits_models_and_alias(proxy: ProxyServer) -> None:
    made = generate(proxy, rpm_limit=1, models=["local"], key_alias="before")
    key = made["key"]
    assert chat(proxy, key).status_code == 200
    assert chat(proxy, key).status_code == 429  # one request per minute
    updated = call(proxy, "POST", "/key/update", json={"key": key, "rpm_limit": 10, "models": [], "key_alias": "after"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["key"] == made["token"] and key not in updated.text
    assert (
        updated.json()["rpm_limit"] == 10 and updated.json()["models"] == [] and updated.json()["key_alias"] == "after"
    )
    assert chat(proxy, key).status_code == 200
    assert chat(proxy, key, model="chat").status_code == 200  # [] is every model, as in LiteLLM
    # null leaves a setting as it is (LiteLLM); the token works as the key's name.
    kept = call(proxy, "POST", "/key/update", json={"key": made["token"], "rpm_limit": None, "max_budget": 5})
    assert kept.json()["rpm_limit"] == 10 and kept.json()["max_budget"] == 5
    stopped = call(proxy, "POST", "/key/update", json={"key": key, "models": ["no-default-models"]})
    assert stopped.json()["models"] == ["no-default-models"] and chat(proxy, key).status_code == 403
    longer = call(proxy, "POST", "/key/update", json={"key": key, "duration": "2h"}).json()
    assert longer["expires"] is not None and made["expires"] is None
    missing = call(proxy, "POST", "/key/update", json={"key": "sk-never-made", "rpm_limit": 3})
    assert missing.status_code == 404 and "sk-never-made" not in missing.text


def test_delete_makes_the_key_refused(proxy: ProxyServer) -> None:
    one, two, three = (generate(proxy, key_alias=alias) for alias in ("one", "two", "three"))
    deleted = call(proxy, "POST", "/key/delete", json={"keys": [one["key"]]})
    assert deleted.status_code == 200 and deleted.json() == {"deleted_keys": [one["token"]]}
    refused = chat(proxy, one["key"])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_key"
    assert call(proxy, "GET", "/key/info", params={"key": one["key"]}).status_code == 404
    again = call(proxy, "POST", "/key/delete", json={"keys": [one["key"]]})
    assert again.status_code == 404 and one["key"] not in again.text and again.json()["error"]["param"] == "keys[0]"
    by_alias = call(proxy, "POST", "/key/delete", json={"key_aliases": ["two"], "keys": [three["token"]]})
    assert by_alias.json() == {"deleted_keys": [three["token"], "two"]}
    assert chat(proxy, two["key"]).status_code == 401 and chat(proxy, three["key"]).status_code == 401
    # The spend history of a deleted key stays; /admin/keys shows it revoked.
    revoked = {k["id"]: k["revoked_at"] for k in call(proxy, "GET", "/admin/keys").json()["data"]}
    assert all(revoked[k["token"]] is not None for k in (one, two, three))


def test_list_pages_filters_and_full_objects(proxy: ProxyServer) -> None:
    made = [generate(proxy, key_alias=f"k{i}", max_budget=i + 1.0) for i in range(3)]
    call(proxy, "POST", "/key/delete", json={"keys": [made[0]["token"]]})
    listed = call(proxy, "GET", "/key/list").json()
    assert sorted(listed["keys"]) == sorted(m["token"] for m in made[1:])
    assert listed["total_count"] == 2 and listed["current_page"] == 1 and listed["total_pages"] == 1
    page = call(proxy, "GET", "/key/list", params={"size": 1, "page": 2, "sort_by": "max_budget", "sort_order": "asc"})
    assert page.json()["keys"] == [made[2]["token"]] and page.json()["total_pages"] == 2
    full = call(proxy, "GET", "/key/list", params={"return_full_object": "true", "key_alias": "k1"}).json()["keys"]
    assert len(full) == 1 and full[0]["token"] == made[1]["token"] and full[0]["spend"] == 0.0
    assert full[0]["remaining_budget"] == 2.0 and not any(m["key"] in json.dumps(full) for m in made)
    assert call(proxy, "GET", "/key/list", params={"key_hash": made[2]["token"]}).json()["keys"] == [made[2]["token"]]
    for params in ({"page": 0}, {"size": 101}, {"page": "two"}, {"return_full_object": "maybe"}):
        bad = call(proxy, "GET", "/key/list", params=params)
        assert bad.status_code == 422 and bad.json()["error"]["param"] == next(iter(params)), bad.text
    assert call(proxy, "GET", "/key/list", params={"sort_by": "colour"}).status_code == 400


def test_spend_logs_by_day_and_rows(proxy: ProxyServer) -> None:
    made = generate(proxy)
    assert chat(proxy, made["key"]).status_code == 200
    assert chat(proxy, MASTER).status_code == 200
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    days = call(proxy, "GET", "/spend/logs", params={"start_date": today, "end_date": today}).json()
    assert [d["startTime"] for d in days] == [today] and days[0]["spend"] > 0
    assert days[0]["models"]["local"] == pytest.approx(days[0]["spend"]) and days[0][made["token"]] > 0
    rows = call(proxy, "GET", "/spend/logs", params={"start_date": today, "end_date": today, "summarize": "false"})
    assert [r["api_key"] for r in rows.json()] == [made["token"], None]
    assert call(proxy, "GET", "/spend/logs", params={"start_date": "2000-01-01", "end_date": "2000-01-02"}).json() == []
    assert call(proxy, "GET", "/spend/logs", params={"api_key": "sk-unknown"}).json() == []
    for params in ({"start_date": "yesterday"}, {"start_date": today, "end_date": "2000-01-01"}, {"summarize": "x"}):
        assert call(proxy, "GET", "/spend/logs", params=params).status_code == 422
    assert call(proxy, "GET", "/spend/logs", params={"user_id": "u"}).status_code == 400


def test_model_info_hides_secrets(hf: HFRouterUpstream, deepinfra: DeepInfraUpstream, tgi: TGIUpstream) -> None:
    config = _config(hf, deepinfra, tgi)
    config["model_list"].append(
        {
            "model_name": "secretive",
            "litellm_params": {
                "model": "openai/gpt-x",
                "api_base": f"http://user:{UPSTREAM_SECRET}@127.0.0.1:9/v1?api-key={UPSTREAM_SECRET}",
                "api_key": UPSTREAM_SECRET,
                "extra_headers": {"X-Token": UPSTREAM_SECRET},
                "max_tokens": 50,
            },
            "model_info": {"mode": "chat", "access_token": UPSTREAM_SECRET},
        }
    )
    with ProxyServer(config) as proxy:
        for path in ("/model/info", "/v1/model/info"):
            answer = call(proxy, "GET", path)
            assert (
                answer.status_code == 200 and UPSTREAM_SECRET not in answer.text and "hf_test_token" not in answer.text
            )
            data = {m["model_name"]: m for m in answer.json()["data"]}
            assert set(data) == {"r1", "chat", "local", "embed", "secretive"}
            entry = data["secretive"]
            assert entry["litellm_params"] == {
                "model": "openai/gpt-x",
                "api_base": "http://127.0.0.1:9/v1",
                "max_tokens": 50,
            }
            assert entry["model_info"]["mode"] == "chat" and len(entry["model_info"]["id"]) == 32
            assert data["r1"]["litellm_params"] == {"model": "huggingface/together/deepseek-ai/DeepSeek-R1"}
        key = generate(proxy)["key"]
        assert call(proxy, "GET", "/model/info", key).status_code == 401
        assert call(proxy, "GET", "/v1/model/info", None).status_code == 401


def test_health_routes_need_no_key(proxy: ProxyServer) -> None:
    for path in ("/health/liveliness", "/health/liveness"):
        alive = call(proxy, "GET", path, None)
        assert alive.status_code == 200 and alive.json() == "I'm alive!"
    ready = call(proxy, "GET", "/health/readiness", None)
    assert ready.status_code == 200 and ready.json()["db"] == "connected" and ready.json()["status"] == "healthy"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"max_budget": "lots"}, 422, "max_budget"),
        ({"max_budget": 1e300}, 422, "max_budget"),
        ({"max_budget": -1}, 422, "max_budget"),
        ({"max_budget": True}, 422, "max_budget"),
        ({"rpm_limit": 1.5}, 422, "rpm_limit"),
        ({"tpm_limit": 10**30}, 422, "tpm_limit"),
        ({"duration": "forever"}, 422, "duration"),
        ({"duration": 30}, 422, "duration"),
        ({"duration": "999999999y"}, 422, "duration"),
        ({"duration": "0s"}, 422, "duration"),
        ({"models": "local"}, 422, "models"),
        ({"models": [1]}, 422, "models"),
        ({"metadata": "x"}, 422, "metadata"),
        ({"metadata": {"a": "x" * 20_000}}, 422, "metadata"),
        ({"key_alias": 5}, 422, "key_alias"),
        ({"key_alias": "x" * 1000}, 422, "key_alias"),
        ({"team_id": "t"}, 400, "team_id"),
        ({"budget_duration": "30d"}, 400, "budget_duration"),
        ({"colour": "blue"}, 400, "colour"),
        ([1, 2], 422, None),
    ],
)
def test_bad_generate_bodies_name_the_field(
    sqlite_proxy: ProxyServer, body: Any, status: int, param: str | None
) -> None:
    answer = call(sqlite_proxy, "POST", "/key/generate", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and (param is None or param[:8] in error["message"])
    assert call(sqlite_proxy, "GET", "/key/list").json()["total_count"] == 0  # nothing was made


def test_hostile_callers(sqlite_proxy: ProxyServer) -> None:
    proxy = sqlite_proxy
    mine, other = generate(proxy, key_alias="mine"), generate(proxy)
    malformed = httpx.post(
        proxy.url + "/key/generate", content=b"{not json", headers={"Authorization": f"Bearer {MASTER}"}
    )
    assert malformed.status_code == 400
    duplicate = call(proxy, "POST", "/key/generate", json={"key_alias": "mine"})
    assert duplicate.status_code == 400 and duplicate.json()["error"]["param"] == "key_alias"
    for caller in (None, mine["key"], "sk-forged-0000"):
        for method, path, body in (
            ("POST", "/key/generate", {}),
            ("POST", "/key/update", {"key": other["token"], "max_budget": 100}),
            ("POST", "/key/delete", {"keys": [other["token"]]}),
            ("GET", "/key/list", None),
            ("GET", "/spend/logs", None),
            ("GET", "/model/info", None),
        ):
            answer = call(proxy, method, path, caller, json=body)
            assert answer.status_code == 401, (caller, path, answer.text)
    # A key reads its own info only; an unknown or forged key is not authenticated at all.
    assert call(proxy, "GET", "/key/info", mine["key"], params={"key": other["token"]}).status_code == 403
    assert call(proxy, "GET", "/key/info", mine["key"], params={"key": mine["token"]}).status_code == 200
    assert call(proxy, "GET", "/key/info", "sk-forged-0000").status_code == 401
    assert call(proxy, "GET", "/key/info").status_code == 422  # the master key must say which key
    assert info(proxy, other["token"])["max_budget"] is None  # the refused update changed nothing
    for body in ({}, {"keys": "sk-x"}, {"keys": [1]}, {"keys": ["x"] * 1001}):
        assert call(proxy, "POST", "/key/delete", json=body).status_code == 422
    assert call(proxy, "POST", "/key/delete", json={"keys": [mine["token"]], "extra": 1}).status_code == 400
    assert call(proxy, "POST", "/key/update", json={"rpm_limit": 3}).status_code == 422  # no key named
    assert call(proxy, "POST", "/key/update", json={"key": 12}).status_code == 422
    # Nothing above deleted or changed a key; no answer but the generate ones held a key.
    assert sorted(call(proxy, "GET", "/key/list").json()["keys"]) == sorted([mine["token"], other["token"]])
