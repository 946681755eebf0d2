"""Prometheus metrics for ``GET /metrics``: requests, errors, latency, tokens and cost.

A tiny in-process registry (no dependency): counters and one latency histogram, labelled by model
alias, provider and key id (``master`` for the master key), rendered in Prometheus' text format.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from ..budget import OVERSHOOTS

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


def _fmt(labels: Labels) -> str:
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.latency: dict[Labels, list[int]] = {}
        self.latency_sum: dict[Labels, float] = defaultdict(float)

    def observe(
        self,
        *,
        model: str,
        provider: str | None,
        key: str | None,
        status: int,
        latency_s: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
    ) -> None:
        who = (("model", model), ("provider", provider or "none"), ("key", key or "master"))
        self.counters["polyroute_requests_total"][(*who, ("status", str(status)))] += 1
        if status >= 400:
            self.counters["polyroute_request_errors_total"][(("model", model), ("status", str(status)))] += 1
        self.counters["polyroute_tokens_total"][(*who, ("kind", "prompt"))] += prompt_tokens
        self.counters["polyroute_tokens_total"][(*who, ("kind", "completion"))] += completion_tokens
        if cost_usd is not None:
            self.counters["polyroute_cost_usd_total"][who] += cost_usd
        labels = (("model", model),)
        counts = self.latency.setdefault(labels, [0] * (len(BUCKETS) + 1))
        counts[bisect.bisect_left(BUCKETS, latency_s)] += 1
        self.latency_sum[labels] += latency_s

    def render(self) -> str:
        lines: list[str] = []
        helps = {
            "polyroute_requests_total": "Requests answered, by model alias, provider, key and status.",
            "polyroute_request_errors_total": "Requests that ended in an error status.",
            "polyroute_tokens_total": "Tokens, by kind (prompt / completion).",
            "polyroute_cost_usd_total": "Cost in USD at the serving provider's price.",
        }
        for name, series in self.counters.items():
            lines += [f"# HELP {name} {helps.get(name, name)}", f"# TYPE {name} counter"]
            lines += [f"{name}{_fmt(labels)} {value:.10g}" for labels, value in sorted(series.items())]
        lines += [
            "# HELP polyroute_request_latency_seconds Request latency.",
            "# TYPE polyroute_request_latency_seconds histogram",
        ]
        for labels, counts in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f"polyroute_request_latency_seconds_bucket{_fmt((*labels, ('le', le)))} {cumulative}")
            lines.append(f"polyroute_request_latency_seconds_sum{_fmt(labels)} {self.latency_sum[labels]:.6f}")
            lines.append(f"polyroute_request_latency_seconds_count{_fmt(labels)} {cumulative}")
        lines += [
            "# HELP polyroute_budget_overshoot_usd_total USD settled above reservations (the upstream billed more "
            "than a worst case allowed for; should stay 0).",
            "# TYPE polyroute_budget_overshoot_usd_total counter",
            f"polyroute_budget_overshoot_usd_total {OVERSHOOTS.usd:.10g}",
            "# HELP polyroute_budget_overshoots_total Settlements above their reservation.",
            "# TYPE polyroute_budget_overshoots_total counter",
            f"polyroute_budget_overshoots_total {OVERSHOOTS.count}",
        ]
        return "\n".join(lines) + "\n"


def shared_metrics(shared: Any, ledger: Any) -> str:
    """Gauges of the shared state: whether Redis is reachable, replicas seen, writes owed to it."""
    link = shared.link
    lines = [
        "# HELP polyroute_redis_up 1 when the shared state (Redis) is reachable, 0 when serving on local state.",
        "# TYPE polyroute_redis_up gauge",
        f"polyroute_redis_up {1 if link.up else 0}",
        "# HELP polyroute_redis_errors_total Connection failures to the shared state.",
        "# TYPE polyroute_redis_errors_total counter",
        f"polyroute_redis_errors_total {link.errors}",
        "# HELP polyroute_replicas Proxy replicas sharing this Redis (seen in the last seconds).",
        "# TYPE polyroute_replicas gauge",
        f"polyroute_replicas {shared.replicas}",
    ]
    if hasattr(ledger, "pending"):
        lines += [
            "# HELP polyroute_budget_writes_pending Budget settlements waiting for Redis to come back.",
            "# TYPE polyroute_budget_writes_pending gauge",
            f"polyroute_budget_writes_pending {ledger.pending()}",
        ]
    return "\n".join(lines) + "\n"
