"""Command lines of the ``polyroute`` CLI for tests that run it in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def polyroute_argv(*args: str) -> list[str]:
    """``python -m router.cli ARGS...`` (run it with ``cwd=REPO``)."""
    return [sys.executable, "-m", "router.cli", *args]


def batch_run_argv(src: Path, config: Path, out: Path, *args: str) -> list[str]:
    """``polyroute batch run SRC --config CONFIG --output OUT ARGS...``."""
    return polyroute_argv("batch", "run", str(src), "--config", str(config), "--output", str(out), *args)
