"""The live progress line and the end-of-job summary table.

On a terminal the line is redrawn in place (``\\r``) a few times a second; otherwise (logs, CI) a
plain line is printed every ``interval`` seconds. Both go to stderr, so stdout stays clean.

Example::

    rows 3,200/10,000 (32%) · 1,480 rows/s · $0.4210 of $5.00 · ETA 4s · 12 failed
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from ..pricing.prices import pico_to_usd
from .job import usd
from .journal import JobState


class Progress:
    """Counts rows as they finish; :meth:`run` draws them until cancelled."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = 0.25 if self.live else interval
        self.total = 0
        self.done = 0
        self.failed = 0
        self.spent_pico = 0
        self.budget_pico: int | None = None
        self.done_at_start = 0
        self.started = time.monotonic()
        self._drawn = False

    def begin(self, state: JobState, budget_pico: int | None) -> None:
        self.total = state.rows_total
        self.done = self.done_at_start = state.ok + state.failed
        self.failed = state.failed
        self.spent_pico = state.spent_pico
        self.budget_pico = budget_pico
        self.started = time.monotonic()

    def row(self, ok: bool, cost_pico: int | None) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        self.spent_pico += cost_pico or 0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (self.done - self.done_at_start) / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"rows {self.done:,}/{self.total:,}{share}", f"{rate:,.0f} rows/s"]
        spend = f"${pico_to_usd(self.spent_pico):.4f}"
        if self.budget_pico is not None:
            spend += f" of {usd(self.budget_pico)}"
        parts.append(spend)
        left = self.total - self.done
        if rate > 0 and left > 0:
            parts.append(f"ETA {_duration(left / rate)}")
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        return " · ".join(parts)

    def draw(self, final: bool = False) -> None:
        text = self.line()
        if self.live:
            self.stream.write(f"\r\033[2K{text}" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = True

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                self.draw()
        except asyncio.CancelledError:
            self.draw(final=True)
            raise


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def summary_table(state: JobState) -> str:
    """Rows, tokens and cost by candidate and provider, with a total line."""
    header = ("candidate", "provider", "rows", "failed", "prompt tok", "output tok", "cost USD")
    rows = []
    for (candidate, provider), t in sorted(state.by_route.items(), key=lambda kv: -kv[1].cost_pico):
        cost = f"{pico_to_usd(t.cost_pico):.6f}" + (f" (+{t.unpriced} unpriced)" if t.unpriced else "")
        rows.append(
            (
                candidate,
                provider,
                f"{t.rows:,}",
                f"{t.failed:,}",
                f"{t.prompt_tokens:,}",
                f"{t.completion_tokens:,}",
                cost,
            )
        )
    totals = list(state.by_route.values())
    rows.append(
        (
            "total",
            "",
            f"{sum(t.rows for t in totals):,}",
            f"{sum(t.failed for t in totals):,}",
            f"{sum(t.prompt_tokens for t in totals):,}",
            f"{sum(t.completion_tokens for t in totals):,}",
            f"{pico_to_usd(state.spent_pico):.6f}",
        )
    )
    return render_table(header, rows)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    numeric = [i >= 2 for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(str(v).rjust(w) if numeric[i] else str(v).ljust(w) for i, (v, w) in enumerate(cells))

    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows[:-1]]
    if rows:
        lines += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    return "\n".join(lines)
