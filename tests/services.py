"""Real Redis for tests: the machine's server (a fresh key prefix per test) or a private redis-server
this test starts, freezes and stops. Tests skip with a reason when Redis is absent, and fail instead
under POLYROUTE_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

REDIS_URL = os.environ.get("POLYROUTE_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("POLYROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(what: str, why: object) -> None:
    if os.environ.get("POLYROUTE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here (POLYROUTE_REQUIRE_SERVICES=1): {why}")
    pytest.skip(f"{what} not available: {why}")


def require_redis(url: str = REDIS_URL) -> None:
    try:
        import redis
    except ImportError as e:
        unavailable("the redis client", e)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as e:
        unavailable(f"Redis at {url}", e)


def fresh_prefix() -> str:
    return f"polyroute-test-{uuid.uuid4().hex[:12]}"


def drop_prefix(prefix: str, url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def postgres_schema(label: str) -> Iterator[str]:
    """A fresh schema on the machine's PostgreSQL (its name), dropped afterwards."""
    try:
        import psycopg

        conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except Exception as e:
        unavailable(f"PostgreSQL at {POSTGRES_URL}", e)
    name = f"polyroute_{label}_{time.monotonic_ns()}"
    conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        conn.execute(f"DROP SCHEMA {name} CASCADE")
        conn.close()


def postgres_url(schema: str) -> str:
    """A database_url whose connections work in ``schema``."""
    return f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own (nothing on disk), to stop, freeze (SIGSTOP) and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "not on PATH")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
