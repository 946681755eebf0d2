"""The proxy's store: virtual keys and spend records, in a SQLite file (PostgreSQL: a later store).

Schema changes are numbered migrations applied at start, inside one transaction each, and recorded
in ``schema_version`` — a store opened by a newer polyroute is never written by an older one.
Keys are stored as SHA-256 hashes: the key itself is shown once, at creation, and never again.

Example::

    store = SqliteStore("polyroute.db")
    key, row = store.create_key(alias="team-a", max_budget_usd=5.0, models=["chat"])
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..dbconn import ThreadConnections
from ..ledger import Ledger, SqliteLedger
from ..pricing.prices import pico_to_usd

SQLITE_MIGRATIONS: list[str] = [
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
    # 2: a request id per record (written once: recovery after a crash is idempotent) and its outcome
    """
    ALTER TABLE spend ADD COLUMN request_id TEXT;
    ALTER TABLE spend ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok';
    UPDATE spend SET outcome = 'failed' WHERE status >= 400;
    CREATE UNIQUE INDEX spend_by_request ON spend (request_id);
    """,
    # 3: a key's free-form metadata (LiteLLM's key API); a key's records found without a scan
    """
    ALTER TABLE keys ADD COLUMN metadata TEXT;
    CREATE INDEX spend_by_key ON spend (key_id);
    """,
]
# The same schema in PostgreSQL's types (64-bit money, double-precision times).
POSTGRES_MIGRATIONS: list[str] = [
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY, key_hash TEXT UNIQUE NOT NULL, key_hint TEXT NOT NULL, alias TEXT,
        max_budget_usd DOUBLE PRECISION, rpm INTEGER, tpm INTEGER, models TEXT, expires_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION
    );
    CREATE TABLE spend (
        id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, key_id TEXT, alias TEXT, provider TEXT,
        model TEXT, prompt_tokens BIGINT, completion_tokens BIGINT, cost_pico BIGINT, price_source TEXT,
        latency_ms DOUBLE PRECISION, status INTEGER
    );
    CREATE INDEX spend_by_ts ON spend (ts);
    """,
    """
    ALTER TABLE spend ADD COLUMN request_id TEXT, ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok';
    UPDATE spend SET outcome = 'failed' WHERE status >= 400;
    CREATE UNIQUE INDEX spend_by_request ON spend (request_id);
    """,
    """
    ALTER TABLE keys ADD COLUMN metadata TEXT;
    CREATE INDEX spend_by_key ON spend (key_id);
    """,
]
OUTCOMES = ("ok", "failed", "in_doubt")  # in_doubt: begun before a crash, never ended; charged at its reservation

KEY_PREFIX = "sk-poly-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


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
    metadata: dict[str, Any] | None = None  # the owner's own notes (LiteLLM's key metadata)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the hash."""
        return {k: v for k, v in self.__dict__.items() if k != "key_hash"}


@dataclass(slots=True)
class SpendRecord:
    ts: float
    key_id: str | None
    alias: str | None  # the model group the client asked for (None: unknown, a reservation swept after a crash)
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_pico: int | None
    price_source: str | None
    latency_ms: float
    status: int | None  # None: in doubt (the process died before the request ended)
    request_id: str | None = None  # one record per request id: a repeated write adds nothing
    outcome: str | None = None  # ok / failed / in_doubt (None: from the status)

    def row(self) -> tuple[Any, ...]:
        outcome = self.outcome or ("ok" if self.status is not None and self.status < 400 else "failed")
        return (
            self.ts,
            self.key_id,
            self.alias,
            self.provider,
            self.model,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost_pico,
            self.price_source,
            self.latency_ms,
            self.status,
            self.request_id,
            outcome,
        )


SPEND_FIELDS = (
    "ts",
    "key_id",
    "alias",
    "provider",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_pico",
    "price_source",
    "latency_ms",
    "status",
    "request_id",
    "outcome",
)


_KEY_FIELDS = (
    "id",
    "key_hash",
    "key_hint",
    "alias",
    "max_budget_usd",
    "rpm",
    "tpm",
    "models",
    "expires_at",
    "created_at",
    "revoked_at",
    "metadata",
)
_JSON_FIELDS = ("models", "metadata")  # stored as JSON text


class SqlStore:
    """Keys and spend over a DB-API connection per thread; subclasses give the dialect."""

    migrations: list[str] = []
    placeholder = "?"
    day_sql = "strftime('%Y-%m-%d', ts, 'unixepoch')"  # a record's UTC day, YYYY-MM-DD

    def __init__(self) -> None:
        self._connections = ThreadConnections(self._connect)
        self.migrate()

    def _connect(self) -> Any:
        raise NotImplementedError

    def _conn(self) -> Any:
        return self._connections.get()

    def close(self) -> None:
        """Close every connection this store opened (any thread)."""
        self._connections.close()

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self._conn().execute(self._q(sql), params)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _lock_schema(self, conn: Any) -> None:
        """Serialize migrations across processes starting at once (inside the transaction)."""

    def ledger(self) -> Ledger:
        """The budget ledger living in the same database."""
        raise NotImplementedError

    def identity(self) -> str:
        """A short fingerprint of this database (no secret in it): a flight journal belongs to one store."""
        raise NotImplementedError

    def migrate(self) -> int:
        """Apply pending migrations, each in a transaction; returns the schema version."""
        with self._transaction() as conn:
            self._lock_schema(conn)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0] or 0
            if version > len(self.migrations):
                raise RuntimeError(
                    f"the store has schema version {version}; this polyroute knows {len(self.migrations)}: upgrade it"
                )
            for number in range(version + 1, len(self.migrations) + 1):
                for statement in self.migrations[number - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"), (number,))
        return len(self.migrations)

    def ping(self) -> bool:
        try:
            self._exec("SELECT 1").fetchone()
        except Exception:
            return False
        return True

    # ---------------------------------------------------------------- keys
    def create_key(self, **fields: Any) -> tuple[str, KeyRow]:
        """A new key (returned once, in clear) and its stored row."""
        key = KEY_PREFIX + os.urandom(24).hex()
        row = KeyRow(id=os.urandom(8).hex(), key_hash=hash_key(key), key_hint=key[:12] + "…", **fields)
        self._exec(
            f"INSERT INTO keys ({', '.join(_KEY_FIELDS)}) VALUES ({', '.join('?' * len(_KEY_FIELDS))})",
            self._values(row),
        )
        return key, row

    @staticmethod
    def _values(row: KeyRow) -> tuple[Any, ...]:
        data = dict(row.__dict__)
        for name in _JSON_FIELDS:
            data[name] = None if data[name] is None else orjson.dumps(data[name]).decode()
        return tuple(data[f] for f in _KEY_FIELDS)

    @staticmethod
    def _row(values: Any) -> KeyRow:
        data = dict(zip(_KEY_FIELDS, values, strict=True))
        for name in _JSON_FIELDS:
            data[name] = None if data[name] is None else orjson.loads(data[name])
        return KeyRow(**data)

    def keys(self) -> list[KeyRow]:
        cursor = self._exec(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys ORDER BY created_at")
        return [self._row(v) for v in cursor.fetchall()]

    def key_by_hash(self, key_hash: str) -> KeyRow | None:
        values = self._exec(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return None if values is None else self._row(values)

    def key_by_id(self, key_id: str) -> KeyRow | None:
        values = self._exec(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if values is None else self._row(values)

    def keys_by_alias(self, alias: str) -> list[KeyRow]:
        """The keys named ``alias``, revoked ones included, oldest first."""
        cursor = self._exec(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys WHERE alias = ? ORDER BY created_at", (alias,))
        return [self._row(v) for v in cursor.fetchall()]

    def update_key(self, key_id: str, **fields: Any) -> KeyRow | None:
        if fields:
            for name in _JSON_FIELDS:
                if fields.get(name) is not None:
                    fields[name] = orjson.dumps(fields[name]).decode()
            sets = ", ".join(f"{name} = ?" for name in fields)
            self._exec(f"UPDATE keys SET {sets} WHERE id = ?", (*fields.values(), key_id))
        values = self._exec(f"SELECT {', '.join(_KEY_FIELDS)} FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if values is None else self._row(values)

    def revoke_keys(self, key_ids: list[str], at: float) -> int:
        """Revoke these keys in one statement (all or none); returns how many were live.

        Example::

            store.revoke_keys(["3f2a...", "9c01..."], time.time())  # 2
        """
        if not key_ids:
            return 0
        marks = ", ".join("?" * len(key_ids))
        cursor = self._exec(
            f"UPDATE keys SET revoked_at = ? WHERE id IN ({marks}) AND revoked_at IS NULL", (at, *key_ids)
        )
        return int(cursor.rowcount)

    # ---------------------------------------------------------------- spend
    def add_spend(self, records: list[SpendRecord]) -> None:
        """Write records; one with a request id already stored is skipped (recovery may write it again)."""
        if not records:
            return
        sql = self._q(
            f"INSERT INTO spend ({', '.join(SPEND_FIELDS)}) VALUES ({', '.join('?' * len(SPEND_FIELDS))}) "
            "ON CONFLICT DO NOTHING"
        )
        with self._transaction() as conn:
            conn.cursor().executemany(sql, [r.row() for r in records])

    def spend_report(self, group_by: str, since: float | None, outcome: str | None = None) -> list[dict[str, Any]]:
        """Totals per key, model or provider; in-doubt records (a crash) are also counted apart."""
        column = {"key": "key_id", "model": "alias", "provider": "provider"}[group_by]
        where, params = "ts >= ?", [since or 0.0]
        if outcome is not None:
            where += " AND outcome = ?"
        args = (*params, outcome) if outcome is not None else tuple(params)
        rows = self._exec(
            f"SELECT {column}, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            f"COALESCE(SUM(cost_pico), 0), SUM(CASE WHEN cost_pico IS NULL THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN outcome = 'in_doubt' THEN 1 ELSE 0 END), "
            f"COALESCE(SUM(CASE WHEN outcome = 'in_doubt' THEN cost_pico ELSE 0 END), 0) "
            f"FROM spend WHERE {where} GROUP BY {column} ORDER BY 5 DESC",
            args,
        ).fetchall()
        return [
            {
                group_by: r[0],
                "requests": int(r[1]),
                "prompt_tokens": int(r[2]),
                "completion_tokens": int(r[3]),
                "cost_usd": pico_to_usd(int(r[4])),
                "unpriced_requests": int(r[5]),
                "in_doubt_requests": int(r[6]),
                "in_doubt_cost_usd": pico_to_usd(int(r[7])),
            }
            for r in rows
        ]

    def spend_records(self, key_id: str | None = None) -> list[SpendRecord]:
        """Every stored record (of one key), oldest first: for tests and audits."""
        where, params = ("WHERE key_id = ?", (key_id,)) if key_id is not None else ("", ())
        rows = self._exec(f"SELECT {', '.join(SPEND_FIELDS)} FROM spend {where} ORDER BY id", params).fetchall()
        return [SpendRecord(*r) for r in rows]

    def key_spend(self, key_ids: list[str] | None = None) -> dict[str, tuple[int, int]]:
        """``{key id: (cost in pico-USD, requests)}`` over the stored records of ``key_ids`` (None: every key).

        Example::

            store.key_spend(["3f2a..."])  # {"3f2a...": (1200000, 3)}
        """
        where = "key_id IS NOT NULL"
        params: tuple[str, ...] = ()
        if key_ids is not None:
            if not key_ids:
                return {}
            where, params = f"key_id IN ({', '.join('?' * len(key_ids))})", tuple(key_ids)
        rows = self._exec(
            f"SELECT key_id, COALESCE(SUM(cost_pico), 0), COUNT(*) FROM spend WHERE {where} GROUP BY key_id", params
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def spend_log(
        self,
        *,
        key_id: str | None = None,
        request_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[SpendRecord]:
        """Stored records, oldest first, filtered by key, request id and time (``since <= ts < until``); at most
        ``limit`` of them (the newest).

        Example::

            store.spend_log(key_id="3f2a...", since=time.time() - 86_400)
        """
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("key_id = ?", key_id),
            ("request_id = ?", request_id),
            ("ts >= ?", since),
            ("ts < ?", until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._exec(
            f"SELECT {', '.join(SPEND_FIELDS)} FROM spend {where} ORDER BY ts DESC, id DESC LIMIT ?", (*params, limit)
        ).fetchall()
        return [SpendRecord(*r) for r in reversed(rows)]

    def spend_by_day(
        self, since: float | None, until: float | None, key_id: str | None = None
    ) -> list[tuple[str, str | None, str | None, int]]:
        """``(UTC day, key id, model alias, cost in pico-USD)`` totals of the records in ``since <= ts < until``.

        Example::

            store.spend_by_day(since, until)  # [("2026-12-05", "3f2a...", "chat", 1200000), ...]
        """
        clauses = ["ts >= ?", "ts < ?"]
        params: list[Any] = [since or 0.0, until if until is not None else 1e12]
        if key_id is not None:
            clauses.append("key_id = ?")
            params.append(key_id)
        rows = self._exec(
            f"SELECT {self.day_sql}, key_id, alias, COALESCE(SUM(cost_pico), 0) FROM spend "
            f"WHERE {' AND '.join(clauses)} GROUP BY 1, 2, 3 ORDER BY 1",
            tuple(params),
        ).fetchall()
        return [(str(r[0]), r[1], r[2], int(r[3])) for r in rows]

    def spend_count(self) -> int:
        return int(self._exec("SELECT COUNT(*) FROM spend").fetchone()[0])


class SqliteStore(SqlStore):
    """Keys and spend in one SQLite file (WAL; one connection per thread)."""

    migrations = SQLITE_MIGRATIONS

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__()

    def _connect(self) -> Any:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def ledger(self) -> Ledger:
        return SqliteLedger(self.path)

    def identity(self) -> str:
        return "sqlite:" + hashlib.sha256(os.path.realpath(self.path).encode()).hexdigest()[:16]


class PostgresStore(SqlStore):
    """Keys and spend in PostgreSQL (``database_url: postgresql://...``); replicas share it."""

    migrations = POSTGRES_MIGRATIONS
    placeholder = "%s"
    day_sql = "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        super().__init__()

    def __repr__(self) -> str:  # the URL may hold a password
        return f"PostgresStore(schema={self.schema!r})"

    def _connect(self) -> Any:
        import psycopg

        options = f"-c search_path={self.schema}" if self.schema else None
        return (
            psycopg.connect(self.url, autocommit=True, options=options)
            if options
            else psycopg.connect(self.url, autocommit=True)
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.transaction():
            yield conn

    def _lock_schema(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(7316001)")  # replicas starting at once migrate one by one

    def ledger(self) -> Ledger:
        from ..ledger_pg import PostgresLedger

        return PostgresLedger(self.url, schema=self.schema)

    def identity(self) -> str:  # hashed: the URL may hold a password
        return "postgres:" + hashlib.sha256(f"{self.url}|{self.schema}".encode()).hexdigest()[:16]
