"""The HTML batch report: built from hand-written journals (no job is run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.batch.journal import read_state
from router.batch.report import SPEND_BINS, render_report, write_report
from router.pricing.prices import pico_to_usd

T0 = 1_700_000_000.0
EVIL = "<script>alert(1)</script>"
HEADER = {
    "polyroute_batch": 1,
    "input": "in<put>.jsonl",
    "input_bytes": 10,
    "input_sha256": "ab",
    "rows": 400,
    "output": "/tmp/out.jsonl",
    "created": T0 - 5,
    "gen": 0,
}


def row(
    i: int,
    t: float,
    *,
    ok: bool = True,
    c: int | None = 1_000_000,
    ms: float | None = 100.0,
    k: str = "cheap",
    p: str = "nscale",
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "i": i,
        "ok": ok,
        "t": round(t, 3),
        "c": c if ok else None,
        "k": k,
        "p": p,
        "m": "Qwen/Qwen3-8B",
        "pt": 10,
        "ct": 5,
        "ms": ms,
        "a": 1,
        "o": i * 10,
        "n": 10,
    }
    if not ok:
        rec["e"] = "rate_limit_error"
    return rec


def write(path: Path, records: list[dict[str, Any]], torn: bytes = b"") -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [HEADER, *records]) + torn)
    return path


def job(budget: int | None = 2_000_000_000) -> list[dict[str, Any]]:
    """Two runs two hours apart: varied costs, latencies, failures, unpriced rows and a hostile candidate name."""
    recs: list[dict[str, Any]] = [{"run": 1, "t": T0, "budget_pico": budget, "concurrency": 8}]
    for i in range(200):
        cost = None if i % 23 == 0 else 1_000_000 + i * 1_234
        latency = None if i % 29 == 0 else 50.0 + (i % 10) * 30
        recs.append(row(i, T0 + 1 + i * 0.5, ok=i % 17 != 0, c=cost, ms=latency, k=EVIL if i % 5 == 0 else "cheap"))
    recs.append({"end": 1, "t": T0 + 102, "reason": "interrupted"})
    t1 = T0 + 2 * 3600 + 100
    recs.append({"run": 2, "t": t1, "budget_pico": budget, "concurrency": 8})
    for i in range(200, 350):
        recs.append(row(i, t1 + 1 + (i - 200) * 0.2, ok=i % 13 != 0, c=9_000_000, ms=400.0 + i, p="deepinfra"))
    recs.append({"end": 2, "t": t1 + 40, "reason": "failed_rows"})
    return recs


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    torn = orjson.dumps(row(390, T0 + 99_999, c=10**15))[:-5]  # killed mid-write: must be ignored
    return write(tmp_path / "out.jsonl.journal", job(), torn)


def test_totals_match_the_journal(journal: Path) -> None:
    recs = [r for r in job() if "i" in r]
    spent = sum(r["c"] for r in recs if r["ok"] and r["c"] is not None)
    ok, failed = sum(r["ok"] for r in recs), sum(not r["ok"] for r in recs)
    html = render_report(journal)
    assert f"${pico_to_usd(spent):.6f}" in html
    assert read_state(journal).spent_pico == spent  # the torn line's huge cost is not counted
    assert f"<dt>done ok</dt><dd>{ok}</dd>" in html
    assert f"<dt>failed</dt><dd>{failed}</dd>" in html
    assert f"<dt>pending</dt><dd>{400 - ok - failed}</dd>" in html
    assert "<dt>rows total</dt><dd>400</dd>" in html
    assert "torn line" in html
    assert "2023-11-14T22:13:15Z" in html  # created, UTC
    unpriced = sum(1 for r in recs if r["ok"] and r["c"] is None)
    assert f"+{unpriced} unpriced rows" in html
    assert f'<td class="n">{failed}</td>' in html  # failures by error code
    assert "interrupted" in html and "failed_rows" in html


def test_summary_table_sorted_by_cost_with_total(journal: Path) -> None:
    html = render_report(journal)
    table = html.split("<h2>By candidate and provider</h2>")[1].split("</table>")[0]
    names = re.findall(r"<tr><td>(.*?)</td>", table)
    assert names[0] == "cheap" and table.index("deepinfra") < table.index("&lt;script&gt;")
    costs = [float(c) for c in re.findall(r'<td class="n">(\d+\.\d{6})</td>', table)]
    assert costs[:-1] == sorted(costs[:-1], reverse=True)
    assert costs[-1] == pytest.approx(sum(costs[:-1]))
    assert '<tr class="total"><td>total</td>' in table


def test_self_contained_with_charts(journal: Path) -> None:
    html = render_report(journal)
    assert html.count("<svg") == 3
    assert re.findall(r"https?://", html.replace("http://www.w3.org/2000/svg", "")) == []
    assert not re.search(r"<(script|link|img|iframe)\b", html)
    assert "@import" not in html and "url(" not in html


def test_journal_strings_are_escaped(journal: Path) -> None:
    html = render_report(journal)
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "in&lt;put&gt;.jsonl" in html


def test_budget_line_only_when_a_budget_was_set(tmp_path: Path) -> None:
    with_budget = render_report(write(tmp_path / "a.journal", job(budget=2_000_000_000)))
    assert 'class="budget"' in with_budget and "budget $0.002000" in with_budget
    without = render_report(write(tmp_path / "b.journal", job(budget=None)))
    assert 'class="budget"' not in without and "no budget" in without


def test_gap_between_runs_is_cut_out(journal: Path) -> None:
    html = render_report(journal)
    assert "resumed after 2h idle" in html
    spend = html.split("<h3>Cumulative spend</h3>")[1].split("</svg>")[0]
    ticks = re.findall(r'text-anchor="middle">([\d.]+)([smhd])</text>', spend)
    assert ticks and all(unit in "sm" for _, unit in ticks)  # the axis spans ~130 s of work, not 2 hours


def test_empty_journal(tmp_path: Path) -> None:
    path = write(tmp_path / "e.journal", [{"run": 1, "t": T0, "budget_pico": None, "concurrency": 4}], b'{"i": 0, "o')
    html = render_report(path)
    assert "No rows have finished" in html
    assert "<svg" not in html and "<dt>pending</dt><dd>400</dd>" in html
    assert "no end record" in html


def test_all_failed_no_latency(tmp_path: Path) -> None:
    recs = [row(i, T0 + i, ok=False, ms=None) for i in range(50)]
    html = render_report(write(tmp_path / "f.journal", recs))
    assert "<dt>failed</dt><dd>50</dd>" in html and "<dt>total spend</dt><dd>$0.000000</dd>" in html
    assert html.count("<svg") == 3 and 'class="failed"' in html
    assert "No runs recorded" in html


def test_single_row_and_many_rows(tmp_path: Path) -> None:
    one = render_report(write(tmp_path / "one.journal", [row(0, T0)]))
    assert "$0.000001" in one and one.count("<svg") == 3
    many = write(tmp_path / "many.journal", [row(i, T0 + i * 0.01, c=i) for i in range(5000)])
    html = render_report(many)
    assert f"${pico_to_usd(sum(range(5000))):.6f}" in html
    spend = html.split("<h3>Cumulative spend</h3>")[1].split("</svg>")[0]
    path = re.search(r'<path d="(M[^"]*)" fill="none" stroke="#1f77b4"', spend)
    assert path is not None and path.group(1).count("L") + 1 <= min(SPEND_BINS + 1, 1000)


def test_write_report(journal: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report(journal, out)
    assert out.read_text(encoding="utf-8") == render_report(journal)
