"""The job journal: which rows are finished, what each cost, and where its output line is.

``results.jsonl.journal`` sits beside the output. Its first line is a header naming the input
(size, sha256); then one line per finished row (``{"i": line, "ok": ..., "c": cost pico-USD,
"o": offset, "n": length, ...}``) and one per run start/end. A finished row is written to the output
first and to the journal second (the rows that finish together share one ``write`` to each file), so
after ``kill -9`` at any moment the journal's last complete row record says exactly how much of the
output is valid: the output is cut back to it and rows not in the journal are sent again. A row whose record made it is
never sent again, and the spend is the sum of the recorded rows' costs.

``--retry-failed`` rewrites both files without the failed rows that may succeed if sent again (new
files, then renames; the journal's rename is the commit point, and an interrupted rewrite is finished or
undone on open). Invalid input lines stay recorded: the input cannot change, so they never can succeed.

The job's budget (its cap, for all runs) is in the header (``budget_pico``, from when the job was
created) and in every run's start record (the cap that run kept to); :func:`recorded_budget` reads it.

Example::

    journal, state = Journal.open("results.jsonl", facts, resume=True)
    journal.record(row_line, ok=True, output_line=b'{"id": ...}\\n', cost_pico=1200, ...)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from providers.errors import InvalidRequestArgumentError

from ..lockfile import lock_held
from .rows import INVALID_LINE, InputFacts

FORMAT = 1


class JobError(InvalidRequestArgumentError):
    """The job cannot start or resume as asked; the message says why and what to do."""


class JobWriteError(JobError):
    """The output or the journal could not be written (disk full, ...): the job stopped."""


def journal_path(output: str | Path) -> Path:
    return Path(f"{output}.journal")


@dataclass
class Totals:
    rows: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pico: int = 0
    unpriced: int = 0


@dataclass
class JobState:
    """What a journal says about a job."""

    header: dict[str, Any]
    done: bytearray = field(default_factory=bytearray)  # by line number: 0 pending, 1 ok, 2 failed
    ok: int = 0
    failed: int = 0
    invalid: int = 0  # of the failed rows: invalid input lines (never sent, not retried)
    errors: dict[str, int] = field(default_factory=dict)  # failed rows by error code
    spent_pico: int = 0
    output_end: int = 0
    by_route: dict[tuple[str, str], Totals] = field(default_factory=dict)  # (candidate, provider)
    output_tokens: dict[str, list[int]] = field(default_factory=dict)  # candidate: [sum, rows]
    runs: list[dict[str, Any]] = field(default_factory=list)
    last_end: dict[str, Any] | None = None
    torn_bytes: int = 0  # an unfinished last line (the writer was killed mid-write)

    @property
    def rows_total(self) -> int:
        return int(self.header.get("rows", 0))

    @property
    def retryable(self) -> int:
        """Failed rows that ``--retry-failed`` sends again (not the invalid input lines)."""
        return self.failed - self.invalid

    def is_done(self, line: int) -> bool:
        return line < len(self.done) and self.done[line] != 0

    def observed_output(self) -> dict[str, float]:
        return {k: total / count for k, (total, count) in self.output_tokens.items() if count}

    def add(self, rec: dict[str, Any]) -> None:
        line = rec["i"]
        if line >= len(self.done):
            self.done.extend(bytes(line + 1024 - len(self.done)))
        if self.done[line]:  # cannot happen with one writer; counted once if it ever does
            return
        ok = bool(rec.get("ok"))
        self.done[line] = 1 if ok else 2
        route = (rec.get("k") or "-", rec.get("p") or "-")
        totals = self.by_route.get(route)
        if totals is None:  # not setdefault: that would build a Totals for every row
            totals = self.by_route[route] = Totals()
        totals.rows += 1
        if ok:
            self.ok += 1
            cost = rec.get("c")
            if cost is None:
                totals.unpriced += 1
            else:
                self.spent_pico += cost
                totals.cost_pico += cost
            totals.prompt_tokens += rec.get("pt") or 0
            completion = rec.get("ct")
            if completion is not None:
                totals.completion_tokens += completion
                candidate = rec.get("k")
                if candidate:
                    acc = self.output_tokens.get(candidate)
                    if acc is None:
                        acc = self.output_tokens[candidate] = [0, 0]
                    acc[0] += completion
                    acc[1] += 1
        else:
            self.failed += 1
            totals.failed += 1
            code = str(rec.get("e") or "-")
            self.errors[code] = self.errors.get(code, 0) + 1
            if code == INVALID_LINE:
                self.invalid += 1
        self.output_end = max(self.output_end, rec["o"] + rec["n"])


def recorded_budget(state: JobState) -> tuple[bool, int | None]:
    """(whether the journal records the job's budget, the budget in pico-USD or None for no cap).

    The last run's start record says what the job's cap was; a job killed before its first run record
    has the one its header got when it was created. A journal of an older polyroute that has neither
    records nothing: ``(False, None)``.
    """
    for rec in reversed(state.runs):
        if "run" in rec and "budget_pico" in rec:
            budget = rec["budget_pico"]
            return True, budget if isinstance(budget, int) else None
    if "budget_pico" in state.header:
        budget = state.header["budget_pico"]
        return True, budget if isinstance(budget, int) else None
    return False, None


def journal_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset just past the line, line) of every complete line."""
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            offset += len(raw)
            yield offset, raw


def read_state(path: str | Path) -> JobState:
    """The job a journal describes (read-only: a torn last line is reported, not removed)."""
    path = Path(path)
    state: JobState | None = None
    end = 0
    for end, raw in journal_records(path):
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise JobError(f"{path}: line ending at byte {end} is not JSON; the journal is damaged") from None
        if state is None:
            if not isinstance(rec, dict) or rec.get("polyroute_batch") != FORMAT:
                raise JobError(f"{path} is not a polyroute batch journal")
            state = JobState(rec)
        elif "i" in rec:
            state.add(rec)
        elif "run" in rec:
            state.runs.append(rec)
        elif "end" in rec:
            state.last_end = rec
            state.runs.append(rec)
    if state is None:
        raise JobError(f"{path} is empty: the job never started writing; remove it and start again")
    state.torn_bytes = path.stat().st_size - end
    return state


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Journal:
    """Appends finished rows to the output and the journal (one writer per job, held by a file lock)."""

    def __init__(self, output: Path, out_fd: int, journal_fd: int, state: JobState) -> None:
        self.output = output
        self.path = journal_path(output)
        self._out = out_fd
        self._journal = journal_fd
        self.offset = state.output_end
        self.state = state
        self.broken: OSError | None = None

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        output: str | Path,
        facts: InputFacts,
        *,
        resume: bool,
        retry_failed: bool = False,
        header: dict[str, Any] | None = None,
        check: Callable[[JobState], None] | None = None,
    ) -> Journal:
        """Create the job's journal (with ``header``'s fields in its header), or open it to resume.

        ``check(state)`` sees a resumed job's state before anything is changed (a ``--retry-failed``
        rewrite included); an error it raises leaves the files as they were.
        """
        output = Path(output)
        jpath = journal_path(output)
        if not jpath.exists():
            _finish_compaction(output)  # no journal: nobody can be rewriting, so leftovers are safe to settle
            if jpath.exists():  # a committed rewrite was just finished
                return cls.open(output, facts, resume=resume, retry_failed=retry_failed, header=header, check=check)
            if output.exists() and output.stat().st_size:
                raise JobError(
                    f"{output} exists and has no journal ({jpath.name}), so it is not a polyroute batch output; "
                    "choose another --output or remove it"
                )
            return cls._create(output, facts, header or {})
        if not resume:
            state = read_state(jpath)
            raise JobError(
                f"{output} already holds a job ({state.ok + state.failed} of {state.rows_total} rows done); "
                "pass --resume to continue it, or remove it and its journal to start over"
            )
        fd = os.open(jpath, os.O_RDWR | os.O_APPEND)
        try:
            _lock(fd, jpath)
            _finish_compaction(output)  # under the lock: a rewrite in progress holds it, so this one is dead
            state = read_state(jpath)
            _check_input(state.header, facts, jpath)
            if check is not None:
                check(state)
            if state.torn_bytes:  # a record cut by kill -9: that row was not recorded, so it is sent again
                os.ftruncate(fd, os.fstat(fd).st_size - state.torn_bytes)
                state.torn_bytes = 0
            if retry_failed and state.retryable:  # rewritten under the old journal's lock, then the new one's taken
                _compact(output, state)
                new_fd = os.open(jpath, os.O_RDWR | os.O_APPEND)
                try:
                    _lock(new_fd, jpath)
                except BaseException:
                    os.close(new_fd)
                    raise
                os.close(fd)
                fd = new_fd
                state = read_state(jpath)
            size = output.stat().st_size if output.exists() else 0
            if size < state.output_end:
                raise JobError(
                    f"{output} is shorter ({size} bytes) than its journal records ({state.output_end} bytes): it was "
                    "changed outside polyroute; restore it or start the job over"
                )
            out_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if size > state.output_end:  # lines written after the last journal record: their rows go again
                os.ftruncate(out_fd, state.output_end)
        except BaseException:
            os.close(fd)
            raise
        return cls(output, out_fd, fd, state)

    @classmethod
    def _create(cls, output: Path, facts: InputFacts, extra: dict[str, Any]) -> Journal:
        jpath = journal_path(output)
        try:
            fd = os.open(jpath, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise JobError(f"another polyroute batch just started writing {output}") from None
        try:
            _lock(fd, jpath)
        except BaseException:
            os.close(fd)
            raise
        header = {
            "polyroute_batch": FORMAT,
            "input": facts.path,
            "input_bytes": facts.size,
            "input_sha256": facts.sha256,
            "rows": facts.rows,
            "output": str(output.resolve()),
            "created": time.time(),
            "gen": 0,
            **extra,
        }
        _write_all(fd, orjson.dumps(header) + b"\n")
        out_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        return cls(output, out_fd, fd, JobState(header))

    # ---------------------------------------------------------------- writing
    def record(self, line: int, output_line: bytes, rec: dict[str, Any]) -> None:
        """Write a finished row: its output line, then its journal record (the commit).

        A failed write (disk full, file too large) leaves the files as the last commit left them and
        makes every later write refuse: the job must stop, and ``--resume`` continues from there.
        """
        self.record_many([(line, output_line, rec)])
        if self.broken is not None:
            raise self.broken

    def record_many(self, rows: list[tuple[int, bytes, dict[str, Any]]]) -> int:
        """Write finished rows ``(line, output line, record)``: every output line (one write), then every
        journal record (one write; each whole record is its row's commit). Returns how many were committed.

        All of them, unless a write fails (disk full, file too large): then ``broken`` is set, only the
        rows whose records reached the journal whole are committed (a torn record after them is cut on
        resume), the output is cut back to the last commit, and every later write refuses.
        """
        if self.broken is not None:
            return 0
        offset = self.offset
        records = []
        for line, output_line, rec in rows:
            rec["i"], rec["o"], rec["n"] = line, offset, len(output_line)
            offset += len(output_line)
            records.append(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
        try:
            _write_all(self._out, rows[0][1] if len(rows) == 1 else b"".join([row[1] for row in rows]))
        except OSError as err:
            self.broken = err
            self._cut_output()
            return 0
        blob = records[0] if len(records) == 1 else b"".join(records)
        written = 0
        try:
            view = memoryview(blob)
            while written < len(blob):
                written += os.write(self._journal, view[written:])
        except OSError as err:
            self.broken = err
        committed = 0
        end = 0
        for (_, output_line, rec), record in zip(rows, records, strict=True):
            end += len(record)
            if end > written:
                break
            self.offset += len(output_line)
            self.state.add(rec)
            committed += 1
        if self.broken is not None:
            self._cut_output()
        return committed

    def _cut_output(self) -> None:
        """Cut the output back to the last committed row (any line after it is not in the journal)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._out, self.offset)

    def note(self, rec: dict[str, Any]) -> None:
        """A run start/end record."""
        if self.broken is not None:
            return
        _write_all(self._journal, orjson.dumps(rec) + b"\n")
        self.state.runs.append(rec)
        if "end" in rec:
            self.state.last_end = rec

    def close(self) -> None:
        for fd in (self._out, self._journal):
            with contextlib.suppress(OSError):
                os.close(fd)


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JobError(f"another polyroute batch is running on this output ({path} is locked); wait for it") from None


def is_running(output: str | Path) -> bool:
    """Whether a job holds the output's journal lock now."""
    return lock_held(journal_path(output)) is True


def _check_input(header: dict[str, Any], facts: InputFacts, jpath: Path) -> None:
    if header.get("input_sha256") != facts.sha256 or header.get("input_bytes") != facts.size:
        raise JobError(
            f"the input changed since the job started ({header.get('input')}: was {header.get('input_bytes')} bytes, "
            f"sha256 {str(header.get('input_sha256'))[:12]}…; now {facts.size} bytes, sha256 {facts.sha256[:12]}…). "
            f"Resuming would mix two inputs: restore the original, or start a new job (other --output, or remove "
            f"{jpath.name} and the output)"
        )


# ---------------------------------------------------------------- --retry-failed: rewrite without failed rows
def _compact_paths(output: Path) -> tuple[Path, Path]:
    return Path(f"{output}.compact"), Path(f"{journal_path(output)}.compact")


def _finish_compaction(output: Path) -> None:
    """Complete or undo a rewrite that a kill interrupted (the journal's rename is the commit point)."""
    new_output, new_journal = _compact_paths(output)
    if new_journal.exists():  # not committed: undo
        new_journal.unlink()
        new_output.unlink(missing_ok=True)
    elif new_output.exists():  # committed: finish
        os.replace(new_output, output)


def _compact(output: Path, state: JobState) -> None:
    jpath = journal_path(output)
    new_output, new_journal = _compact_paths(output)
    header = {**state.header, "gen": int(state.header.get("gen", 0)) + 1}
    offset = 0
    with open(output, "rb") as old_out, open(new_output, "wb") as out, open(new_journal, "wb") as journal:
        journal.write(orjson.dumps(header) + b"\n")
        first = True
        for _, raw in journal_records(jpath):
            if first:
                first = False
                continue
            rec = orjson.loads(raw)
            if "i" in rec:
                if not rec.get("ok") and rec.get("e") != INVALID_LINE:  # sent again; invalid lines never can succeed
                    continue
                old_out.seek(rec["o"])
                data = old_out.read(rec["n"])
                out.write(data)
                rec["o"] = offset
                offset += len(data)
            journal.write(orjson.dumps(rec) + b"\n")
        for f in (out, journal):
            f.flush()
            os.fsync(f.fileno())
    os.replace(new_journal, jpath)  # the commit point
    with contextlib.suppress(FileNotFoundError):  # a concurrent opener may have finished the rename
        os.replace(new_output, output)
    _fsync_dir(output.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
