"""What both engines (local and Ray) share about a run of a job: its arguments, its journal, its budget, and
the records of its start and end.

The budget is a cap on the whole job, all runs together. It is recorded in the journal when the job is
created and in every run's start record, so a resumed run (``resume`` / ``retry_failed``) keeps it
unless ``budget_usd`` is given:

- a higher one raises it, a lower one lowers it (down to what the job has spent; below that is an error:
  the cap is the whole job's, not one run's) — :attr:`JobBudget.note` says which;
- a job without a budget gets the one given (or the config's ``budget_usd``);
- the config's ``budget_usd`` is the budget of a new job; it does not change a resumed job's recorded one;
- a journal of an older polyroute that records no budget resumes with the one given (else the config's,
  else none).

Example::

    journal, budget = await open_job(input_path, output, budget_usd=None, config_budget_usd=None, resume=True)
    budget.cap_pico, budget.note      # e.g. 50_000_000, "the job keeps its budget of $0.00005 ..."
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from providers.errors import InvalidRequestArgumentError

from ..credentials import missing_warning
from ..pricing.prices import PICO_PER_USD, pico_to_usd
from .journal import JobState, JobWriteError, Journal, recorded_budget

if TYPE_CHECKING:  # progress imports this module
    from ..routing.router import Router
    from .progress import Progress
from .rows import scan_input

EXIT_DONE = 0
EXIT_FAILED_ROWS = 4  # every row has a result, some of them errors (re-run them with --retry-failed)
EXIT_BUDGET = 3  # the budget cannot cover the next row; resume with a larger one
EXIT_INTERRUPTED = 130
log = logging.getLogger("polyroute.batch")


@dataclass
class BatchResult:
    """How a run ended and what the whole job (all runs) has done."""

    exit_code: int
    reason: str  # "done" | "failed_rows" | "budget" | "interrupted"
    state: JobState
    output: Path
    needed_expected_usd: float | None = None  # budget stops: what the rows left are expected to cost
    needed_max_usd: float | None = None  # ... and at most
    rows_left: int = 0
    unknown_models: dict[str, int] = field(default_factory=dict)
    budget_pico: int | None = None  # the job's cap (all runs) this run kept to; None: no cap
    budget_note: str | None = None  # what this run did with the job's recorded budget (kept, raised, ...)

    @property
    def budget_usd(self) -> float | None:
        return None if self.budget_pico is None else pico_to_usd(self.budget_pico)

    @property
    def spent_usd(self) -> float:
        return pico_to_usd(self.state.spent_pico)

    @property
    def ok(self) -> int:
        return self.state.ok

    @property
    def failed(self) -> int:
        return self.state.failed


Result = TypeVar("Result", bound=BatchResult)


@dataclass(frozen=True)
class JobBudget:
    """The job's cap for this run, and what became of the cap it had."""

    cap_pico: int | None  # the whole job's cap (all runs); None: no cap
    previous_pico: int | None = None  # the cap the journal recorded (None: none)
    note: str | None = None  # for the user: kept, raised, lowered, set (None: a new job, nothing to say)

    def limit_pico(self, spent_pico: int) -> int | None:
        """What this run may still spend (reserve against): the cap minus what earlier runs spent."""
        return None if self.cap_pico is None else self.cap_pico - spent_pico


def usd_to_pico(usd: float | None) -> int | None:
    return None if usd is None else int(Decimal(str(usd)) * PICO_PER_USD)


def usd(pico: int) -> str:
    """``$`` and an exact amount: at least cents, and every digit down to the pico-dollar that is not 0."""
    text = format((Decimal(pico) / PICO_PER_USD).normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def check_job_args(input_path: Path, budget_usd: float | None, concurrency: int) -> None:
    """The job's arguments, each with a message saying what is wrong."""
    if not input_path.is_file():
        raise InvalidRequestArgumentError(f"input {input_path} does not exist or is not a file")
    if budget_usd is not None and (not math.isfinite(budget_usd) or budget_usd < 0):
        raise InvalidRequestArgumentError(f"the budget must be a non-negative number of USD, got {budget_usd}")
    if concurrency < 1:
        raise InvalidRequestArgumentError(f"concurrency must be at least 1, got {concurrency}")


def resolve_budget(state: JobState, given_usd: float | None, config_usd: float | None) -> JobBudget:
    """The cap of a resumed job's next run: the journal's, unless ``given_usd`` changes it (see the module).

    Raises :class:`InvalidRequestArgumentError` when the cap asked for is below what the job has spent.
    """
    spent = state.spent_pico
    known, recorded = recorded_budget(state)
    given = usd_to_pico(given_usd)
    source = "--budget-usd"
    if given is None and recorded is None and config_usd is not None:  # a job without a cap takes the config's
        given, source = usd_to_pico(config_usd), "the config's budget_usd"
    if given is None:
        if recorded is None:
            if known:
                return JobBudget(None)
            return JobBudget(
                None,
                note="the journal records no budget (an older polyroute started this job): it "
                "runs without one; pass --budget-usd to cap it",
            )
        note = (
            f"the job keeps its budget of {usd(recorded)} (for all runs; {usd(spent)} spent so far); pass "
            "--budget-usd to change it"
        )
        config = usd_to_pico(config_usd)
        if config is not None and config != recorded:
            note += f" (the config's budget_usd, {usd(config)}, applies to new jobs)"
        return JobBudget(recorded, recorded, note)
    if given < spent:
        raise InvalidRequestArgumentError(
            f"{source} {usd(given)} is below what this job has already spent ({usd(spent)}): the budget caps the "
            f"whole job, all its runs together, not one run. To let it spend {usd(given)} more, pass --budget-usd "
            f"{usd(spent + given)[1:]}" + (f" (its budget was {usd(recorded)})" if recorded is not None else "")
        )
    spent_text = f"{usd(spent)} spent so far"
    if recorded is None:
        note = f"budget set to {usd(given)} for the whole job (from {source}; it had none; {spent_text})"
    elif given > recorded:
        note = f"budget raised from {usd(recorded)} to {usd(given)} ({spent_text})"
    elif given < recorded:
        note = (
            f"budget lowered from {usd(recorded)} to {usd(given)} ({spent_text}; the budget caps the whole job, "
            "all runs together)"
        )
    else:
        note = f"the job keeps its budget of {usd(recorded)} (for all runs; {spent_text})"
    return JobBudget(given, recorded, note)


def suggested_budget(spent_pico: int, needed_max_pico: int, cap_pico: int | None) -> str:
    """A ``--budget-usd`` value (text) that lets the rows left finish: spent + what they need at most, rounded
    up (to the cent from $1, else to two significant digits), and above the current cap."""
    want = Decimal(max(spent_pico + needed_max_pico, cap_pico or 0, 1)) / PICO_PER_USD
    step = Decimal("0.01") if want >= 1 else Decimal(10) ** (want.adjusted() - 1)
    value = (want / step).to_integral_value(rounding=ROUND_CEILING) * step
    if cap_pico is not None and value * PICO_PER_USD <= cap_pico:
        value += step
    return format(value.normalize(), "f")


async def open_job(
    input_path: Path,
    output: Path,
    *,
    budget_usd: float | None,
    config_budget_usd: float | None,
    resume: bool,
    retry_failed: bool,
) -> tuple[Journal, JobBudget]:
    """Scan the input and create or open the job's journal (see :meth:`Journal.open`); the run's budget.

    A new job's budget (``budget_usd``, else the config's) goes into its journal's header; a resumed one
    is decided by :func:`resolve_budget` before anything in the journal changes.
    """
    facts = await asyncio.to_thread(scan_input, input_path)
    new_cap = usd_to_pico(budget_usd if budget_usd is not None else config_budget_usd)
    decided: list[JobBudget] = []

    def check(state: JobState) -> None:
        decided.append(resolve_budget(state, budget_usd, config_budget_usd))

    journal = await asyncio.to_thread(
        Journal.open,
        output,
        facts,
        resume=resume or retry_failed,
        retry_failed=retry_failed,
        header={"budget_pico": new_cap},
        check=check,
    )
    return journal, decided[-1] if decided else JobBudget(new_cap)


def tell_missing_credentials(router: Router, notice: Callable[[str], None] | None) -> None:
    """Name the deployments without upstream credentials once, before any row is sent."""
    text = missing_warning(
        router.groups,
        "rows use the other deployments of their model group, and a row only they could serve fails saying what to set",
    )
    if text is None:
        return
    if notice is not None:
        notice(text)
    else:
        log.warning("%s", text)


def tell(budget: JobBudget, notice: Callable[[str], None] | None) -> None:
    """Say what the run does with the job's recorded budget (to ``notice``, else the log at info level)."""
    if budget.note is None:
        return
    if notice is not None:
        notice(budget.note)
    else:
        log.info("%s", budget.note)


def begin_run(
    journal: Journal, budget_pico: int | None, concurrency: int, progress: Progress | None, **engine: Any
) -> tuple[int, asyncio.Task[None] | None]:
    """Record the run's start in the journal (``engine``: what else the engine records) and start drawing
    progress; the run's number and the drawing task (stop it with :func:`stop_tasks`)."""
    run = len([r for r in journal.state.runs if "run" in r]) + 1
    start = {"run": run, "t": round(time.time(), 3), "budget_pico": budget_pico, "concurrency": concurrency}
    journal.note(start | engine)
    if progress is None:
        return run, None
    progress.begin(journal.state, budget_pico)
    return run, asyncio.create_task(progress.run())


async def stop_tasks(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel helper tasks (progress, watchers) and wait until they are gone."""
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def write_failed(output: Path, err: OSError) -> JobWriteError:
    """The error a run ends with when its output or journal could not be written."""
    return JobWriteError(
        f"writing {output} failed ({err.strerror or err}); the rows finished after that were not recorded "
        "and go again on --resume (make room first)"
    )


def end_run(
    journal: Journal,
    run: int,
    output: Path,
    budget: JobBudget,
    stop: str | None,
    *,
    needed_expected: int,
    needed_max: int,
    rows_left: int,
    unknown_models: dict[str, int],
    result_class: type[Result],
    **engine: Any,
) -> Result:
    """Record the run's end in the journal; what the run returns. ``stop``: why the run stopped before every
    row was recorded ("interrupted", "budget"; None: it did not), ``engine``: the engine's own fields of
    ``result_class``."""
    state = journal.state
    if stop == "interrupted":
        code, reason = EXIT_INTERRUPTED, "interrupted"
    elif stop == "budget":
        code, reason = EXIT_BUDGET, "budget"
    elif state.failed:
        code, reason = EXIT_FAILED_ROWS, "failed_rows"
    else:
        code, reason = EXIT_DONE, "done"
    end: dict[str, Any] = {"end": run, "t": round(time.time(), 3), "reason": reason}
    budget_stop = reason == "budget"
    if budget_stop:
        end |= {"needed_expected_pico": needed_expected, "needed_max_pico": needed_max, "rows_left": rows_left}
    journal.note(end)
    return result_class(
        code,
        reason,
        state,
        output,
        needed_expected_usd=pico_to_usd(needed_expected) if budget_stop else None,
        needed_max_usd=pico_to_usd(needed_max) if budget_stop else None,
        rows_left=rows_left,
        unknown_models=unknown_models,
        budget_pico=budget.cap_pico,
        budget_note=budget.note,
        **engine,
    )
