"""Whether a lock file is held by a live process: batch journals and the proxy's flight journals both
mark "a process is working here" with an ``flock`` that dies with the process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def lock_held(path: str | Path, *, exclusive: bool = False) -> bool | None:
    """True when another process holds ``path``'s lock, False when nobody does, None when there is no file.

    ``exclusive`` probes with an exclusive lock (a concurrent prober then also counts as a holder)."""
    flags = os.O_RDWR if exclusive else os.O_RDONLY
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock we took
    return False
