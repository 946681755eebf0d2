"""Fault soak: the real proxy (`polyroute serve`, SQLite store) in front of an upstream that fails like real ones.

Run from the repo root: ``python3 -m benchmarks.fault_soak`` (about 1-2 minutes) or ``--quick`` (about 30 s).
The upstream is :class:`tests.upstreams.faulty.FaultyUpstream`, served from a thread of this process, so its
per-request log can be read directly. The proxy is a subprocess with a SQLite store in a temporary directory;
the client is this process (aiohttp, uvloop when installed). Everything is on 127.0.0.1.

Scenario A, faults: 2,000 requests (``--quick``: 500) on one virtual key with a budget, half of them streamed,
32 at a time, while the upstream fails 20% of the requests it gets with an even mix of 429 (Retry-After: 0),
500, 502, 503, connection resets before the response, and answers cut part-way (a stream after 1-4 frames, a
JSON body after half of it). The group has two deployments on that upstream and ``num_retries: 2``. The
budget covers about 90% of what the requests would cost, so the last ones meet a spent budget.

Scenario B, crash: a fresh store, a few warm-up requests, then 50 slow requests in flight (JSON answers held
20 s by the upstream, streams sending one frame a second), ``kill -9`` of the proxy, a restart on the same
store, a few seconds of waiting, a clean stop (SIGTERM).

Figures, each with its target (``MISSED`` when it is not met; the run still exits 0, it is a measurement):
requests lost, streams ended silently, spend records vs requests the upstream saw, reservations open at the
end, settled spend vs budget. How records are matched to upstream requests: every client request carries a
unique tag in the ``user`` field, which the proxy forwards upstream, so the upstream's log says which client
requests reached it (at least one attempt) and how often. The spend table has no request id, so records are
matched by count: the proxy writes one spend row per client request (not per attempt); requests the proxy
refused before any upstream call (their tag never reached the upstream, e.g. the budget was spent) are counted
from the client's side and subtracted from the rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ._harness import REPO, environment_line, event_loop_runner, heading, parse_args, table
from .proxy_load import MASTER_KEY, Server, ServerFailed, free_port, sigterm_stops

sys.path.insert(0, str(REPO))  # tests.upstreams, when run from elsewhere with -m
from tests.upstreams.faulty import FaultEvent, FaultyUpstream

ALIAS = "soak"
DEPLOYMENTS = ("soak-a", "soak-b")  # upstream model ids of the group's two deployments
UPSTREAM_KEY = "sk-soak-upstream"
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per million tokens, both deployments
# 11 words: the fake upstream answers "Echo: " + these words, 12 pieces (12 content chunks when streamed).
PROMPT = "please say these eleven words back to me one at a time"
MAX_TOKENS = 16
CONCURRENCY = 32
FAULT_RATE = 0.2
NUM_RETRIES = 2
CRASH_IN_FLIGHT = 50
SEED = 14
# The spend table's columns as its first schema had them (the soak reports any other as added since).
_SPEND_WHO = {"id", "ts", "key_id", "alias", "provider", "model", "status"}
_SPEND_WHAT = {"prompt_tokens", "completion_tokens", "cost_pico", "price_source", "latency_ms"}
KNOWN_SPEND_COLUMNS = _SPEND_WHO | _SPEND_WHAT


def ok_mark(ok: bool | None) -> str:
    return "info" if ok is None else "met" if ok else "MISSED"


# ------------------------------------------------------------------ the client


@dataclass
class Outcome:
    """What the client got for one request."""

    tag: str
    stream: bool
    kind: str = "lost"  # ok | error_event | http_error | silent | bad_body | lost
    status: int | None = None
    code: str | None = None  # the error code of an HTTP error or of an error event
    detail: str = ""
    chunks: int = 0


def body_for(tag: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "user": tag,
    }
    if stream:
        body["stream"] = True
    return body


async def one_request(session: aiohttp.ClientSession, base: str, key: str, tag: str, stream: bool) -> Outcome:
    out = Outcome(tag, stream)
    headers = {"authorization": f"Bearer {key}"}
    try:
        async with session.post(f"{base}/v1/chat/completions", json=body_for(tag, stream), headers=headers) as resp:
            out.status = resp.status
            if resp.status != 200:
                raw = await resp.read()
                out.kind = "http_error"
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    out.code = json.loads(raw)["error"].get("code")
                return out
            if not stream:
                raw = await resp.read()
                try:
                    data = json.loads(raw)
                    out.kind = "ok" if isinstance(data["choices"][0]["message"], dict) else "bad_body"
                except (ValueError, KeyError, IndexError, TypeError):
                    out.kind, out.detail = "bad_body", raw[:200].decode(errors="replace")
                return out
            done = error = False
            async for line in resp.content:
                text = line.strip()
                if not text.startswith(b"data:"):
                    continue
                payload = text[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                try:
                    event = json.loads(payload)
                except ValueError:
                    out.detail = f"unreadable event {payload[:100]!r}"
                    continue
                if isinstance(event, dict) and "error" in event:
                    error = True
                    err = event["error"]
                    out.code = err.get("code") if isinstance(err, dict) else str(err)
                else:
                    out.chunks += 1
            out.kind = "error_event" if error else "ok" if done else "silent"
            return out
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
        out.kind, out.detail = "lost", f"{type(exc).__name__}: {exc}"[:200]
        return out


async def run_load(
    base: str, key: str, plan: list[tuple[str, bool]], concurrency: int, deadline_s: float
) -> list[Outcome]:
    """Send ``plan`` (tag, stream) ``concurrency`` at a time; requests still running at the deadline are lost."""
    outcomes: dict[str, Outcome] = {
        tag: Outcome(tag, stream, detail="not finished by the deadline") for tag, stream in plan
    }
    queue = collections.deque(plan)
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def worker() -> None:
            while queue:
                tag, stream = queue.popleft()
                outcomes[tag] = await one_request(session, base, key, tag, stream)

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        _, pending = await asyncio.wait(workers, timeout=deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return [outcomes[tag] for tag, _ in plan]


async def admin(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.request(method, base + path, json=body, headers=headers) as resp,
    ):
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")


async def new_key(base: str, budget_usd: float) -> tuple[str, str]:
    status, data = await admin(base, "POST", "/admin/keys", {"alias": "fault-soak", "max_budget_usd": budget_usd})
    if status != 201:
        raise RuntimeError(f"POST /admin/keys: HTTP {status}: {data}")
    return str(data["key"]), str(data["id"])


async def overshoot_metric(base: str) -> str:
    """The ``polyroute_budget_overshoot_usd_total`` lines of /metrics (or why there are none)."""
    status, text = await admin(base, "GET", "/metrics")
    if status != 200 or not isinstance(text, str):
        return f"/metrics: HTTP {status}"
    lines = [ln for ln in text.splitlines() if ln.startswith("polyroute_budget_overshoot")]
    return "; ".join(lines) or "no polyroute_budget_overshoot_* series exported"


# ------------------------------------------------------------------ the proxy and its store


def proxy_config(upstream_url: str, db: Path) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": ALIAS,
                "params": {"model": f"openai/{name}", "api_base": f"{upstream_url}/v1", "api_key": UPSTREAM_KEY},
            }
            for name in DEPLOYMENTS
        ],
        "router_settings": {"num_retries": NUM_RETRIES},
        "pricing": [
            {"model": f"openai/{name}", "input_per_million": PRICE_IN, "output_per_million": PRICE_OUT}
            for name in DEPLOYMENTS
        ],
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{db}"},
    }


def start_proxy(config_path: Path, tmp: Path, name: str) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "router.cli",
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
        "--shutdown-timeout",
        "10",
    ]
    server = Server(name, argv, port=port, health="/health", log_dir=tmp, cwd=REPO)
    server.wait_ready(60)
    return server


@dataclass
class StoreFacts:
    """What the SQLite store holds for one key, read after the proxy stopped."""

    tables: list[str]
    spend_columns: list[str]
    rows: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    with_provider: int = 0
    cost_usd: float = 0.0
    tokens: tuple[int, int] = (0, 0)
    in_doubt_column: str | None = None
    in_doubt: int = 0
    in_doubt_usd: float = 0.0
    failed_served: int = 0  # rows that name a provider but did not end with 200 (streams ended by an error event)
    failed_served_usd: float = 0.0
    by_outcome: dict[str, int] = field(default_factory=dict)
    open_reservations: int = 0  # every budget
    open_reserved_usd: float = 0.0
    settled_usd: float | None = None  # budget_spend of the key's budget
    reservation_columns: list[str] = field(default_factory=list)


def _columns(conn: sqlite3.Connection, table_name: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table_name})")]


def read_store(db: Path, key_id: str) -> StoreFacts:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        facts = StoreFacts(tables, _columns(conn, "spend") if "spend" in tables else [])
        if "spend" in tables:
            where = "WHERE key_id = ?"
            facts.rows = conn.execute(f"SELECT COUNT(*) FROM spend {where}", (key_id,)).fetchone()[0]
            facts.by_status = dict(
                conn.execute(
                    f"SELECT status, COUNT(*) FROM spend {where} GROUP BY status ORDER BY status", (key_id,)
                ).fetchall()
            )
            facts.with_provider = conn.execute(
                f"SELECT COUNT(*) FROM spend {where} AND provider IS NOT NULL", (key_id,)
            ).fetchone()[0]
            pico, prompt, completion = conn.execute(
                "SELECT COALESCE(SUM(cost_pico), 0), COALESCE(SUM(prompt_tokens), 0), "
                f"COALESCE(SUM(completion_tokens), 0) FROM spend {where}",
                (key_id,),
            ).fetchone()
            facts.cost_usd, facts.tokens = pico / 1e12, (prompt, completion)
            count, pico = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM(cost_pico), 0) FROM spend {where} AND provider IS NOT NULL "
                "AND status != 200",
                (key_id,),
            ).fetchone()
            facts.failed_served, facts.failed_served_usd = count, pico / 1e12
            if "outcome" in facts.spend_columns:  # ok / failed / in_doubt (store migration 2)
                facts.in_doubt_column = "outcome = 'in_doubt'"
                facts.by_outcome = dict(
                    conn.execute(
                        f"SELECT outcome, COUNT(*) FROM spend {where} GROUP BY outcome ORDER BY outcome", (key_id,)
                    ).fetchall()
                )
                count, pico = conn.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(cost_pico), 0) FROM spend {where} AND outcome = 'in_doubt'",
                    (key_id,),
                ).fetchone()
                facts.in_doubt, facts.in_doubt_usd = count, pico / 1e12
            else:  # any other way a later store may mark them
                doubt = [c for c in facts.spend_columns if "doubt" in c.lower()]
                if doubt:
                    facts.in_doubt_column = doubt[0]
                    facts.in_doubt = conn.execute(
                        f"SELECT COUNT(*) FROM spend {where} AND {doubt[0]} IS NOT NULL AND {doubt[0]} != 0", (key_id,)
                    ).fetchone()[0]
        if "budget_reservations" in tables:
            facts.reservation_columns = _columns(conn, "budget_reservations")
            count, amount = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM budget_reservations"
            ).fetchone()
            facts.open_reservations, facts.open_reserved_usd = count, amount / 1e12
        if "budget_spend" in tables:
            row = conn.execute("SELECT spent FROM budget_spend WHERE budget_id = ?", (f"key:{key_id}",)).fetchone()
            facts.settled_usd = None if row is None else row[0] / 1e12
        return facts
    finally:
        conn.close()


def open_reservations_now(db: Path) -> tuple[int, float]:
    """(count, USD) of open reservations, read while the proxy runs (WAL: readers do not block it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        count, amount = conn.execute("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM budget_reservations").fetchone()
        return int(count), amount / 1e12
    except sqlite3.Error:
        return 0, 0.0
    finally:
        conn.close()


def spend_rows_now(db: Path, key_id: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM spend WHERE key_id = ?", (key_id,)).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def log_findings(server: Server) -> list[str]:
    """ERROR lines and traceback ends in a proxy's log, deduplicated (first 6)."""
    text = server.log_path.read_text(errors="replace")
    found: collections.Counter[str] = collections.Counter()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " ERROR " in line or " CRITICAL " in line:
            found[re.sub(r"^\S+ \S+ ", "", line)[:160]] += 1
        elif line.startswith("Traceback"):
            tail = next((ln for ln in lines[i + 1 :] if ln and not ln.startswith((" ", "Traceback"))), "?")
            found["traceback: " + tail[:150]] += 1
    return [f"{n}x {msg}" for msg, n in found.most_common(6)]


# ------------------------------------------------------------------ figures


def upstream_summary(events: list[FaultEvent]) -> dict[str, Any]:
    tags = {e.tag for e in events if e.tag}
    return {
        "attempts": len(events),
        "tags": tags,
        "faults": collections.Counter(e.fault or "none" for e in events),
        "complete": sum(e.complete for e in events),
        "billable": sum(e.billable for e in events),
        "models": collections.Counter(e.model for e in events),
    }


def print_targets(rows: list[tuple[str, str, str, bool | None]]) -> None:
    table(["figure", "measured", "target", "verdict"], [[a, b, c, ok_mark(ok)] for a, b, c, ok in rows])


def expected_cost_usd() -> float:
    """What one fully answered request costs at the fake upstream's own count (words in, pieces out)."""
    prompt_tokens = len(PROMPT.split())
    completion = min(MAX_TOKENS, len(("Echo: " + PROMPT).split()))
    return (prompt_tokens * PRICE_IN + completion * PRICE_OUT) / 1e6


@contextlib.contextmanager
def faulty_upstream(**kw: Any) -> Iterator[FaultyUpstream]:
    server = FaultyUpstream(seed=SEED, **kw)
    server.record = False  # its own event log is enough; no request bodies kept
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scenario_a(runner: asyncio.Runner, tmp: Path, requests: int) -> None:
    budget = round(0.9 * requests * expected_cost_usd(), 6)
    heading(
        f"Scenario A - faults: {requests} requests, {CONCURRENCY} at a time, half streamed; upstream fails "
        f"{FAULT_RATE:.0%} (429 / 500 / 502 / 503 / reset / cut); 2 deployments, num_retries {NUM_RETRIES}; "
        f"key budget ${budget:.6f} (~90% of the requests' cost)"
    )
    db = tmp / "a.db"
    with faulty_upstream(fault_rate=FAULT_RATE) as up:
        config_path = tmp / "a.yaml"
        config_path.write_text(json.dumps(proxy_config(up.url, db), indent=2))
        server = start_proxy(config_path, tmp, "polyroute (A)")
        try:
            key, key_id = runner.run(new_key(server.base, budget))
            rng = random.Random(SEED)
            plan = [(f"a-{i:05d}", rng.random() < 0.5) for i in range(requests)]
            started = time.monotonic()
            outcomes = runner.run(run_load(server.base, key, plan, CONCURRENCY, deadline_s=150))
            elapsed = time.monotonic() - started
            overshoot = runner.run(overshoot_metric(server.base))
        finally:
            server.stop()
        findings = log_findings(server)
        events = up.snapshot()
    facts = read_store(db, key_id)
    report(outcomes, events, facts, budget, elapsed, overshoot, findings, crash=False)


def report(
    outcomes: list[Outcome],
    events: list[FaultEvent],
    facts: StoreFacts,
    budget: float,
    elapsed: float,
    overshoot: str,
    findings: list[str],
    *,
    crash: bool,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    up = upstream_summary(events)
    kinds = collections.Counter(o.kind for o in outcomes)
    reached = {o.tag for o in outcomes} & up["tags"]
    not_reached = [o for o in outcomes if o.tag not in up["tags"]]
    refused_answered = [o for o in not_reached if o.kind != "lost"]  # the proxy answered without an upstream call
    lost = kinds["lost"]
    silent = kinds["silent"]
    streams = [o for o in outcomes if o.stream]
    print(f"client: {len(outcomes)} requests ({len(streams)} streamed) in {elapsed:.1f} s")
    table(
        ["client outcome", "requests", "of which streamed", "detail"],
        [
            [kind, n, sum(o.stream for o in outcomes if o.kind == kind), _details(outcomes, kind)]
            for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])
        ],
    )
    faults = up["faults"]
    print(
        f"upstream: {up['attempts']} attempts for {len(up['tags'])} client requests; "
        + ", ".join(f"{k} {faults[k]}" for k in sorted(faults))
        + f"; {up['complete']} answered whole, {up['billable']} billable (whole or cut answers); by deployment "
        + ", ".join(f"{m} {n}" for m, n in sorted(up["models"].items(), key=lambda kv: str(kv[0])))
    )
    status_text = ", ".join(f"{s}: {n}" for s, n in facts.by_status.items())
    outcome_text = ", ".join(f"{o} {n}" for o, n in facts.by_outcome.items())
    print(
        f"store: {facts.rows} spend rows for the key (status {status_text}"
        + (f"; outcome {outcome_text}" if outcome_text else "")
        + f"); {facts.with_provider} name a provider; "
        f"cost ${facts.cost_usd:.6f}, tokens {facts.tokens[0]} in / {facts.tokens[1]} out"
    )
    extra_columns = [c for c in facts.spend_columns if c not in KNOWN_SPEND_COLUMNS]
    doubt = "none"
    if facts.in_doubt_column is not None:
        doubt = f"{facts.in_doubt_column} ({facts.in_doubt} rows in doubt, ${facts.in_doubt_usd:.6f})"
    reservation_columns = ", ".join(facts.reservation_columns) or "(no table)"
    print(
        f"store schema: spend columns beyond the original ones: {', '.join(extra_columns) or 'none'}; "
        f"in-doubt marker: {doubt}; budget_reservations columns: {reservation_columns}; "
        f"tables: {', '.join(facts.tables)}"
    )
    for name, text in extra or []:
        print(f"{name}: {text}")
    print(f"metrics: {overshoot}")
    if findings:
        print("proxy log findings: " + " | ".join(findings))
    else:
        print("proxy log findings: no ERROR line, no traceback")
    heading("Scenario B - figures" if crash else "Scenario A - figures")
    matched = facts.rows - len(refused_answered)
    settled = facts.settled_usd or 0.0
    rows: list[tuple[str, str, str, bool | None]] = []
    if crash:
        rows.append(
            ("requests lost (no HTTP response / transport error)", f"{lost} (cut by the kill: expected)", "-", None)
        )
    else:
        rows.append(("requests lost (no HTTP response / transport error)", str(lost), "0", lost == 0))
        rows.append(("streams ended silently (200, no [DONE], no error event)", str(silent), "0", silent == 0))
    how = []
    if refused_answered:
        how.append(f"{facts.rows} rows - {len(refused_answered)} refused before any upstream call")
    if crash and facts.in_doubt_column is not None:
        how.append(f"{facts.rows - facts.in_doubt} served + {facts.in_doubt} in doubt")
    rows.append(
        (
            "spend records vs client requests the upstream saw",
            f"{matched} vs {len(reached)}" + (f" ({'; '.join(how)})" if how else ""),
            "records == upstream-seen",
            matched == len(reached),
        )
    )
    rows.append(
        (
            "reservations open at the end",
            f"{facts.open_reservations} (${facts.open_reserved_usd:.6f})",
            "0",
            facts.open_reservations == 0,
        )
    )
    rows.append(
        (
            "settled spend vs budget (budget_spend)",
            f"${settled:.6f} of ${budget:.6f} ({settled / budget:.1%})",
            "settled <= budget",
            settled <= budget + 1e-12,
        )
    )
    print_targets(rows)
    info = [
        f"spend rows' cost ${facts.cost_usd:.6f} vs settled ${settled:.6f}"
        + (" (equal)" if abs(facts.cost_usd - settled) < 1e-9 else f" (differ by ${settled - facts.cost_usd:+.6f})"),
        f"billable upstream attempts {up['billable']} (answers sent whole or in part) vs rows naming a provider "
        f"{facts.with_provider}; of those rows {facts.failed_served} did not end in 200 (streams ended by an error "
        f"event), cost ${facts.failed_served_usd:.6f}",
    ]
    cut_json = sum(1 for e in events if e.fault == "cut" and not e.stream)
    if cut_json:
        info.append(
            f"{cut_json} JSON answers were cut mid-body by the upstream (billable there; the proxy retries "
            "them, and the spend row is the retry's)"
        )
    if not crash:
        info.append(
            f"not reached: {len(not_reached)} requests never reached the upstream ("
            + ", ".join(
                f"{k} {n}"
                for k, n in collections.Counter(
                    f"{o.status} {o.code}" if o.kind == "http_error" else o.kind for o in not_reached
                ).items()
            )
            + ")"
        )
    for line in info:
        print(f"INFO {line}")


def _details(outcomes: list[Outcome], kind: str) -> str:
    counts = collections.Counter(
        f"{o.status} {o.code}" if kind == "http_error" else o.code or "" if kind == "error_event" else o.detail[:60]
        for o in outcomes
        if o.kind == kind
    )
    return "; ".join(f"{k} x{n}" if k else f"x{n}" for k, n in counts.most_common(6)) if kind != "ok" else ""


def scenario_b(runner: asyncio.Runner, tmp: Path) -> None:
    budget = round(130 * expected_cost_usd(), 6)  # ~ warm-up + 1.6x what 50 reservations hold
    heading(
        f"Scenario B - crash: {CRASH_IN_FLIGHT} slow requests in flight (JSON held 20 s, streams 1 frame/s), "
        f"kill -9, restart on the same store, wait 4 s, SIGTERM; key budget ${budget:.6f}"
    )
    db = tmp / "b.db"
    extra: list[tuple[str, str]] = []
    with faulty_upstream(fault_rate=0.0) as up:
        config_path = tmp / "b.yaml"
        config_path.write_text(json.dumps(proxy_config(up.url, db), indent=2))
        first = start_proxy(config_path, tmp, "polyroute (B1)")
        second: Server | None = None
        try:
            key, key_id = runner.run(new_key(first.base, budget))
            # Warm up until both deployments reported usage (budgeted calls to a new deployment go one at a time).
            warm: list[Outcome] = []
            for i in range(30):
                warm += runner.run(run_load(first.base, key, [(f"w-{i:03d}", i % 2 == 1)], 1, deadline_s=30))
                if i >= 5 and len({e.model for e in up.snapshot()}) == len(DEPLOYMENTS):
                    break
            time.sleep(1.5)  # the spend writer flushes every second
            rows_before = spend_rows_now(db, key_id)
            up.answer_delay, up.chunk_delay = 20.0, 1.0
            rng = random.Random(SEED + 1)
            plan = [(f"b-{i:03d}", rng.random() < 0.5) for i in range(CRASH_IN_FLIGHT)]

            async def crash() -> tuple[list[Outcome], bool, tuple[int, float]]:
                load = asyncio.ensure_future(run_load(first.base, key, plan, CRASH_IN_FLIGHT, deadline_s=60))
                seen = await asyncio.to_thread(up.wait_in_flight, CRASH_IN_FLIGHT, 20.0)
                await asyncio.sleep(0.5)  # streams send a frame or two
                reserved = open_reservations_now(db)
                first.proc.kill()  # kill -9
                await asyncio.to_thread(first.proc.wait)
                return await load, seen, reserved

            crash_started = time.monotonic()
            outcomes, all_in_flight, reserved_at_kill = runner.run(crash())
            killed_at = time.monotonic()
            in_flight_at_kill = sum(1 for e in up.snapshot() if e.tag and e.tag.startswith("b-"))
            extra.append(
                (
                    "at the kill",
                    f"{in_flight_at_kill} requests at the upstream "
                    f"({'all' if all_in_flight else 'NOT all'} {CRASH_IN_FLIGHT} in flight), "
                    f"{reserved_at_kill[0]} reservations open (${reserved_at_kill[1]:.6f}), "
                    f"{rows_before} spend rows written (warm-up: {len(warm)} requests)",
                )
            )
            first.stop()
            up.answer_delay, up.chunk_delay = 0.0, 0.0
            second = start_proxy(config_path, tmp, "polyroute (B2)")
            extra.append(("restart", f"ready {time.monotonic() - killed_at:.1f} s after the kill"))
            time.sleep(4)
            status, spend = runner.run(admin(second.base, "GET", "/admin/spend?group_by=key"))
            extra.append(("GET /admin/spend after restart", f"HTTP {status}: {json.dumps(spend)[:400]}"))
            overshoot = runner.run(overshoot_metric(second.base))
        finally:
            first.stop()
            if second is not None:
                second.stop()
        findings = log_findings(first) + ([f"(restart) {f}" for f in log_findings(second)] if second else [])
        events = up.snapshot()
        held = sum(1 for e in events if e.status is None and e.fault is None)
        extra.append(("upstream at the end", f"{held} answers still held (never sent)"))
    beside = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in tmp.iterdir()
        if not p.name.startswith("a") and p.suffix not in (".log", ".yaml")
    )
    extra.append(("files beside the store", ", ".join(beside)))
    facts = read_store(db, key_id)
    report(
        warm + outcomes, events, facts, budget, killed_at - crash_started, overshoot, findings, crash=True, extra=extra
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    requests = 500 if args.quick else 2000
    runner, loop_name = event_loop_runner()
    print(environment_line(loop_name))
    started = time.monotonic()
    broken: list[str] = []
    with sigterm_stops(), runner, tempfile.TemporaryDirectory(prefix="polyroute-soak-") as tmp_name:
        tmp = Path(tmp_name)
        for name, scenario in (
            ("A", lambda: scenario_a(runner, tmp, requests)),
            ("B", lambda: scenario_b(runner, tmp)),
        ):
            try:
                scenario()
            except (ServerFailed, RuntimeError, OSError, sqlite3.Error) as exc:  # the harness failed, not a target
                broken.append(name)
                print(f"ERROR scenario {name} could not run: {type(exc).__name__}: {exc}")
    took = time.monotonic() - started
    if broken:
        sys.exit(f"\nfault soak: scenario {', '.join(broken)} could not run ({took:.0f} s)")
    print(f"\nfault soak done in {took:.0f} s (a measurement: exit 0 whatever the figures are)")


if __name__ == "__main__":
    main()
