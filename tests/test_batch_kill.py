"""Durability: ``kill -9`` of the ``polyroute batch`` process at random moments, then ``--resume``.

After every kill: each row recorded in the journal is never requested again, and at the end every
input row is in the output exactly once and the spend equals the sum of the rows' costs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from router.batch import parse_batch_config, run_batch
from router.batch.journal import _compact_paths, journal_path, read_state
from tests.cli import REPO, batch_run_argv
from tests.upstreams import OpenAICompatUpstream

CHAT = "/v1/chat/completions"
ROWS = 600


def write_input(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = {"messages": [{"role": "user", "content": f"row {i} please answer"}], "max_tokens": 8}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body}) + "\n")


def write_config(path: Path, server: OpenAICompatUpstream) -> None:
    path.write_text(
        "candidates:\n"
        f"  - {{name: cheap, model: openai/cheap, params: {{api_base: '{server.base_url}', api_key: sk-test}}}}\n"
        "pricing:\n  - {model: openai/cheap, input_per_million: 1, output_per_million: 2}\n"
    )


def requested(server: OpenAICompatUpstream) -> Counter[int]:
    return Counter(int(q.json["messages"][0]["content"].split()[1]) for q in server.requests if q.path == CHAT)


def recorded_rows(out: Path) -> set[int]:
    jpath = journal_path(out)
    if not jpath.exists():
        return set()
    state = read_state(jpath)
    return {line - 1 for line in range(len(state.done)) if state.is_done(line)}  # line n holds row n-1


def resume_argv(tmp: Path, *args: str) -> list[str]:
    """Run or resume the job in tmp (in.jsonl, b.yaml -> out.jsonl), 16 rows at a time, no progress output."""
    options = ("--resume", "--concurrency", "16", "--progress", "none")
    return batch_run_argv(tmp / "in.jsonl", tmp / "b.yaml", tmp / "out.jsonl", *options, *args)


def start(tmp: Path, budget: str) -> subprocess.Popen[bytes]:
    cmd = resume_argv(tmp, "--budget-usd", budget)
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_progress(out: Path, before: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    jpath = journal_path(out)
    while time.monotonic() < deadline and proc.poll() is None:
        if jpath.exists() and jpath.stat().st_size > before:
            return
        time.sleep(0.01)


def journal_size(out: Path) -> int:
    return journal_path(out).stat().st_size if journal_path(out).exists() else 0


def kill_9_after(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait, then kill -9 the process unless it has finished by then; whether it was killed."""
    time.sleep(seconds)
    if proc.poll() is not None:
        proc.communicate()
        return False  # finished before the kill
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return True


def kill_9_once(
    out: Path,
    server: OpenAICompatUpstream,
    start: Callable[[], subprocess.Popen[bytes]],
    *,
    then: float,
    grown: int = 0,
    timeout: float = 20.0,
) -> bool:
    """Start the job; once its journal has grown by more than ``grown`` bytes (or ``timeout`` s passed) and ``then``
    s more, kill -9 it unless it has finished (False). No row recorded before the kill was sent again."""
    done_before, sent_before = recorded_rows(out), requested(server)
    size = journal_size(out)
    proc = start()
    wait_for_progress(out, size + grown, proc, timeout)
    if not kill_9_after(proc, then):
        return False
    sent_now = requested(server)
    resent = [row for row in done_before if sent_now[row] != sent_before[row]]
    assert not resent, f"rows recorded before the kill were sent again: {resent[:5]}"
    return True


def test_kill_9_at_random_moments_then_resume_exactly_once(tmp_path: Path) -> None:
    server = OpenAICompatUpstream().start()
    try:
        server.latency = 0.01
        write_input(tmp_path / "in.jsonl", ROWS)
        write_config(tmp_path / "b.yaml", server)
        out = tmp_path / "out.jsonl"
        rng = random.Random(20261122)
        kills = 0
        for _ in range(8):
            if not kill_9_once(out, server, lambda: start(tmp_path, "10"), then=rng.uniform(0.0, 0.25)):
                break
            kills += 1
        assert kills >= 3
        final = start(tmp_path, "10")
        _, err = final.communicate(timeout=120)
        assert final.returncode == 0, err.decode()
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["custom_id"] for r in lines) == sorted(f"r{i}" for i in range(ROWS))
        assert not any(r["error"] for r in lines)
        state = read_state(journal_path(out))
        assert state.spent_pico == sum(round(Decimal(str(r["cost_usd"])) * 10**12) for r in lines)
        assert state.ok == ROWS and state.torn_bytes == 0
        counts = requested(server)
        assert set(counts) == set(range(ROWS))
        # A row is sent more than once only when a kill landed while it was in flight (16 at a time).
        assert sum(counts.values()) - ROWS <= 16 * kills
    finally:
        server.stop()


@pytest.fixture
def half_done(oai: OpenAICompatUpstream, tmp_path: Path) -> tuple[Path, Path, object]:
    write_input(tmp_path / "in.jsonl", 20)
    config = parse_batch_config(
        {
            "candidates": [
                {"name": "cheap", "model": "openai/cheap", "params": {"api_base": oai.base_url, "api_key": "k"}}
            ],
            "pricing": [{"model": "openai/cheap", "input_per_million": 1, "output_per_million": 2}],
        }
    )
    out = tmp_path / "out.jsonl"
    run_batch(tmp_path / "in.jsonl", out, config)
    return tmp_path / "in.jsonl", out, config


def _drop_last_rows(out: Path, keep: int) -> None:
    """Rewind a finished job to its first ``keep`` rows, as if it had been killed there."""
    jpath = journal_path(out)
    lines = jpath.read_bytes().splitlines(keepends=True)
    rows = [i for i, raw in enumerate(lines) if b'"i":' in raw]
    kept = lines[: rows[keep - 1] + 1]
    jpath.write_bytes(b"".join(kept))
    end = json.loads(kept[-1])
    with out.open("r+b") as f:
        f.truncate(end["o"] + end["n"])


def test_a_torn_journal_record_and_unrecorded_output_are_cut_and_sent_again(
    half_done: tuple[Path, Path, object], oai: OpenAICompatUpstream
) -> None:
    src, out, config = half_done
    _drop_last_rows(out, 12)
    kept = recorded_rows(out)
    with out.open("ab") as f:  # row 13's output line made it, its journal record did not (killed between)
        f.write(b'{"id":"batch_req_x","custom_id":"r12","response":{"status_code":200},"error":null}\n')
        f.write(b'{"id":"batch_req_y","custom_id":"r1')  # and a torn line of another row
    with journal_path(out).open("ab") as f:
        f.write(b'{"ok":true,"t":1.0,"c":5,"k":"cheap"')  # a torn record: not a commit
    oai.reset()
    result = run_batch(src, out, config, resume=True)
    assert result.ok == 20 and result.state.torn_bytes == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in lines) == sorted(f"r{i}" for i in range(20))
    assert len(kept) == 12 and sorted(requested(oai)) == sorted(set(range(20)) - kept)  # only unrecorded rows again


def test_an_output_shorter_than_its_journal_is_refused(half_done: tuple[Path, Path, object]) -> None:
    src, out, config = half_done
    with out.open("r+b") as f:
        f.truncate(100)
    from router.batch.journal import JobError

    with pytest.raises(JobError, match=r"shorter .* than its journal records"):
        run_batch(src, out, config, resume=True)


@pytest.mark.parametrize("committed", [False, True])
def test_an_interrupted_retry_rewrite_is_undone_or_finished(
    half_done: tuple[Path, Path, object], committed: bool
) -> None:
    src, out, config = half_done
    original = out.read_bytes()
    new_out, new_journal = _compact_paths(out)
    if committed:  # the journal was swapped in; the output rename did not happen
        new_out.write_bytes(original)
        journal_path(out).write_bytes(journal_path(out).read_bytes())
    else:  # killed while writing the new files
        new_out.write_bytes(b"partial")
        new_journal.write_bytes(b"partial")
    result = run_batch(src, out, config, resume=True)
    assert result.ok == 20 and not new_out.exists() and not new_journal.exists()
    assert out.read_bytes() == original


def test_a_journal_write_cut_short_commits_only_the_whole_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that finish together share one write per file; a disk that fills up in the middle of the
    journal's write leaves the rows whose records made it whole committed, and no others."""
    import errno

    from router.batch import journal as journal_module
    from router.batch.rows import scan_input

    write_input(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out.jsonl"
    journal = journal_module.Journal.open(out, scan_input(tmp_path / "in.jsonl"), resume=False)
    lines = [f'{{"custom_id": "r{i}"}}\n'.encode() for i in range(4)]
    real_write = os.write
    calls = {"journal": 0}

    def disk_fills_up(fd: int, data: bytes | memoryview) -> int:
        if fd == journal._journal:
            calls["journal"] += 1
            if calls["journal"] > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            whole = bytes(data)
            return real_write(fd, whole[: whole.index(b"\n") + 10])  # one whole record of three, and a torn one
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", disk_fills_up)
    rows = [(i + 1, lines[i], {"ok": True, "c": 7}) for i in range(3)]
    assert journal.record_many(rows) == 1
    committed = journal.state.ok
    assert journal.broken is not None and committed == 1
    assert out.stat().st_size == sum(len(line) for line in lines[:committed])  # output cut to the last commit
    assert journal.record_many([(4, lines[3], {"ok": True, "c": 7})]) == 0  # a broken journal writes nothing more
    journal.close()
    monkeypatch.undo()

    on_disk = read_state(journal_path(out))
    assert on_disk.ok == committed and on_disk.torn_bytes > 0 and on_disk.spent_pico == 7 * committed
    resumed = journal_module.Journal.open(out, scan_input(tmp_path / "in.jsonl"), resume=True)
    try:
        assert resumed.state.ok == committed and resumed.offset == out.stat().st_size
        assert resumed.record_many([(4, lines[3], {"ok": True, "c": 7})]) == 1
    finally:
        resumed.close()
    final = read_state(journal_path(out))
    assert final.ok == committed + 1 and final.torn_bytes == 0 and final.output_end == out.stat().st_size


def test_an_output_write_that_fails_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from router.batch import journal as journal_module
    from router.batch.rows import scan_input

    write_input(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    journal = journal_module.Journal.open(out, scan_input(tmp_path / "in.jsonl"), resume=False)
    real_write = os.write

    def output_full(fd: int, data: bytes | memoryview) -> int:
        if fd == journal._out:
            real_write(fd, bytes(data)[:5])  # part of the first line, then the disk is full
            raise OSError(errno.EFBIG, "File too large")
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", output_full)
    rows = [(i + 1, f'{{"custom_id": "r{i}"}}\n'.encode(), {"ok": True, "c": 7}) for i in range(2)]
    assert journal.record_many(rows) == 0 and journal.broken is not None
    with pytest.raises(OSError):
        journal.record(1, rows[0][1], {"ok": True, "c": 7})
    journal.close()
    monkeypatch.undo()
    assert out.stat().st_size == 0 and read_state(journal_path(out)).ok == 0
