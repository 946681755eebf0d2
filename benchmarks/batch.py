"""Batch jobs: ``run_batch`` rows/s at 64 concurrent with its journal, vs raw aiohttp and LiteLLM; memory.

Run from the repo root: ``python -m benchmarks.batch`` (about 2.5 minutes) or ``--quick`` (about 35 s).
Targets (the batch issue): 10,000 rows against a local upstream at concurrency 64 run at >= 1,500
rows/s with the journal on, and at >= 10x the rows/s of ``litellm.batch_completion`` on the same input
in the same run; memory stays flat over the job (no whole-file loads).

Every run is a fresh ``python -m benchmarks.batch --child <variant> ...`` process, so its peak RSS
(``VmHWM``, read by the child itself) is its own; the variants run in interleaved rounds and
medians are reported. See benchmarks/README.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._harness import (
    API_KEY,
    HEADERS,
    MAX_TOKENS,
    MODEL,
    REPO,
    UPSTREAM_MODEL,
    environment_line,
    heading,
    interleave,
    main_or_child,
    median,
    parse_args,
    table,
    upstream,
    verdict,
)

CONCURRENCY = 64
BUDGET_USD = 100.0  # large enough for every row; set so that every row is reserved and settled
TARGET_RPS = 1500
TARGET_VS_LITELLM = 10
GROWTH_SHARE, GROWTH_MB = 0.15, 10.0  # "flat": the large job's peak within +15% or +10 MB of the small's


# ------------------------------------------------------------------ inputs


def write_input(path: Path, rows: int) -> None:
    """OpenAI Batch request lines, each with its own custom_id and prompt."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(
                json.dumps(
                    {
                        "custom_id": f"req-{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": UPSTREAM_MODEL,
                            "messages": [{"role": "user", "content": f"row {i}: say hi"}],
                            "max_tokens": MAX_TOKENS,
                        },
                    }
                )
                + "\n"
            )


def batch_config(url: str) -> dict[str, Any]:
    return {
        "candidates": [{"name": "bench", "model": MODEL, "params": {"api_base": f"{url}/v1", "api_key": API_KEY}}],
        "pricing": [{"model": MODEL, "input_per_million": 1, "output_per_million": 2}],
        "defaults": {"max_tokens": MAX_TOKENS},
    }


def check_output(output: Path, rows: int) -> None:
    """Every custom_id of the input exactly once, every one a 200 with the upstream's echo."""
    seen: set[str] = set()
    lines = 0
    with open(output, "rb") as f:
        for raw in f:
            lines += 1
            rec = json.loads(raw)
            cid = rec["custom_id"]
            if cid in seen:
                raise RuntimeError(f"{output}: custom_id {cid!r} appears twice")
            seen.add(cid)
            content = rec["response"]["body"]["choices"][0]["message"]["content"]
            if rec["error"] is not None or not content.startswith("Echo: row "):
                raise RuntimeError(f"{output}: line {lines} is not a success: {raw[:300]!r}")
    if lines != rows or seen != {f"req-{i}" for i in range(rows)}:
        raise RuntimeError(f"{output}: {lines} lines, {len(seen)} distinct custom_ids; expected {rows}")


# ------------------------------------------------------------------ the children (one fresh process per run)


def _vm(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child_polyroute(input_path: str, output: str, url: str) -> dict[str, Any]:
    from router.batch import parse_batch_config, run_batch

    config = parse_batch_config(batch_config(url))
    before, cpu, start = _vm("VmRSS"), time.process_time(), time.perf_counter()
    result = run_batch(input_path, output, config, budget_usd=BUDGET_USD, concurrency=CONCURRENCY)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "wall": wall,
        "cpu": cpu,
        "exit_code": result.exit_code,
        "reason": result.reason,
        "ok": result.ok,
        "failed": result.failed,
        "spent_usd": result.spent_usd,
        "rss_before": before,
    }


def _child_aiohttp(input_path: str, output: str, url: str) -> dict[str, Any]:
    """The same rows from the same file, 64 workers on one aiohttp session; answers parsed, not kept."""
    import asyncio

    import aiohttp
    import orjson

    endpoint = f"{url}/v1/chat/completions"

    async def run() -> int:
        ok = 0
        async with aiohttp.ClientSession() as session:
            with open(input_path, "rb") as f:
                lines = iter(f)

                async def worker() -> None:
                    nonlocal ok
                    for raw in lines:  # shared iterator: each line is taken by one worker
                        row = orjson.loads(raw)
                        async with session.post(endpoint, data=orjson.dumps(row["body"]), headers=HEADERS) as resp:
                            answer = orjson.loads(await resp.read())
                        if answer["choices"][0]["message"]["content"].startswith("Echo: row "):
                            ok += 1

                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return ok

    before, cpu, start = _vm("VmRSS"), time.process_time(), time.perf_counter()
    ok = asyncio.run(run())
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu, "ok": ok, "rss_before": before}


def _child_litellm(input_path: str, output: str, url: str) -> dict[str, Any]:
    """``litellm.batch_completion`` on the input's messages (it takes a list: the input is loaded whole)."""
    from ._harness import import_litellm

    litellm = import_litellm()
    with open(input_path, "rb") as f:
        messages = [json.loads(raw)["body"]["messages"] for raw in f]

    def call(batch: list[Any]) -> int:
        answers = litellm.batch_completion(
            model=MODEL,
            messages=batch,
            api_base=f"{url}/v1",
            api_key=API_KEY,
            max_tokens=MAX_TOKENS,
            max_workers=CONCURRENCY,
        )
        bad = [a for a in answers if isinstance(a, Exception) or not a.choices[0].message.content.startswith("Echo")]
        if bad:
            raise RuntimeError(f"litellm.batch_completion: {len(bad)} of {len(batch)} failed, e.g. {bad[0]!r}")
        return len(answers)

    call(messages[:CONCURRENCY])  # warm-up (lazy imports, client cache): favours LiteLLM, if anything
    before, cpu, start = _vm("VmRSS"), time.process_time(), time.perf_counter()
    ok = call(messages)
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu, "ok": ok, "rss_before": before}


CHILDREN: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "polyroute": _child_polyroute,
    "aiohttp": _child_aiohttp,
    "litellm": _child_litellm,
}


def child_main(argv: list[str]) -> None:
    variant, input_path, output, url = argv
    out = CHILDREN[variant](input_path, output, url)
    out["peak_rss"] = _vm("VmHWM")
    print("RESULT " + json.dumps(out), flush=True)


class RssSampler:
    """``VmRSS`` of a process every ``interval`` seconds, with the time since start."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    rss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            self.samples.append((time.monotonic() - start, rss))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def run_child(
    variant: str, input_path: Path, output: Path, url: str, sample: bool = False
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Run one variant in a fresh process; its RESULT line, and its VmRSS over time when ``sample``."""
    for path in (output, Path(f"{output}.journal")):
        path.unlink(missing_ok=True)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.batch", "--child", variant, str(input_path), str(output), url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = RssSampler(proc.pid) if sample else None
    stdout, stderr = proc.communicate()
    samples = sampler.stop() if sampler is not None else []
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the {variant} child failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT ")), samples


# ------------------------------------------------------------------ the benchmark


def main() -> None:
    args = parse_args(__doc__ or "")
    quick = args.quick
    rows, lite_rows, rounds, large_factor = (2_000, 500, 1, 5) if quick else (10_000, 1_000, 3, 5)
    large_rows = rows * large_factor
    print(f"polyroute batch benchmark{' (--quick)' if quick else ''}: {environment_line('asyncio')}")
    have_litellm = importlib.util.find_spec("litellm") is not None  # imported only in its children
    if not have_litellm:
        print("LiteLLM not installed: pip install litellm")

    with tempfile.TemporaryDirectory(prefix="polyroute-batch-bench-") as tmp, upstream() as url:
        d = Path(tmp)
        inputs = {
            "warm": d / "warm.jsonl",
            "main": d / "main.jsonl",
            "large": d / "large.jsonl",
            "lite": d / "lite.jsonl",
        }
        for name, n in (("warm", 1_000), ("main", rows), ("large", large_rows), ("lite", lite_rows)):
            write_input(inputs[name], n)
        out = d / "out.jsonl"

        # Warm-up: .pyc files, the page cache, the upstream's first connections.
        for kind in ("polyroute", "aiohttp"):
            run_child(kind, inputs["warm"], out, url)

        info: dict[str, list[dict[str, Any]]] = {"polyroute": [], "raw aiohttp": [], "litellm": []}

        def variant(name: str, child: str, input_path: Path, n: int) -> Callable[[], list[float]]:
            def run() -> list[float]:
                res, _ = run_child(child, input_path, out, url)
                if child == "polyroute":
                    if res["exit_code"] != 0:
                        raise RuntimeError(f"run_batch ended {res['reason']} (exit code {res['exit_code']}): {res}")
                    check_output(out, n)
                elif res["ok"] != n:
                    raise RuntimeError(f"{name}: {res['ok']} of {n} rows answered")
                info[name].append(res)
                return [n / res["wall"]]

            return run

        variants = {
            "polyroute": variant("polyroute", "polyroute", inputs["main"], rows),
            "raw aiohttp": variant("raw aiohttp", "aiohttp", inputs["main"], rows),
        }
        if have_litellm:
            variants["litellm"] = variant("litellm", "litellm", inputs["lite"], lite_rows)
        heading(
            f"1. rows/s at concurrency {CONCURRENCY}: {rows:,} rows (LiteLLM: {lite_rows:,}), "
            f"{rounds} interleaved round{'s' * (rounds > 1)}, a fresh process per run"
        )
        samples = interleave(variants, rounds)
        rate = {name: median(s) for name, s in samples.items()}
        base = rate["raw aiohttp"]
        table_rows = []
        for name, s in samples.items():
            res, n = info[name], lite_rows if name == "litellm" else rows
            table_rows.append(
                [
                    name,
                    f"{n:,}",
                    f"{rate[name]:,.0f}",
                    f"{min(s):,.0f}-{max(s):,.0f}",
                    f"{median([r['wall'] for r in res]):.2f}",
                    f"{rate[name] / base:.2f}x",
                    f"{rate[name] / rate['litellm']:.1f}x" if have_litellm else "-",
                    f"{median([r['cpu'] / n for r in res]) * 1e3:.2f}",
                    f"{median([r['peak_rss'] for r in res]):.1f}",
                ]
            )
        table(
            [
                "variant",
                "rows",
                "median rows/s",
                "range over rounds",
                "wall s",
                "vs raw aiohttp",
                "vs litellm",
                "CPU ms/row",
                "peak RSS MB",
            ],
            table_rows,
        )
        print(
            f"(polyroute: journal on, budget ${BUDGET_USD:.0f} so every row is reserved and settled; its wall "
            "time is the whole run_batch call: input scan, journal, tokenizer and catalog load, every row; "
            "raw aiohttp reads the same file and parses each answer but writes nothing; LiteLLM gets a "
            f"{CONCURRENCY}-row warm-up first)"
        )

        heading(f"2. memory: polyroute on {rows:,} vs {large_rows:,} rows (one run each, VmRSS sampled every 0.2 s)")
        small = median([r["peak_rss"] for r in info["polyroute"]])
        small_before = median([r["rss_before"] for r in info["polyroute"]])
        large, curve = run_child("polyroute", inputs["large"], out, url, sample=True)
        if large["exit_code"] != 0:
            raise RuntimeError(f"run_batch on {large_rows:,} rows ended {large['reason']}: {large}")
        check_output(out, large_rows)
        wall = large["wall"]
        points = []
        if curve:
            span = curve[-1][0]
            for share in (0.25, 0.5, 0.75, 1.0):
                points.append(f"{max(rss for t, rss in curve if t <= share * span):.1f}")
        table(
            ["rows", "rows/s", "RSS before run_batch MB", "peak RSS MB", "VmRSS at 25/50/75/100% of the run MB"],
            [
                [f"{rows:,}", f"{rate['polyroute']:,.0f}", f"{small_before:.1f}", f"{small:.1f}", "-"],
                [
                    f"{large_rows:,}",
                    f"{large_rows / wall:,.0f}",
                    f"{large['rss_before']:.1f}",
                    f"{large['peak_rss']:.1f}",
                    " / ".join(points) or "-",
                ],
            ],
        )

    growth = large["peak_rss"] - small
    allowed = max(small * GROWTH_SHARE, GROWTH_MB)
    heading("verdicts")
    print(
        verdict(
            rate["polyroute"] >= TARGET_RPS,
            f"{rows:,} rows at concurrency {CONCURRENCY} >= {TARGET_RPS:,} rows/s with the journal on",
            f"{rate['polyroute']:,.0f} rows/s (absolute: this is a noisy 2-core "
            f"box that also runs the upstream; raw aiohttp did {base:,.0f} rows/s here)",
        )
    )
    if have_litellm:
        ratio = rate["polyroute"] / rate["litellm"]
        print(
            verdict(
                ratio >= TARGET_VS_LITELLM,
                f"polyroute >= {TARGET_VS_LITELLM}x litellm.batch_completion rows/s",
                f"{ratio:.1f}x ({rate['polyroute']:,.0f} vs {rate['litellm']:,.0f} rows/s)",
            )
        )
    else:
        print("INFO no LiteLLM ratio: LiteLLM not installed: pip install litellm")
    print(
        verdict(
            growth <= allowed,
            f"memory flat: peak RSS on {large_rows:,} rows within +{GROWTH_SHARE:.0%} or "
            f"+{GROWTH_MB:.0f} MB of {rows:,} rows",
            f"{small:.1f} -> {large['peak_rss']:.1f} MB "
            f"({growth:+.1f} MB, {growth / small:+.1%}; allowed +{allowed:.1f} MB)",
        )
    )
    print(f"INFO polyroute {rate['polyroute'] / base:.2f}x raw aiohttp (no journal, no parsing into types, no cost)")


if __name__ == "__main__":
    main_or_child(main, child_main)
