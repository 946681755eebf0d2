"""``--dry-run``: read the whole input, count tokens, and say what the job would cost — spending nothing.

Per candidate: the rows it can take and what they would cost if all of them went there, from the
expected answer length up to ``max_tokens``. For the plan (each row at its cheapest fitting
candidate): the expected cost and a range that brackets the real bill — from the prompt alone
(counted with a 25% tokenizer margin below) to every answer at ``max_tokens`` (25% above).

Example::

    report = await adry_run("requests.jsonl", config)
    print(format_dry_run(report))
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..pricing.prices import pico_to_usd
from ..routing.router import Router
from .config import BatchConfig
from .plan import Planner, request_body
from .progress import render_table
from .rows import BadRow, iter_lines, parse_row


@dataclass
class CandidateEstimate:
    fits: int = 0  # rows it can take
    planned: int = 0  # rows the plan sends to it first
    prompt_tokens: int = 0  # of the planned rows
    all_expected_pico: int = 0  # if every row it fits went here
    all_max_pico: int = 0
    planned_min_pico: int = 0
    planned_expected_pico: int = 0
    planned_max_pico: int = 0
    unpriced: int = 0
    unbounded: int = 0  # planned rows with no max_tokens: no upper bound
    assumed_output: int | None = None


@dataclass
class DryRunReport:
    rows: int = 0
    bad_lines: list[str] = field(default_factory=list)  # first few messages
    bad_count: int = 0
    unplannable: list[str] = field(default_factory=list)
    unplannable_count: int = 0
    candidates: dict[str, CandidateEstimate] = field(default_factory=dict)
    budget_usd: float | None = None
    unknown_models: dict[str, int] = field(default_factory=dict)

    @property
    def min_usd(self) -> float:
        return pico_to_usd(sum(c.planned_min_pico for c in self.candidates.values()))

    @property
    def expected_usd(self) -> float:
        return pico_to_usd(sum(c.planned_expected_pico for c in self.candidates.values()))

    @property
    def max_usd(self) -> float:
        return pico_to_usd(sum(c.planned_max_pico for c in self.candidates.values()))


async def adry_run(
    input_path: str | Path, config: BatchConfig, *, router: Router | None = None, budget_usd: float | None = None
) -> DryRunReport:
    from .runner import build_router, load_facts

    router = router or build_router(config)
    await load_facts(router)
    budget = config.budget_usd if budget_usd is None else budget_usd
    planner = Planner(config, router, budgeted=budget is not None)
    report = DryRunReport(budget_usd=budget)
    report.candidates = {c.name: CandidateEstimate() for c in config.candidates}
    lines = iter_lines(input_path)
    while chunk := await asyncio.to_thread(lambda: list(itertools.islice(lines, 1024))):
        for line, raw in chunk:
            report.rows += 1
            row = parse_row(raw, line)
            if isinstance(row, BadRow):
                report.bad_count += 1
                if len(report.bad_lines) < 5:
                    report.bad_lines.append(row.message)
                continue
            body = request_body(config, row)
            plan = planner.plan(row, body)
            if plan.problem is not None:
                report.unplannable_count += 1
                if len(report.unplannable) < 5:
                    report.unplannable.append(f"line {line}: {plan.problem}")
                continue
            for index, quote in enumerate(plan.order):
                est = report.candidates[quote.candidate.name]
                est.fits += 1
                if quote.expected_pico is None:
                    est.unpriced += 1
                    if index == 0:
                        est.planned += 1
                    continue
                est.all_expected_pico += quote.expected_pico
                est.all_max_pico += quote.worst_pico or 0
                if quote.output_tokens:
                    est.assumed_output = planner.typical_output(quote.candidate, quote.output_tokens)
                if index == 0:
                    est.planned += 1
                    est.prompt_tokens += plan.prompt_tokens
                    est.planned_min_pico += quote.minimum_pico or 0
                    est.planned_expected_pico += quote.expected_pico
                    est.planned_max_pico += quote.worst_pico or 0
                    est.unbounded += quote.worst_pico is None
    report.unknown_models = planner.unknown_models
    return report


def nothing_to_send(report: DryRunReport) -> str | None:
    """Why the job would send no row at all (every line invalid, or no candidate can take any row), else None."""
    if not report.rows or report.bad_count + report.unplannable_count < report.rows:
        return None
    if not report.unplannable_count:
        return (
            f"none of the {report.rows:,} lines is a valid request (e.g. {report.bad_lines[0]}); fix the input "
            "before running the job"
        )
    bad = f" ({report.bad_count:,} more lines are not valid requests)" if report.bad_count else ""
    return (
        f"no candidate can take any of the {report.unplannable_count:,} rows{bad}, so the job would send "
        f"nothing (e.g. {report.unplannable[0]}); add a candidate that fits them (context window, tools, "
        "structured output, max_tokens) to the config, or shorten the rows"
    )


def format_dry_run(report: DryRunReport) -> str:
    header = (
        "candidate",
        "fits rows",
        "if all went here: expected … max USD",
        "planned rows",
        "prompt tok",
        "planned min USD",
        "expected USD",
        "max USD",
    )
    rows = []
    for name, c in report.candidates.items():
        span = f"{pico_to_usd(c.all_expected_pico):.6f} … {pico_to_usd(c.all_max_pico):.6f}"
        if c.unpriced:
            span += f" (+{c.unpriced} unpriced)"
        rows.append(
            (
                name,
                f"{c.fits:,}",
                span,
                f"{c.planned:,}",
                f"{c.prompt_tokens:,}",
                f"{pico_to_usd(c.planned_min_pico):.6f}",
                f"{pico_to_usd(c.planned_expected_pico):.6f}",
                f"{pico_to_usd(c.planned_max_pico):.6f}",
            )
        )
    planned = sum(c.planned for c in report.candidates.values())
    rows.append(
        (
            "plan",
            "",
            "",
            f"{planned:,}",
            f"{sum(c.prompt_tokens for c in report.candidates.values()):,}",
            f"{report.min_usd:.6f}",
            f"{report.expected_usd:.6f}",
            f"{report.max_usd:.6f}",
        )
    )
    lines = [f"dry run: {report.rows:,} rows read, nothing sent", "", render_table(header, rows), ""]
    outputs = {n: c.assumed_output for n, c in report.candidates.items() if c.assumed_output}
    if outputs:
        lines.append(
            "expected answer length per row: "
            + ", ".join(f"{n} {v} tokens" for n, v in outputs.items())
            + " (set expected_output_tokens in the config to change it)"
        )
    unbounded = sum(c.unbounded for c in report.candidates.values())
    most = (
        f"at most ${report.max_usd:.4f}"
        if not unbounded
        else (f"no upper bound: {unbounded:,} rows have no max_tokens; set defaults: {{max_tokens: ...}}")
    )
    lines.append(f"the plan is expected to cost ${report.expected_usd:.4f} (at least ${report.min_usd:.4f}, {most})")
    if report.budget_usd is not None:
        verdict = (
            "fits"
            if report.max_usd <= report.budget_usd
            else ("is expected to fit" if report.expected_usd <= report.budget_usd else "is NOT expected to fit")
        )
        lines.append(f"budget ${report.budget_usd:.2f}: the plan {verdict}")
    if report.bad_count:
        lines.append(f"{report.bad_count:,} bad lines (recorded as errors, never sent: fix them), e.g.:")
        lines += [f"  {m}" for m in report.bad_lines]
    if report.unplannable_count:
        lines.append(f"{report.unplannable_count:,} rows no candidate can take, e.g.:")
        lines += [f"  {m}" for m in report.unplannable]
    if report.unknown_models:
        names = ", ".join(f"{m!r} ({n})" for m, n in sorted(report.unknown_models.items()))
        lines.append(f"rows name models that are not candidates (routed by cost instead): {names}")
    return "\n".join(lines)
