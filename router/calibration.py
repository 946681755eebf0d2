"""How many prompt tokens an upstream bills compared with our local count, learned from its usage.

Chat templates, injected system prompts and other tokenizers make upstreams count more than the
text we count (gpt-oss adds ~70 tokens to any prompt). A budget's worst case must bound what the
upstream bills, so each deployment's overhead is learned from the usage it reports: after every
budgeted call, ``reported - ceil(local * (1 + margin))`` raises the deployment's overhead when it is
larger. The bound ``ceil(local * (1 + margin)) + overhead`` then covers every count seen so far.

Until a deployment has reported usage, its prompts are bounded with a generous first-call overhead
(:data:`FIRST_CALL_OVERHEAD`, or one configured with :meth:`PromptCounts.configure`) and budgeted
calls to it are admitted one at a time, so a wrong guess can cost at most one call's difference.

Learned values are kept in memory and, when the catalog has a cache directory, in
``prompt-counts.json`` there, so a restart starts calibrated. See ARCHITECTURE.md (budgets).

Example::

    counts = PromptCounts()
    key = counts.key_of(target, "together")
    counts.bound(key, local=12, margin=0.25)         # (12*1.25 -> 16) + 256 first-call overhead
    counts.observe(key, local=12, reported=100, margin=0.25)
    counts.bound(key, local=12, margin=0.25)         # 16 + 84 = 100
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from pathlib import Path
from typing import Any

import orjson

from providers.spec import Target

DEFAULT_MARGIN = 0.25  # Budget's default prompt margin: our tokenizer may count less than the upstream's
FIRST_CALL_OVERHEAD = 256  # tokens: above the templates and injected prompts seen in practice (gpt-oss ~70)
_FILE = "prompt-counts.json"


def with_margin(local: int, margin: float) -> int:
    return math.ceil(local * (1 + margin))


class PromptCounts:
    """Learned prompt overheads per deployment, and the one-at-a-time gate for unlearned ones."""

    def __init__(self, path: str | Path | None = None, *, first_call_overhead: int = FIRST_CALL_OVERHEAD) -> None:
        self.path = Path(path) if path else None
        self.first_call_overhead = first_call_overhead
        self._lock = threading.Lock()
        self._learned: dict[str, int] = {}  # deployment key -> overhead that covers every count seen
        self._configured: dict[str, int] = {}  # key prefix -> overhead set by the user (no gate)
        self._sync_gates: dict[str, threading.Lock] = {}
        self._async_gates: dict[tuple[str, int], asyncio.Lock] = {}
        self._loaded = False
        self.version = 0  # grows with every learned change (plans made before it are stale)

    # ---------------------------------------------------------------- keys
    @staticmethod
    def key_of(target: Target, served: str | None = None) -> str:
        """One deployment: where the call goes, the model string, and the provider that serves it (HF
        routes reach several providers, each with its own chat template)."""
        return f"{target.api_base}|{target.model_string}|{served or target.label}"

    @staticmethod
    def key_from(api_base: str, model_string: str, served: str) -> str:
        """:meth:`key_of` from a result's meta (``api_base``, ``model_string``, ``provider``)."""
        return f"{api_base}|{model_string}|{served}"

    @staticmethod
    def gate_of(target: Target) -> str:
        return f"{target.api_base}|{target.model}"

    def configure(self, model_string_or_key: str, overhead: int) -> None:
        """Set the prompt overhead of a deployment yourself (tokens added to every prompt): its calls are
        then bounded with it and never wait for a first call to report. Matches keys that contain it."""
        if isinstance(overhead, bool) or not isinstance(overhead, int) or overhead < 0:
            raise ValueError(f"a prompt overhead is a number of tokens >= 0, got {overhead!r}")
        with self._lock:
            self._configured[model_string_or_key] = overhead

    # ---------------------------------------------------------------- bound and learn
    def _configured_for(self, key: str) -> int | None:
        found = [v for k, v in self._configured.items() if k in key]
        return max(found) if found else None

    def overhead(self, key: str) -> int | None:
        """The overhead known for ``key`` (learned or configured), None while unknown."""
        self._load()
        learned = self._learned.get(key)
        configured = self._configured_for(key) if self._configured else None
        if learned is None:
            return configured
        return learned if configured is None else max(learned, configured)

    def bound(self, key: str, local: int, margin: float) -> tuple[int, bool]:
        """(an upper bound of the upstream's prompt count, whether it is known rather than a first-call guess)."""
        known = self.overhead(key)
        return with_margin(local, margin) + (self.first_call_overhead if known is None else known), known is not None

    def estimate(self, key: str, local: int, margin: float) -> int:
        """The prompt count to charge when the upstream never said (a stream left early): the bound."""
        return self.bound(key, local, margin)[0]

    def observe(self, key: str, local: int, reported: int, margin: float) -> None:
        """Learn from one call's reported prompt tokens (``local`` is our count of the same prompt)."""
        excess = max(0, reported - with_margin(local, margin))
        self._load()
        with self._lock:
            before = self._learned.get(key)
            if before is not None and excess <= before:
                return
            self._learned[key] = excess
            self.version += 1
            data = dict(self._learned)
        self._save(data)

    # ---------------------------------------------------------------- admission of unlearned deployments
    def sync_gate(self, gate: str) -> threading.Lock:
        with self._lock:
            lock = self._sync_gates.get(gate)
            if lock is None:
                lock = self._sync_gates[gate] = threading.Lock()
            return lock

    def async_gate(self, gate: str) -> asyncio.Lock:
        loop_id = id(asyncio.get_running_loop())
        with self._lock:
            lock = self._async_gates.get((gate, loop_id))
            if lock is None:
                lock = self._async_gates[(gate, loop_id)] = asyncio.Lock()
            return lock

    # ---------------------------------------------------------------- persistence
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None:
            return
        with contextlib.suppress(OSError, orjson.JSONDecodeError, ValueError):
            data: Any = orjson.loads(self.path.read_bytes())
            if isinstance(data, dict):
                with self._lock:
                    for k, v in data.items():
                        if isinstance(k, str) and type(v) is int and v >= 0:
                            self._learned[k] = max(v, self._learned.get(k, 0))

    def _save(self, data: dict[str, int]) -> None:
        if self.path is None:
            return
        try:  # rare (a deployment's overhead grew): a small atomic file write
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
            tmp.replace(self.path)
        except OSError:
            pass  # learned values stay in memory; the next start learns again (one call at a time)


def counts_file(cache_dir: Path | None) -> Path | None:
    return None if cache_dir is None else cache_dir / _FILE
