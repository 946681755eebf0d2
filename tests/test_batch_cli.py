"""``polyroute batch run|status`` as a user runs them: exit codes, messages, Ctrl-C, the progress line."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from router.batch.journal import journal_path, read_state
from router.batch.progress import Progress
from tests.cli import REPO, batch_run_argv, polyroute_argv
from tests.test_batch_kill import requested, write_config, write_input
from tests.upstreams import OpenAICompatUpstream


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(polyroute_argv("batch", *args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_dry_run_then_budget_stop_then_status(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 200)
    write_config(tmp_path / "b.yaml", oai)
    common = [str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "b.yaml"), "--output", str(tmp_path / "o.jsonl")]
    dry = cli("run", *common, "--dry-run", "--budget-usd", "0.001")
    assert dry.returncode == 0, dry.stderr
    assert "200 rows read, nothing sent" in dry.stdout and "plan" in dry.stdout and "budget $0.00" in dry.stdout
    assert not oai.requests and not (tmp_path / "o.jsonl").exists()
    run = cli("run", *common, "--budget-usd", "0.001", "--progress", "plain")
    assert run.returncode == 3, run.stderr
    assert "budget reached" in run.stderr and "--resume --budget-usd" in run.stderr
    assert "rows " in run.stderr.splitlines()[0]  # the plain progress line
    status = cli("status", str(tmp_path / "o.jsonl"))
    assert status.returncode == 0 and "stopped: budget" in status.stdout and "pending" in status.stdout
    state = read_state(journal_path(tmp_path / "o.jsonl"))
    assert 0 < state.ok < 200 and sum(requested(oai).values()) == state.ok
    again = cli("run", *common, "--budget-usd", "0.001")
    assert again.returncode == 2 and "pass --resume" in again.stderr
    finish = cli("run", *common, "--budget-usd", "1", "--resume", "--report", str(tmp_path / "r.html"))
    assert finish.returncode == 0, finish.stderr
    assert "200 rows done, 0 failed, 0 pending" in finish.stderr and (tmp_path / "r.html").read_text().startswith("<")


def test_ctrl_c_lets_rows_in_flight_finish_and_records_them(oai: OpenAICompatUpstream, tmp_path: Path) -> None:
    oai.latency = 0.3
    write_input(tmp_path / "in.jsonl", 100)
    write_config(tmp_path / "b.yaml", oai)
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen(
        batch_run_argv(
            tmp_path / "in.jsonl",
            tmp_path / "b.yaml",
            out,
            "--concurrency",
            "8",
            "--progress",
            "none",
        ),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [q for q in oai.requests if q.method == "POST"]:
        time.sleep(0.01)
    time.sleep(0.1)  # rows are in flight now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted: continue with --resume" in err
    state = read_state(journal_path(out))
    assert state.ok == sum(requested(oai).values()) > 0  # everything sent was recorded
    assert state.ok < 100 and state.last_end is not None and state.last_end["reason"] == "interrupted"


def test_bad_config_and_missing_input_exit_2_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("candidates: []\n")
    (tmp_path / "in.jsonl").write_text("{}\n")
    bad = cli("run", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "b.yaml"))
    assert bad.returncode == 2 and "candidates: expected a non-empty list" in bad.stderr
    missing = cli("run", str(tmp_path / "nope.jsonl"), "--model", "openai/x")
    assert missing.returncode == 2 and "nope.jsonl does not exist" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
    status = cli("status", str(tmp_path / "none.jsonl"))
    assert status.returncode == 2 and "no job ran there" in status.stderr


def test_progress_line_shows_rate_spend_eta_and_failures() -> None:
    stream = io.StringIO()
    progress = Progress(stream, live=False)
    progress.total, progress.budget_pico = 1000, 5 * 10**12
    progress.started -= 2.0  # two seconds in
    for i in range(400):
        progress.row(i % 100 != 0, 1_000_000)
    line = progress.line()
    assert line.startswith("rows 400/1,000 (40%)") and "rows/s" in line and "of $5.00" in line
    assert "ETA" in line and "4 failed" in line and "$0.0004" in line
    progress.draw()
    assert json.dumps(stream.getvalue()).count("\\n") == 1


def test_a_candidate_without_its_key_is_named_once_and_the_others_serve(
    oai: OpenAICompatUpstream, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.jsonl", 5)
    (tmp_path / "b.yaml").write_text(
        "candidates:\n"
        f"  - {{name: cheap, model: openai/cheap, params: {{api_base: '{oai.base_url}', api_key: sk-test}}}}\n"
        "  - {name: other, model: deepinfra/meta-llama/Llama-3.3-70B-Instruct}\n"  # its key is not set here
        "pricing:\n  - {model: openai/cheap, input_per_million: 1, output_per_million: 2}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPINFRA")}
    argv = batch_run_argv(tmp_path / "in.jsonl", tmp_path / "b.yaml", tmp_path / "o.jsonl", "--progress", "none")
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("no upstream credentials") == 1, run.stderr
    assert "DEEPINFRA_API_KEY" in run.stderr and "5 rows done, 0 failed" in run.stderr
    assert len(oai.requests) == 5
