"""Batch jobs on Ray (``--engine ray``): Ray Data workers run the rows, the budget lives in Redis, the
driver alone writes the output and the journal.

One local Ray (2 CPUs, no dashboard) serves the whole module; the CLI tests join it by its address.
Every run proves its rows went through at least two worker processes (the journal records which
worker ran each row), every input row is in the output exactly once, and the journal's spend is the
sum of the output's costs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.batch import EXIT_BUDGET, EXIT_DONE, EXIT_FAILED_ROWS, EXIT_INTERRUPTED, parse_batch_config
from router.batch.journal import journal_path, read_state
from router.batch.ray_engine import require_ray, run_batch_ray
from router.proxy.config import ConfigError
from tests.cli import REPO, polyroute_argv
from tests.services import REDIS_URL, PrivateRedis, require_redis, unavailable
from tests.test_batch import PRICES, outputs, pico, sent_rows, write_rows
from tests.test_batch_kill import (
    kill_9_once,
    recorded_rows,
    requested,
    resume_argv,
    write_config,
    write_input,
)
from tests.upstreams import OpenAICompatUpstream

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray for the module; its address, for CLI processes to join."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        unavailable("ray with Ray Data (pip install 'polyroute[ray]')", e)
    require_redis()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def config(server: OpenAICompatUpstream, prefix: str) -> Any:
    params = {"api_base": server.base_url, "api_key": "sk-test"}
    return parse_batch_config(
        {
            "candidates": [
                {"name": "cheap", "model": "openai/cheap", "params": params},
                {"name": "dear", "model": "openai/dear", "params": params, "fallback_only": True},
            ],
            "pricing": PRICES,
            "defaults": {"max_tokens": 20},
            "redis_url": REDIS_URL,
            "redis_prefix": prefix,
        }
    )


def ray_job(tmp_path: Path, oai: OpenAICompatUpstream, prefix: str, rows: int) -> tuple[Path, Path, Any]:
    """A job of `rows` rows on the Ray engine: its input, its output path, its config."""
    return write_rows(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", config(oai, prefix)


def workers_of(out: Path) -> Counter[str]:
    """Rows per worker (host:pid), from the journal's records."""
    recs = [orjson.loads(line) for line in journal_path(out).read_bytes().splitlines()]
    return Counter(r["w"] for r in recs if "i" in r and "w" in r)  # bad lines are recorded by the driver


def redis_keys(prefix: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(f"{prefix}:*"))
    finally:
        client.close()


def key_ttls(prefix: str) -> dict[bytes, int]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return {key: int(client.ttl(key)) for key in client.scan_iter(f"{prefix}:*")}
    finally:
        client.close()


def exactly_once(out: Path, rows: int) -> list[dict[str, Any]]:
    lines = outputs(out)
    assert sorted(r["custom_id"] for r in lines) == sorted(f"r{i}" for i in range(rows))
    state = read_state(journal_path(out))
    assert state.ok == rows and state.torn_bytes == 0
    assert state.spent_pico == sum(pico(r["cost_usd"]) for r in lines)
    return lines


def test_2000_rows_run_on_two_workers_exactly_once(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, tmp_path: Path
) -> None:
    src = write_rows(tmp_path / "in.jsonl", 2000)
    with src.open("a") as f:  # line 2001: not JSON; line 2002: r7 again
        f.write('{"custom_id": "broken",\n')
        f.write(json.dumps({"custom_id": "r7", "body": {"messages": [{"role": "user", "content": "row x"}]}}) + "\n")
    out = tmp_path / "out.jsonl"
    result = run_batch_ray(src, out, config(oai, prefix), budget_usd=1, concurrency=64, workers=2)
    assert result.exit_code == 4 and (result.ok, result.failed) == (2000, 2), result  # 4: some rows failed
    lines = outputs(out)
    bad = {r["custom_id"]: r["error"]["message"] for r in lines if r["error"]}
    assert set(bad) == {"line-2001", "r7"}, bad
    assert "line 2001" in bad["line-2001"] and "line 2002" in bad["r7"] and "already used" in bad["r7"]
    assert sorted(r["custom_id"] for r in lines if not r["error"]) == sorted(f"r{i}" for i in range(2000))
    state = read_state(journal_path(out))
    assert state.spent_pico == sum(pico(r["cost_usd"]) for r in lines) > 0
    assert sent_rows(oai) == Counter({str(i): 1 for i in range(2000)})  # each row reached the upstream once
    by_worker = workers_of(out)
    assert len(by_worker) >= 2 and sum(by_worker.values()) == 2000, by_worker  # bad lines: the driver's
    assert f":{os.getpid()}" not in " ".join(by_worker)  # worker processes, not this driver
    assert result.workers == dict(by_worker)
    assert redis_keys(prefix) == []  # the run's budget and flags are gone


def test_a_budget_holds_across_workers_on_2000_rows_then_resume_finishes(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, tmp_path: Path
) -> None:
    src, out, cfg = ray_job(tmp_path, oai, prefix, 2000)
    # A row's worst case is ~$0.00006 (all fallbacks: ~$0.0007); $0.04 covers a part of the 2,000 rows.
    budget = 0.04
    first = run_batch_ray(src, out, cfg, budget_usd=budget, concurrency=64, workers=2)
    assert first.exit_code == EXIT_BUDGET and first.reason == "budget", first
    state = read_state(journal_path(out))
    assert 0 < state.ok < 2000 and state.spent_pico <= budget * 10**12  # settled spend within the cap
    assert len(first.workers) >= 2, first.workers  # both workers reserved from the one budget
    assert sum(sent_rows(oai).values()) == state.ok  # every row sent was recorded; refused rows never left
    assert first.rows_left == 2000 - state.ok and first.needed_expected_usd and first.needed_max_usd
    assert first.needed_expected_usd <= first.needed_max_usd
    assert state.last_end is not None and state.last_end["reason"] == "budget"
    second = run_batch_ray(
        src, out, cfg, budget_usd=budget + first.needed_max_usd, concurrency=64, workers=2, resume=True
    )
    assert second.exit_code == EXIT_DONE and second.ok == 2000, second
    lines = exactly_once(out, 2000)
    assert sum(pico(r["cost_usd"]) for r in lines) <= (budget + first.needed_max_usd) * 10**12
    assert max(sent_rows(oai).values()) == 1  # no row was sent twice
    assert len(workers_of(out)) >= 2
    assert redis_keys(prefix) == []


def test_resume_on_ray_keeps_the_jobs_budget_unless_raised(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, tmp_path: Path
) -> None:
    src, out, cfg = ray_job(tmp_path, oai, prefix, 300)
    budget = 0.003  # a part of the 300 rows
    first = run_batch_ray(src, out, cfg, budget_usd=budget, concurrency=16, workers=2)
    assert first.exit_code == EXIT_BUDGET and first.budget_usd == budget, first
    notes: list[str] = []
    again = run_batch_ray(src, out, cfg, resume=True, concurrency=16, workers=2, notice=notes.append)  # no budget_usd
    assert again.exit_code == EXIT_BUDGET and again.budget_usd == budget, again
    assert notes and "keeps its budget of $0.003" in notes[-1]
    state = read_state(journal_path(out))
    assert state.ok < 300 and state.spent_pico <= budget * 10**12  # total settled spend within the job's cap
    assert sum(sent_rows(oai).values()) == state.ok  # the resumed run sent nothing it could not pay for
    done = run_batch_ray(src, out, cfg, budget_usd=1, resume=True, concurrency=16, workers=2, notice=notes.append)
    assert done.exit_code == EXIT_DONE and done.budget_usd == 1, done
    assert "budget raised from $0.003 to $1.00" in notes[-1]
    exactly_once(out, 300)
    assert max(sent_rows(oai).values()) == 1
    assert redis_keys(prefix) == []


def test_a_worker_killed_mid_run_stops_the_run_then_resume_finishes(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, tmp_path: Path
) -> None:
    rows = 400
    oai.latency = 0.2  # every worker holds blocks in flight until the last rows
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    killed: list[str] = []

    def kill_a_worker() -> None:  # once rows are being recorded, SIGKILL the process of one worker
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if journal_path(out).exists() and (by_worker := workers_of(out)):
                name = next(iter(by_worker))
                os.kill(int(name.rsplit(":", 1)[1]), signal.SIGKILL)
                killed.append(name)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    cfg = config(oai, prefix)
    first = run_batch_ray(src, out, cfg, budget_usd=1, concurrency=32, workers=2)
    killer.join()
    assert killed, "no worker was killed"
    assert first.exit_code == EXIT_INTERRUPTED and first.worker_error, first  # no endless block retries
    state = read_state(journal_path(out))
    assert 0 < state.ok < rows
    assert sum(sent_rows(oai).values()) < rows + 64  # not retried on and on
    import ray

    deadline = time.monotonic() + 30  # the given-up run's workers exit: their CPUs are free for the next run
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2
    second = run_batch_ray(src, out, cfg, budget_usd=1, concurrency=32, workers=2, resume=True)
    assert second.exit_code == EXIT_DONE and second.ok == rows, second
    exactly_once(out, rows)
    assert set(sent_rows(oai)) == {str(i) for i in range(rows)}  # rows sent but not handed back went again
    # The stopped run's keys were dropped by the next one; the surviving worker of the stopped run may
    # have settled its last rows after that: what it wrote then expires.
    assert all(ttl > 0 for ttl in key_ttls(prefix).values()), key_ttls(prefix)


def test_redis_lost_mid_run_stops_sending_then_resume_finishes(
    ray_address: str, oai: OpenAICompatUpstream, tmp_path: Path
) -> None:
    rows = 400
    oai.latency = 0.03
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    server = PrivateRedis().start()
    try:
        cfg = parse_batch_config(
            {
                "candidates": [
                    {
                        "name": "cheap",
                        "model": "openai/cheap",
                        "params": {"api_base": oai.base_url, "api_key": "sk-test"},
                    }
                ],
                "pricing": PRICES,
                "defaults": {"max_tokens": 20},
                "redis_url": server.url,
            }
        )

        def stop_redis() -> None:  # once rows are being recorded
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if journal_path(out).exists() and len(workers_of(out)) >= 1 and sum(workers_of(out).values()) >= 40:
                    server.stop()
                    return
                time.sleep(0.02)

        stopper = threading.Thread(target=stop_redis)
        stopper.start()
        first = run_batch_ray(src, out, cfg, budget_usd=1, concurrency=32, workers=2)
        stopper.join()
        assert first.exit_code == EXIT_INTERRUPTED and first.redis_lost, first
        state = read_state(journal_path(out))
        assert 40 <= state.ok < rows and first.rows_left == rows - state.ok
        sent = requested(oai)
        assert sum(sent.values()) == state.ok  # nothing was sent that could not be reserved
        server.start()  # back (empty): the next run seeds its budget from the journal
        second = run_batch_ray(src, out, cfg, budget_usd=1, concurrency=32, workers=2, resume=True)
        assert second.exit_code == EXIT_DONE and second.ok == rows, second
        exactly_once(out, rows)
        assert max(requested(oai).values()) == 1  # no recorded row was sent again
    finally:
        server.stop()


def test_failed_rows_are_recorded_then_retried_on_ray(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, tmp_path: Path
) -> None:
    src = write_rows(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    oai.fail_rate = 0.3
    cfg = parse_batch_config(
        {
            "candidates": [
                {"name": "cheap", "model": "openai/cheap", "params": {"api_base": oai.base_url, "api_key": "sk-test"}}
            ],
            "pricing": PRICES,
            "defaults": {"max_tokens": 20},
            "router_settings": {"num_retries": 0},
            "redis_url": REDIS_URL,
            "redis_prefix": prefix,
        }
    )
    first = run_batch_ray(src, out, cfg, budget_usd=1, concurrency=32, workers=2)
    assert first.exit_code == EXIT_FAILED_ROWS and first.failed == oai.failures > 0, first
    assert {r["error"]["code"] for r in outputs(out) if r["error"]} == {"service_unavailable_error"}
    oai.fail_rate = 0.0
    retried = run_batch_ray(src, out, cfg, budget_usd=1, concurrency=32, workers=2, retry_failed=True)
    assert retried.exit_code == EXIT_DONE and (retried.ok, retried.failed) == (200, 0), retried
    exactly_once(out, 200)
    assert sum(sent_rows(oai).values()) == 200 + first.failed  # only the failed rows went again
    assert redis_keys(prefix) == []


def test_ctrl_c_lets_rows_in_flight_finish_then_resume(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, cli_job: Path
) -> None:
    rows, tmp_path, out = CLI_ROWS, cli_job, cli_job / "out.jsonl"
    proc = start_cli(tmp_path, ray_address)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not recorded_rows(out):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "continue with --resume" in err.decode()
    done = recorded_rows(out)
    assert 0 < len(done) < rows
    assert sum(requested(oai).values()) == len(done)  # every row sent was recorded: in-flight rows finished
    resume_to_the_end(tmp_path, ray_address, rows)
    assert max(requested(oai).values()) == 1
    assert redis_keys(prefix) == []


def test_more_workers_than_the_cluster_has_cpus_is_refused(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, tmp_path: Path
) -> None:
    from providers.errors import InvalidRequestArgumentError

    src = write_rows(tmp_path / "in.jsonl", 3)
    with pytest.raises(InvalidRequestArgumentError, match=r"--ray-workers 3 needs 3 CPUs .* has 2"):
        run_batch_ray(src, tmp_path / "out.jsonl", config(oai, prefix), workers=3)
    assert not (tmp_path / "out.jsonl").exists() and sum(sent_rows(oai).values()) == 0


def write_cli_config(path: Path, server: OpenAICompatUpstream, prefix: str) -> None:
    write_config(path, server)
    with path.open("a") as f:
        f.write(f"redis_url: '{REDIS_URL}'\nredis_prefix: {prefix}\n")


CLI_ROWS = 600


@pytest.fixture
def cli_job(oai: OpenAICompatUpstream, prefix: str, tmp_path: Path) -> Path:
    """A folder with CLI_ROWS rows (in.jsonl) and a config (b.yaml) for the CLI; the upstream answers in 50 ms."""
    oai.latency = 0.05
    write_input(tmp_path / "in.jsonl", CLI_ROWS)
    write_cli_config(tmp_path / "b.yaml", oai, prefix)
    return tmp_path


def resume_to_the_end(tmp: Path, address: str, rows: int) -> tuple[str, list[dict[str, Any]]]:
    """Resume the CLI job in tmp to the end; it exits 0 with every row recorded exactly once: its stderr, the rows."""
    final = start_cli(tmp, address)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    return err.decode(), exactly_once(tmp / "out.jsonl", rows)


def start_cli(tmp: Path, address: str, *extra: str) -> subprocess.Popen[bytes]:
    cmd = resume_argv(tmp, "--budget-usd", "10", "--engine", "ray", "--ray-address", address, *extra)
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_of_the_driver_then_resume_exactly_once(
    ray_address: str, oai: OpenAICompatUpstream, prefix: str, cli_job: Path
) -> None:
    rows, tmp_path, out = CLI_ROWS, cli_job, cli_job / "out.jsonl"
    rng = random.Random(20261122)
    kills = 0
    for _ in range(2):  # killed once rows are being recorded
        if not kill_9_once(
            out, oai, lambda: start_cli(tmp_path, ray_address), then=rng.uniform(0.0, 0.3), grown=2000, timeout=60
        ):
            break
        kills += 1
    assert kills >= 1
    done_before, sent_before = recorded_rows(out), requested(oai)
    assert 0 < len(done_before) < rows
    err, lines = resume_to_the_end(tmp_path, ray_address, rows)
    assert "rows by Ray worker this run" in err
    assert not any(r["error"] for r in lines)
    counts = requested(oai)
    assert set(counts) == set(range(rows))
    assert all(counts[row] == sent_before[row] for row in done_before)  # the resume sent no recorded row
    assert len(workers_of(out)) >= 2
    assert redis_keys(prefix) == []  # the killed runs' reservations and flags were dropped by the next run


# ---------------------------------------------------------------- errors before anything runs (exit 2)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        polyroute_argv("batch", "run", *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_or_unreachable_redis_and_misplaced_flags_exit_2(ray_address: str, tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 3)
    (tmp_path / "b.yaml").write_text("candidates: [openai/cheap]\n")
    common = [str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "b.yaml"), "--output", str(tmp_path / "o.jsonl")]
    missing = cli(*common, "--engine", "ray")
    assert missing.returncode == 2 and "--redis-url" in missing.stderr and "redis_url:" in missing.stderr
    down = cli(*common, "--engine", "ray", "--redis-url", "redis://:hunter2pw@127.0.0.1:1/0")
    assert down.returncode == 2 and "is unreachable" in down.stderr, down.stderr
    assert "hunter2pw" not in down.stderr
    local = cli(*common, "--ray-address", "auto")
    assert local.returncode == 2 and "only apply with --engine ray" in local.stderr
    for result in (missing, down, local):
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()  # no job was started


def test_without_ray_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    from providers.errors import InvalidRequestArgumentError

    with pytest.raises(InvalidRequestArgumentError, match=r"pip install 'polyroute\[ray\]'"):
        require_ray()


def test_redis_url_in_the_batch_config() -> None:
    base = {"candidates": ["openai/x"]}
    config = parse_batch_config({**base, "redis_url": "redis://:pw@h:6379/0", "redis_prefix": "jobs"})
    assert config.redis_url == "redis://:pw@h:6379/0" and config.redis_prefix == "jobs"
    assert "pw" not in repr(config)
    with pytest.raises(ConfigError, match="redis_url: expected redis://"):
        parse_batch_config({**base, "redis_url": "http://h"})
    with pytest.raises(ConfigError, match="redis_prefix: expected a non-empty word"):
        parse_batch_config({**base, "redis_prefix": "a b"})
    assert json.dumps(parse_batch_config(base).redis_prefix) == '"polyroute"'


def test_only_a_worker_inside_a_ray_actor_may_end_its_process(ray_address: str) -> None:
    # This process is connected to Ray but is its driver: a RowWorker built here (the module's example)
    # must never start the check that ends a given-up run's worker processes.
    import ray

    from router.batch.ray_worker import _in_ray_actor

    assert ray.is_initialized() and not _in_ray_actor()

    @ray.remote
    class Probe:
        def inside(self) -> bool:
            return _in_ray_actor()

    probe = Probe.remote()  # type: ignore[attr-defined]
    try:
        assert ray.get(probe.inside.remote()) is True
    finally:
        ray.kill(probe)
