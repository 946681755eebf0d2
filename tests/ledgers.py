"""Ledgers under contention from several processes at once (SQLite, PostgreSQL, Redis alike)."""

from __future__ import annotations

import subprocess
import sys

_RACE = """
got = 0
for _ in range({tries}):
    rid = ledger.reserve("shared", 10, 600)
    if rid is not None:
        ledger.settle("shared", rid, 10)
        got += 1
print(got)
"""


def race_for_the_cap(imports: str, ledger: str, *, tries: int, timeout: float, processes: int = 3) -> list[int]:
    """Start ``processes`` Pythons that each run ``imports``, make a ledger with the expression ``ledger``, then try
    ``tries`` times to reserve and settle 10 under the cap 600 of the key ``"shared"``, all at once; how many times
    each one got it."""
    script = f"{imports}\nledger = {ledger}\n{_RACE.format(tries=tries)}"
    argv = [sys.executable, "-c", script]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [int(p.communicate(timeout=timeout)[0]) for p in procs]
