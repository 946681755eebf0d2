"""The Redis keys of one Ray batch run: its stop flag and budget, the job's current run and its runs.

Every run of a job gets a random id. The driver fences earlier runs out (the job's ``run`` key names the
current one: a worker of an older run sees it and stops), drops what killed runs left, and seeds the
run's budget in the Redis ledger; workers read the stop flag before each row. See
:mod:`router.batch.ray_engine`.

Example::

    keys = RunKeys(link, input_sha256, Path("results.jsonl"))
    keys.begin(limit_pico)      # this run is the job's current one, with its budget seeded
    keys.set_stop("interrupted")
    keys.end()                  # every block came back: drop the run's keys
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..shared import RedisLink

KEYS_TTL_S = 7 * 86400  # a run's keys outlive a killed driver this long (a new run of the job drops them)
ABANDONED = "abandoned"  # the stop flag of a run its driver gave up (it reads no more results)


class RunKeys:
    """The run's stop flag and budget, the job's current run (the fence) and its runs (to clean up)."""

    def __init__(self, link: RedisLink, facts_sha: str, output: Path) -> None:
        self.link = link
        job = hashlib.blake2b(f"{facts_sha}:{output.resolve()}".encode(), digest_size=8).hexdigest()
        self.run = os.urandom(8).hex()  # unique across processes and machines
        self.ledger_id = f"batch-{facts_sha[:16]}-{self.run}"
        self.job = link.key("batch", job)
        self.stop = f"{self.job}:{self.run}:stop"
        self.fence = f"{self.job}:run"
        self.runs = f"{self.job}:runs"

    def _run_keys(self, run: str, ledger_id: str) -> list[str]:
        from ..shared import RedisLedger

        return [f"{self.job}:{run}:stop", *RedisLedger.keys_of(self.link, ledger_id)]

    def _drop(self, client: Any, run: str, ledger_id: str) -> None:
        client.delete(*self._run_keys(run, ledger_id))
        client.srem(self.runs, f"{run} {ledger_id}")

    def begin(self, limit: int | None) -> None:
        """Drop what earlier (killed) runs of the job left, fence them out, seed this run's budget."""

        def go(client: Any) -> None:
            for entry in client.smembers(self.runs):
                run, ledger_id = entry.decode().split(" ", 1)
                self._drop(client, run, ledger_id)
            pipe = client.pipeline(transaction=True)
            pipe.set(self.fence, self.run, ex=KEYS_TTL_S)
            pipe.sadd(self.runs, f"{self.run} {self.ledger_id}")
            pipe.expire(self.runs, KEYS_TTL_S)
            pipe.execute()

        self.link.run(go)
        if limit is not None:
            from ..shared import RedisLedger

            RedisLedger(self.link).reset(self.ledger_id, 0, ttl_s=KEYS_TTL_S)

    def set_stop(self, reason: str) -> None:
        self.link.run(lambda c: c.set(self.stop, reason, nx=True, ex=KEYS_TTL_S))

    def end(self) -> None:
        """Drop the run's keys: only once no worker can reserve any more (every block came back)."""

        def go(client: Any) -> None:
            self._drop(client, self.run, self.ledger_id)
            if client.get(self.fence) == self.run.encode():
                client.delete(self.fence)

        self.link.run(go)

    def abandon(self) -> None:
        """The run ended with workers possibly still running: stop them (they exit once idle), and keep
        the ledger (a reserve against a dropped budget would start from zero) until it expires or the next
        run drops it."""

        def go(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.set(self.stop, ABANDONED, ex=KEYS_TTL_S)
            for key in self._run_keys(self.run, self.ledger_id):
                pipe.expire(key, KEYS_TTL_S)
            pipe.execute()

        self.link.run(go)
