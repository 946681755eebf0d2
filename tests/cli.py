"""Command lines of the ``polyroute`` CLI for tests that run it in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def polyroute_argv(*args: str) -> list[str]:
    """``python -m router.cli ARGS...`` (run it with ``cwd=REPO``)."""
    return [sys.executable, "-m", "router.cli", *args]


def batch_run_argv(src: Path, config: Path, out: Path, *args: str) -> list[str]:
    """``polyroute batch run SRC --config CONFIG --output OUT ARGS...``."""
    return polyroute_argv("batch", "run", str(src), "--config", str(config), "--output", str(out), *args)


def start_serve(config: Path, port: int) -> subprocess.Popen[str]:
    """``polyroute serve --config CONFIG --port PORT``, its output (stdout and stderr) in one text pipe."""
    argv = polyroute_argv("serve", "--config", str(config), "--port", str(port))
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_healthy(url: str, server: subprocess.Popen[str], timeout: float = 30) -> None:
    """Until ``GET /health`` answers 200; fails if the server exits or ``timeout`` s pass first."""
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.TransportError:
            assert server.poll() is None and time.time() < deadline, "the proxy did not start"
            time.sleep(0.1)
