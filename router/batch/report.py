"""A self-contained HTML report of a batch job, read from its journal (inline CSS and SVG, nothing fetched).

Shows the job's facts and runs, rows/tokens/cost by candidate and provider, cumulative spend over
time (with the budget), latency p50/p95 and throughput over time, and failures by error code.

The journal is streamed, never held in memory: :func:`read_state` gives the totals, one pass finds
each run's time span, one more fills fixed-size bins (bounded latency samples per bin). The time
axis is time spent working since the first row finished: idle gaps between runs (job stopped,
resumed later) are cut out and marked by a dashed line.

Example::

    write_report("results.jsonl.journal", "report.html")
    html = render_report("results.jsonl.journal")
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import orjson

from ..pricing.prices import pico_to_usd
from .journal import JobState, journal_records, read_state

SPEND_BINS = 500  # the spend chart has at most SPEND_BINS + 1 points
MAX_SAMPLES = 1000  # latency samples kept per bucket (reservoir)
W, H, ML, MR, MT, MB = 900, 230, 80, 20, 14, 42  # chart size and margins
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:960px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:3px 10px;border-bottom:1px solid #ddd}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600;border-top:2px solid #888}
dt{float:left;width:11em;color:#666}dd{margin:0 0 .2em 11em}svg{display:block;margin-bottom:1.5em}
svg text{font:11px system-ui,sans-serif;fill:#444}.note{color:#666}"""


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(run count so far, record) of each finished-row record; a torn last line is skipped."""
    run = 0
    for n, (_, raw) in enumerate(journal_records(path)):
        rec = orjson.loads(raw)
        if n and isinstance(rec, dict):
            if "run" in rec:
                run += 1
            elif "i" in rec and isinstance(rec.get("t"), (int, float)):
                yield run, rec


class _Bins:
    """Per time bucket: rows ok/failed and latency samples; per (finer) spend bin: cost in pico-USD."""

    def __init__(self, span: float, count: int) -> None:
        self.span, self.count = span, count  # working seconds from the first finished row to the last
        self.ok, self.failed, self.seen = [0] * count, [0] * count, [0] * count
        self.samples: list[list[float]] = [[] for _ in range(count)]
        self.spend = [0] * SPEND_BINS


Scale = Callable[[float], float]
Scan = tuple[_Bins, list[tuple[float, float]], dict[tuple[str, str], set[str]], Counter[str]]


def _scan(path: Path, rows: int) -> Scan:
    """Bins, (x, idle seconds) where a later run resumed, models by route, failures by error code."""
    spans: dict[int, list[float]] = {}
    for run, rec in _rows(path):
        lo_hi = spans.setdefault(run, [rec["t"], rec["t"]])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], rec["t"]), max(lo_hi[1], rec["t"])
    offsets: dict[int, float] = {}
    resumes: list[tuple[float, float]] = []
    total, prev_hi = 0.0, None
    for run, (lo, hi) in sorted(spans.items()):
        offsets[run] = total
        if prev_hi is not None:
            resumes.append((total, max(lo - prev_hi, 0.0)))
        total, prev_hi = total + hi - lo, hi
    bins = _Bins(max(total, 1e-3), min(80, max(10, rows // 4)))
    models: dict[tuple[str, str], set[str]] = {}
    errors: Counter[str] = Counter()
    rng = random.Random(0)
    for run, rec in _rows(path):
        x = min(max(offsets[run] + rec["t"] - spans[run][0], 0.0), bins.span)
        b = min(int(x / bins.span * bins.count), bins.count - 1)
        route = models.setdefault((rec.get("k") or "-", rec.get("p") or "-"), set())
        if rec.get("m") and len(route) < 4:
            route.add(str(rec["m"]))
        if rec.get("ok"):
            bins.ok[b] += 1
            bins.spend[min(int(x / bins.span * SPEND_BINS), SPEND_BINS - 1)] += rec.get("c") or 0
        else:
            bins.failed[b] += 1
            code = str(rec.get("e") or "-")
            if len(errors) < 50 or code in errors:
                errors[code] += 1
        if isinstance(rec.get("ms"), (int, float)):
            bins.seen[b] += 1
            kept = bins.samples[b]
            if len(kept) < MAX_SAMPLES:
                kept.append(float(rec["ms"]))
            elif (j := rng.randrange(bins.seen[b])) < MAX_SAMPLES:
                kept[j] = float(rec["ms"])
    return bins, resumes, models, errors


def _step(raw: float, time: bool) -> float:
    if time and raw >= 1:
        if raw <= _STEPS[-1]:
            return next(s for s in _STEPS if s >= raw)
        return _step(raw / 86400, False) * 86400
    exp = 10.0 ** math.floor(math.log10(raw))
    return next(m for m in (1, 2, 5, 10) if raw / exp <= m) * exp


def _duration(s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.4g}{unit}"
    return f"{s:.4g}s"


def _chart(
    title: str,
    xmax: float,
    ymax: float,
    ylabel: str,
    body: Callable[[Scale, Scale], str],
    resumes: list[tuple[float, float]],
    unit: str = "",
) -> str:
    """An SVG chart frame (axes, ticks, titles) around ``body(sx, sy)``, which draws in data units."""
    ymax = ymax if ymax > 0 else 1.0
    pw, ph = W - ML - MR, H - MT - MB

    def sx(x: float) -> float:
        return round(ML + x / xmax * pw, 1)

    def sy(y: float) -> float:
        return round(MT + ph - min(y, ymax) / ymax * ph, 1)

    out = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">']
    ystep = _step(ymax / 5, False)
    places = max(0, -math.floor(math.log10(ystep)))
    for i in range(int(ymax / ystep + 1e-9) + 1):
        y, label = sy(i * ystep), f"{unit}{i * ystep:,.{places}f}"
        out.append(
            f'<line x1="{ML}" x2="{W - MR}" y1="{y}" y2="{y}" stroke="#eee"/>'
            f'<text x="{ML - 6}" y="{y + 4}" text-anchor="end">{label}</text>'
        )
    xstep = _step(xmax / 8, True)
    for i in range(int(xmax / xstep + 1e-9) + 1):
        x = sx(i * xstep)
        out.append(
            f'<line x1="{x}" x2="{x}" y1="{MT + ph}" y2="{MT + ph + 4}" stroke="#888"/>'
            f'<text x="{x}" y="{MT + ph + 16}" text-anchor="middle">{_duration(i * xstep)}</text>'
        )
    for x, idle in resumes:
        out.append(
            f'<line x1="{sx(x)}" x2="{sx(x)}" y1="{MT}" y2="{MT + ph}" stroke="#999" stroke-dasharray="2 3"/>'
            f'<text x="{sx(x) + 3}" y="{MT + 10}">resumed after {_duration(idle)} idle</text>'
        )
    out.append(body(sx, sy))
    out.append(
        f'<path d="M{ML} {MT}V{MT + ph}H{W - MR}" fill="none" stroke="#888"/>'
        f'<text x="{ML + pw / 2}" y="{H - 4}" text-anchor="middle">working time since the first row '
        f'finished (idle gaps between runs cut out)</text><text transform="translate(14 {MT + ph / 2}) '
        f'rotate(-90)" text-anchor="middle">{escape(ylabel)}</text></svg>'
    )
    return f"<h3>{escape(title)}</h3>" + "".join(out)


def _line(points: list[tuple[float, float]], color: str, dots: bool = False) -> str:
    if not points:
        return ""
    path = "".join(f"{'M' if i == 0 else 'L'}{x} {y}" for i, (x, y) in enumerate(points))
    marks = "".join(f'<circle cx="{x}" cy="{y}" r="2" fill="{color}"/>' for x, y in points) if dots else ""
    return f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>{marks}'


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _charts(bins: _Bins, resumes: list[tuple[float, float]], budgets: list[int]) -> str:
    bw, spend_w = bins.span / bins.count, bins.span / SPEND_BINS
    cum = [0, *itertools.accumulate(bins.spend)]
    top = pico_to_usd(cum[-1])
    shown = [pico_to_usd(b) for b in budgets if pico_to_usd(b) <= 4 * top or not top]
    off_scale = [f"${pico_to_usd(b):,.6f}" for b in budgets if pico_to_usd(b) not in shown]

    def spend(sx: Scale, sy: Scale) -> str:
        pts = [(sx(i * spend_w), sy(pico_to_usd(c))) for i, c in enumerate(cum)]
        marks = "".join(
            f'<line class="budget" x1="{ML}" x2="{W - MR}" y1="{sy(b)}" y2="{sy(b)}" stroke="#c00" '
            f'stroke-dasharray="6 4"/><text x="{ML + 4}" y="{sy(b) - 4}" '
            f'fill="#c00">budget ${b:,.6f}</text>'
            for b in shown
        )
        return _line(pts, "#1f77b4") + marks

    p50 = [(i, _pct(s, 0.5), _pct(s, 0.95)) for i, s in enumerate(bins.samples) if s]
    lat_top = max((p[2] for p in p50), default=1.0) * 1.1

    def latency(sx: Scale, sy: Scale) -> str:
        mid = [(i + 0.5) * bw for i, _, _ in p50]
        return _line([(sx(x), sy(p[1])) for x, p in zip(mid, p50, strict=True)], "#1f77b4", True) + _line(
            [(sx(x), sy(p[2])) for x, p in zip(mid, p50, strict=True)], "#ff7f0e", True
        )

    rates = [((o + f) / bw, f / bw) for o, f in zip(bins.ok, bins.failed, strict=True)]

    def throughput(sx: Scale, sy: Scale) -> str:
        out = []
        for i, (both, failed) in enumerate(rates):
            x, w = sx(i * bw) + 0.5, max(sx((i + 1) * bw) - sx(i * bw) - 1, 0.5)
            if both:
                out.append(
                    f'<rect x="{x}" y="{sy(both)}" width="{w}" height="{sy(failed) - sy(both)}" fill="#2ca02c"/>'
                )
            if failed:
                out.append(
                    f'<rect class="failed" x="{x}" y="{sy(failed)}" width="{w}" height="{sy(0) - sy(failed)}" '
                    'fill="#d62728"/>'
                )
        return "".join(out)

    note = f'<p class="note">Budget off scale: {", ".join(off_scale)}.</p>' if off_scale else ""
    legend = (
        '<p class="note"><span style="color:#1f77b4">■ p50</span> <span style="color:#ff7f0e">■ p95</span>'
        f" latency per bucket ({_duration(bw)} each; rows with a latency)</p>"
    )
    rate_legend = (
        '<p class="note"><span style="color:#2ca02c">■ ok</span> <span style="color:#d62728">■ failed'
        "</span> rows finished per second</p>"
    )
    return (
        _chart("Cumulative spend", bins.span, max([top, *shown]) * 1.05, "spend (USD)", spend, resumes, "$")
        + note
        + _chart("Latency", bins.span, lat_top, "latency (ms)", latency, resumes)
        + legend
        + _chart(
            "Throughput", bins.span, max((r[0] for r in rates), default=1.0) * 1.1, "rows / s", throughput, resumes
        )
        + rate_legend
    )


def _iso(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "?"
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _table(header: list[str], rows: list[list[str]], total: list[str] | None = None, text: int = 1) -> str:
    def tr(cells: list[str], tag: str = "td", cls: str = "") -> str:
        return (
            f"<tr{cls}>"
            + "".join(
                f'<{tag} class="n">{c}</{tag}>' if i >= text else f"<{tag}>{c}</{tag}>" for i, c in enumerate(cells)
            )
            + "</tr>"
        )

    body = "".join(tr(r) for r in rows) + (tr(total, cls=' class="total"') if total else "")
    return f"<table><thead>{tr(header, 'th')}</thead><tbody>{body}</tbody></table>"


def _runs(state: JobState) -> str:
    ends = {r["end"]: r for r in state.runs if "end" in r}
    items = []
    for r in (r for r in state.runs if "run" in r):
        budget = r.get("budget_pico")
        budget_s = "no budget" if budget is None else f"budget ${pico_to_usd(budget):,.6f}"
        end = ends.get(r["run"])
        ended = (
            f"ended {_iso(end.get('t'))}: {escape(str(end.get('reason')))}"
            if end
            else "no end record (killed, or still running)"
        )
        items.append(
            f"<li>run {escape(str(r['run']))}: started {_iso(r.get('t'))}, {budget_s}, "
            f"concurrency {escape(str(r.get('concurrency')))}; {ended}</li>"
        )
    return f"<ul>{''.join(items)}</ul>" if items else "<p>No runs recorded.</p>"


def render_report(journal: str | Path) -> str:
    """The HTML report of the job that ``journal`` (a ``<output>.journal`` file) describes."""
    path = Path(journal)
    state = read_state(path)
    h = state.header
    done = state.ok + state.failed
    spent = f"${pico_to_usd(state.spent_pico):.6f}"
    unpriced = sum(t.unpriced for t in state.by_route.values())
    facts = [
        ("input", escape(str(h.get("input")))),
        ("output", escape(str(h.get("output")))),
        ("created", _iso(h.get("created"))),
        ("rows total", f"{state.rows_total:,}"),
        ("done ok", f"{state.ok:,}"),
        ("failed", f"{state.failed:,}"),
        ("pending", f"{max(state.rows_total - done, 0):,}"),
        ("total spend", spent + (f" (+{unpriced:,} unpriced rows)" if unpriced else "")),
    ]
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>polyroute batch report: "
        f"{escape(path.name)}</title><style>{_CSS}</style></head><body><h1>Batch job report</h1><dl>"
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        + "</dl><h2>Runs</h2>"
        + _runs(state)
    ]
    if state.torn_bytes:
        parts.append(f'<p class="note">The journal ends in a torn line ({state.torn_bytes} bytes, ignored).</p>')
    if not done:
        parts.append("<p><strong>No rows have finished yet.</strong></p></body></html>")
        return "".join(parts)
    bins, resumes, models, errors = _scan(path, done)
    routes = sorted(state.by_route.items(), key=lambda kv: (-kv[1].cost_pico, -kv[1].rows, str(kv[0])))
    rows = [
        [
            escape(str(k)),
            escape(str(p)),
            escape(", ".join(sorted(models.get((k, p), ())))),
            f"{t.rows:,}",
            f"{t.failed:,}",
            f"{t.prompt_tokens:,}",
            f"{t.completion_tokens:,}",
            f"{pico_to_usd(t.cost_pico):.6f}",
            f"{t.unpriced:,}",
        ]
        for (k, p), t in routes
    ]
    tot = list(state.by_route.values())
    total = [
        "total",
        "",
        "",
        f"{sum(t.rows for t in tot):,}",
        f"{state.failed:,}",
        f"{sum(t.prompt_tokens for t in tot):,}",
        f"{sum(t.completion_tokens for t in tot):,}",
        f"{pico_to_usd(state.spent_pico):.6f}",
        f"{unpriced:,}",
    ]
    parts.append(
        "<h2>By candidate and provider</h2>"
        + _table(
            [
                "candidate",
                "provider",
                "models",
                "rows",
                "failed",
                "prompt tokens",
                "output tokens",
                "cost USD",
                "unpriced",
            ],
            rows,
            total,
            3,
        )
    )
    if errors:
        parts.append(
            "<h2>Failures by error code</h2>"
            + _table(["error", "rows"], [[escape(e), f"{n:,}"] for e, n in errors.most_common()])
        )
    budgets = sorted({r["budget_pico"] for r in state.runs if "run" in r and isinstance(r.get("budget_pico"), int)})
    parts.append("<h2>Over time</h2>" + _charts(bins, resumes, budgets) + "</body></html>")
    return "".join(parts)


def write_report(journal: str | Path, html_path: str | Path) -> None:
    """Write :func:`render_report`'s HTML to ``html_path`` (UTF-8)."""
    Path(html_path).write_text(render_report(journal), encoding="utf-8")
