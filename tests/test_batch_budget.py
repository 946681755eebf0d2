"""A batch job keeps its budget across runs (``polyroute batch run`` as a user runs it, real HTTP).

The budget is recorded in the journal: ``--resume`` and ``--retry-failed`` keep it unless
``--budget-usd`` changes it, and every hint that says how to continue gives a command that keeps it.
Also: ``--dry-run`` exits 2 when no row can be sent, and invalid input lines are not retried.

Rows here (``write_input``) cost $0.000014 each as served and reserve ~$0.000032 (their worst case).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from router.batch.journal import journal_path, read_state
from tests.cli import REPO, batch_run_argv
from tests.test_batch_cli import cli
from tests.test_batch_kill import CHAT, requested, write_config, write_input
from tests.upstreams import OpenAICompatUpstream
from tests.upstreams.base import Reply

CAP = "0.0003"  # ~20 of the rows below


def pico(usd: str | float) -> int:
    return int(Decimal(str(usd)) * 10**12)


def outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Job:
    """``polyroute batch run`` on one input, config and output."""

    def __init__(self, tmp: Path, server: OpenAICompatUpstream, rows: int, config: str | None = None) -> None:
        self.input, self.config, self.out = tmp / "in.jsonl", tmp / "b.yaml", tmp / "o.jsonl"
        write_input(self.input, rows)
        write_config(self.config, server)
        if config:
            with self.config.open("a") as f:
                f.write(config)
        self.server = server

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "run", str(self.input), "--config", str(self.config), "--output", str(self.out), "--progress", "none", *args
        )

    def spent(self) -> int:
        return read_state(journal_path(self.out)).spent_pico

    def sent(self) -> int:
        return sum(requested(self.server).values())


def suggested(stderr: str) -> str:
    """The --budget-usd value of the budget stop's "Continue with:" hint."""
    found = re.search(r"Continue with: --resume --budget-usd ([0-9.]+)", stderr)
    assert found, stderr
    return found.group(1)


# ---------------------------------------------------------------- --resume keeps the budget


def test_resume_without_the_flag_stays_capped_then_the_hinted_command_finishes(
    oai: OpenAICompatUpstream, tmp_path: Path
) -> None:
    job = Job(tmp_path, oai, 60)
    first = job.run("--budget-usd", CAP)
    assert first.returncode == 3, first.stderr
    assert "plain --resume keeps the job's $0.0003" in first.stderr
    done = read_state(journal_path(job.out)).ok
    assert 0 < done < 60 and job.spent() <= pico(CAP) and job.sent() == done
    again = job.run("--resume")  # no --budget-usd: the journal's budget holds
    assert again.returncode == 3, again.stderr
    assert "keeps its budget of $0.0003" in again.stderr and "budget reached" in again.stderr
    state = read_state(journal_path(job.out))
    assert state.ok < 60 and job.spent() <= pico(CAP) and job.sent() == state.ok  # total settled spend within the cap
    hint = suggested(again.stderr)
    finish = job.run("--resume", "--budget-usd", hint)  # the command the hint gives
    assert finish.returncode == 0, finish.stderr
    assert f"budget raised from $0.0003 to ${hint}" in finish.stderr
    rows = outputs(job.out)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(60))
    assert max(requested(oai).values()) == 1 and job.spent() <= pico(hint)
    assert job.spent() == sum(pico(r["cost_usd"]) for r in rows)
    assert "of the job's budget $" + hint in cli("status", str(job.out)).stdout


def test_lowering_the_budget_is_said_and_below_the_spend_is_refused(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    job = Job(tmp_path, oai, 60)
    assert job.run("--budget-usd", CAP).returncode == 3
    spent, sent, size = job.spent(), job.sent(), journal_path(job.out).stat().st_size
    below = job.run("--resume", "--budget-usd", "0.0001")
    assert below.returncode == 2, below.stderr
    assert "below what this job has already spent" in below.stderr and "all its runs together" in below.stderr
    assert f"pass --budget-usd {Decimal(spent) / 10**12 + Decimal('0.0001')}" in below.stderr
    assert journal_path(job.out).stat().st_size == size and job.sent() == sent  # nothing changed, nothing sent
    lower = f"{Decimal(spent) / 10**12 + Decimal('0.00001')}"  # below the cap, above the spend
    lowered = job.run("--resume", "--budget-usd", lower)
    assert lowered.returncode == 3 and f"budget lowered from $0.0003 to ${lower}" in lowered.stderr, lowered.stderr
    kept = job.run("--resume")
    assert kept.returncode == 3 and f"keeps its budget of ${lower}" in kept.stderr, kept.stderr
    assert job.spent() <= pico(lower)


def test_the_configs_budget_starts_a_job_but_does_not_change_a_resumed_one(
    oai: OpenAICompatUpstream, tmp_path: Path
) -> None:
    job = Job(tmp_path, oai, 60, config=f"budget_usd: {CAP}\n")
    assert job.run().returncode == 3
    write_config(job.config, oai)
    with job.config.open("a") as f:
        f.write("budget_usd: 1\n")
    resumed = job.run("--resume")
    assert resumed.returncode == 3, resumed.stderr
    assert "keeps its budget of $0.0003" in resumed.stderr and "applies to new jobs" in resumed.stderr
    assert job.spent() <= pico(CAP)


def test_ctrl_c_then_the_hinted_resume_keeps_the_budget(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    oai.latency = 0.3
    job = Job(tmp_path, oai, 100)
    cap = "0.0006"  # ~40 rows; Ctrl-C comes after a few
    proc = subprocess.Popen(
        batch_run_argv(
            job.input,
            job.config,
            job.out,
            "--concurrency",
            "4",
            "--progress",
            "none",
            "--budget-usd",
            cap,
        ),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not job.sent():
        time.sleep(0.01)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    found = re.search(r"interrupted: continue with (--resume)\b(.*)", err)
    assert found and "keeps the job's budget of $0.0006" in found.group(2), err
    assert 0 < read_state(journal_path(job.out)).ok < 40
    oai.latency = 0.0
    resumed = job.run(found.group(1))  # exactly what the hint says
    assert resumed.returncode == 3, resumed.stderr  # the cap holds: the job stops at it again
    state = read_state(journal_path(job.out))
    assert state.ok < 100 and job.spent() <= pico(cap) and job.sent() == state.ok


# ---------------------------------------------------------------- --retry-failed keeps the budget


def test_retry_failed_keeps_the_budget_unless_raised(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    job = Job(tmp_path, oai, 60, config="router_settings: {num_retries: 0}\n")
    oai.fail_rate = 0.5
    first = job.run("--budget-usd", CAP)
    assert first.returncode in (3, 4), first.stderr
    assert read_state(journal_path(job.out)).failed > 0 and "--resume --retry-failed" in first.stderr
    oai.fail_rate = 0.0
    retried = job.run("--resume", "--retry-failed")  # the hint's command: the budget holds
    assert retried.returncode == 3, retried.stderr
    assert "keeps its budget of $0.0003" in retried.stderr
    state = read_state(journal_path(job.out))
    assert state.ok < 60 and job.spent() <= pico(CAP)
    raised = job.run("--resume", "--retry-failed", "--budget-usd", "1")
    assert raised.returncode == 0, raised.stderr
    assert "budget raised from $0.0003 to $1.00" in raised.stderr
    rows = outputs(job.out)
    assert sorted(r["custom_id"] for r in rows if not r["error"]) == sorted(f"r{i}" for i in range(60))
    assert job.spent() == sum(pico(r["cost_usd"]) for r in rows)


def test_a_job_without_a_budget_gets_the_one_given_on_resume(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    job = Job(tmp_path, oai, 60, config="router_settings: {num_retries: 0}\n")
    oai.fail_rate = 1.0
    first = job.run()
    assert first.returncode == 4 and read_state(journal_path(job.out)).failed == 60, first.stderr
    oai.fail_rate = 0.0
    capped = job.run("--retry-failed", "--budget-usd", CAP)
    assert capped.returncode == 3, capped.stderr
    assert "budget set to $0.0003 for the whole job" in capped.stderr
    assert job.run("--resume").returncode == 3  # and keeps it from then on
    assert job.spent() <= pico(CAP)


def test_a_journal_that_records_no_budget_still_resumes(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    job = Job(tmp_path, oai, 60)
    assert job.run("--budget-usd", CAP).returncode == 3
    path = journal_path(job.out)  # as an older polyroute would have left it: no budget anywhere
    recs = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for rec in recs:
        rec.pop("budget_pico", None)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    resumed = job.run("--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "records no budget" in resumed.stderr and read_state(path).ok == 60


# ---------------------------------------------------------------- --dry-run with nothing to send


def test_dry_run_exits_2_when_no_candidate_can_take_any_row(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    job = Job(tmp_path, oai, 5)
    job.config.write_text(
        "candidates:\n"
        f"  - {{name: tiny, model: openai/cheap, params: {{api_base: '{oai.base_url}', api_key: k, "
        "context_length: 3}}\n"
        "pricing:\n  - {model: openai/cheap, input_per_million: 1, output_per_million: 2}\n"
    )
    dry = job.run("--dry-run", "--budget-usd", "1")
    assert dry.returncode == 2, dry.stderr
    assert "no candidate can take any of the 5 rows" in dry.stderr and "exceeds its context window" in dry.stderr
    assert "add a candidate that fits them" in dry.stderr and "Traceback" not in dry.stderr
    job.input.write_text('{"nope": 1}\n{broken\n')
    bad = job.run("--dry-run")
    assert bad.returncode == 2 and "none of the 2 lines is a valid request" in bad.stderr, bad.stderr
    assert not oai.requests and not job.out.exists()


# ---------------------------------------------------------------- invalid input lines are not retried


def test_invalid_lines_are_not_told_to_retry_nor_sent_again(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    job = Job(tmp_path, oai, 3)
    with job.input.open("a") as f:
        f.write('{"custom_id": "broken",\n[1, 2]\n')
        f.write(json.dumps({"custom_id": "r0", "body": {"messages": [{"role": "user", "content": "row 9 x"}]}}) + "\n")
    oai.enqueue(Reply(status=400, json={"error": {"message": "bad", "type": "invalid_request_error"}}), CHAT)
    first = job.run("--concurrency", "1", "--budget-usd", "1")
    assert first.returncode == 4, first.stderr
    assert "2 rows done, 4 failed (3 of them invalid input lines)" in first.stderr
    assert "1 rows failed" in first.stderr and "--retry-failed" in first.stderr  # the upstream's refusal may pass
    assert "3 input lines are not valid requests" in first.stderr and "fix those lines" in first.stderr
    invalid = {r["line"]: r for r in outputs(job.out) if r["error"] and r["error"]["code"] == "invalid_line"}
    assert set(invalid) == {4, 5, 6}
    assert all("fix the line" in r["error"]["message"] for r in invalid.values())
    for attempt in range(2):
        retried = job.run("--resume", "--retry-failed")
        assert retried.returncode == 4, retried.stderr
        assert "3 rows done, 3 failed (3 of them invalid input lines)" in retried.stderr
        assert "send them again with --resume --retry-failed" not in retried.stderr, retried.stderr  # none to retry
        assert "3 input lines are not valid requests" in retried.stderr
        again = {r["line"]: r for r in outputs(job.out) if r["error"]}
        assert {line: r["id"] for line, r in again.items()} == {line: r["id"] for line, r in invalid.items()}
        assert job.sent() == 4, attempt  # 3 rows, the refused one twice; invalid lines never
    status = cli("status", str(job.out))
    assert "failed 3 (3 invalid input lines)" in status.stdout and "--resume --retry-failed" not in status.stdout
