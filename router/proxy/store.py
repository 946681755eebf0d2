"""The proxy's store: virtual keys and spend records, in a SQLite file (PostgreSQL: a later store).

Schema changes are numbered migrations applied at start, inside one transaction each, and recorded
in ``schema_version`` — a store opened by a newer polyroute is never written by an older one.
Keys are stored as SHA-256 hashes: the key itself is shown once, at creation, and never again.

Example::

    store = SqliteStore("polyroute.db")
    key, row = store.create_key(alias="team-a", max_budget_usd=5.0, models=["chat"])
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

MIGRATIONS: list[str] = [
    # 1: keys and spend
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY, key_hash TEXT UNIQUE NOT NULL, key_hint TEXT NOT NULL, alias TEXT,
        max_budget_usd REAL, rpm INTEGER, tpm INTEGER, models TEXT, expires_at REAL,
        created_at REAL NOT NULL, revoked_at REAL
    );
    CREATE TABLE spend (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key_id TEXT, alias TEXT, provider TEXT,
        model TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_pico INTEGER, price_source TEXT,
        latency_ms REAL, status INTEGER
    );
    CREATE INDEX spend_by_ts ON spend (ts);
    """,
]

KEY_PREFIX = "sk-poly-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyRow:
    """A virtual key as stored (never the key itself)."""

    id: str
    key_hash: str
    key_hint: str  # "sk-poly-ab12…": enough to recognise a key, not to use it
    alias: str | None = None
    max_budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None  # allowed model aliases (None: all)
    expires_at: float | None = None
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the hash."""
        return {k: v for k, v in self.__dict__.items() if k != "key_hash"}


@dataclass
class SpendRecord:
    ts: float
    key_id: str | None
    alias: str  # the model group the client asked for
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_pico: int | None
    price_source: str | None
    latency_ms: float
    status: int


_KEY_FIELDS = ("id", "key_hash", "key_hint", "alias", "max_budget_usd", "rpm", "tpm", "models", "expires_at",
               "created_at", "revoked_at")  # fmt: skip


class SqliteStore:
    """Keys and spend in one SQLite file (WAL; one connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self.migrate()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # one process migrates at a time
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0] or 0
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} has schema version {version}; this polyroute knows {len(MIGRATIONS)}: upgrade it"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(MIGRATIONS)

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    # ---------------------------------------------------------------- keys
    def create_key(self, **fields: Any) -> tuple[str, KeyRow]:
        """A new key (returned once, in clear) and its stored row."""
        key = KEY_PREFIX + os.urandom(24).hex()
        row = KeyRow(id=os.urandom(8).hex(), key_hash=hash_key(key), key_hint=key[:12] + "…", **fields)
        self._conn().execute(
            f"INSERT INTO keys ({', '.join(_KEY_FIELDS)}) VALUES ({', '.join('?' * len(_KEY_FIELDS))})",
            self._values(row),
        )
        return key, row

    @staticmethod
    def _values(row: KeyRow) -> tuple[Any, ...]:
        data = dict(row.__dict__)
        data["models"] = None if row.models is None else orjson.dumps(row.models).decode()
        return tuple(data[f] for f in _KEY_FIELDS)

    @staticmethod
    def _row(values: tuple[Any, ...]) -> KeyRow:
        data = dict(zip(_KEY_FIELDS, values, strict=True))
        data["models"] = None if data["models"] is None else orjson.loads(data["models"])
        return KeyRow(**data)

    def keys(self) -> list[KeyRow]:
        cursor = self._conn().execute(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys ORDER BY created_at")
        return [self._row(v) for v in cursor.fetchall()]

    def key_by_hash(self, key_hash: str) -> KeyRow | None:
        values = (
            self._conn()
            .execute(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys WHERE key_hash = ?", (key_hash,))
            .fetchone()
        )
        return None if values is None else self._row(values)

    def update_key(self, key_id: str, **fields: Any) -> KeyRow | None:
        if fields:
            if "models" in fields and fields["models"] is not None:
                fields["models"] = orjson.dumps(fields["models"]).decode()
            sets = ", ".join(f"{name} = ?" for name in fields)
            self._conn().execute(f"UPDATE keys SET {sets} WHERE id = ?", (*fields.values(), key_id))
        values = self._conn().execute(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if values is None else self._row(values)

    # ---------------------------------------------------------------- spend
    def add_spend(self, records: list[SpendRecord]) -> None:
        if not records:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO spend (ts, key_id, alias, provider, model, prompt_tokens, completion_tokens, cost_pico,"
                " price_source, latency_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [tuple(r.__dict__.values()) for r in records],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def spend_report(self, group_by: str, since: float | None) -> list[dict[str, Any]]:
        column = {"key": "key_id", "model": "alias", "provider": "provider"}[group_by]
        rows = (
            self._conn()
            .execute(
                f"SELECT {column}, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
                f"COALESCE(SUM(cost_pico), 0), SUM(CASE WHEN cost_pico IS NULL THEN 1 ELSE 0 END) "
                f"FROM spend WHERE ts >= ? GROUP BY {column} ORDER BY 5 DESC",
                (since or 0.0,),
            )
            .fetchall()
        )
        return [
            {
                group_by: r[0],
                "requests": r[1],
                "prompt_tokens": r[2],
                "completion_tokens": r[3],
                "cost_usd": r[4] / 10**12,
                "unpriced_requests": r[5],
            }
            for r in rows
        ]

    def spend_count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM spend").fetchone()[0])
