"""Proxy replicas as separate `polyroute serve` processes on one config (tests and benchmarks)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.cli import polyroute_argv
from tests.services import free_port


class Replicas:
    """``count`` proxy processes serving ``config`` on their own ports; ``urls[i]`` is replica i."""

    def __init__(self, config: dict[str, Any], count: int = 2, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.count = count
        self.env = env or {}
        self._tmp = tempfile.TemporaryDirectory()
        self.path = Path(self._tmp.name) / "proxy.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []

    def __enter__(self) -> Replicas:
        for i in range(self.count):
            port = free_port()
            log = Path(self._tmp.name) / f"replica-{i}.log"
            env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        polyroute_argv(
                            "serve", "--config", str(self.path), "--port", str(port), "--shutdown-timeout", "5"
                        ),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
            self.urls.append(f"http://127.0.0.1:{port}")
            self.logs.append(log)
        for i, url in enumerate(self.urls):
            self._wait_up(i, url)
        return self

    def _wait_up(self, i: int, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"replica {i} exited: {self.logs[i].read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"replica {i} did not come up: {self.logs[i].read_text()[-2000:]}")

    def log(self, i: int) -> str:
        return self.logs[i].read_text()

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._tmp.cleanup()
