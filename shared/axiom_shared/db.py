"""libSQL access for every service that owns a database.

One `Database` per process wraps a libsql-client `Client`: `file:` URLs (local libSQL/SQLite
files, what `make run` and the tests use) and `libsql://`/`https://` URLs (a libSQL server or
Turso, with `TURSO_DB_AUTH_TOKEN`) go through the same calls. `batch()` is atomic on both, so a
status change, its audit row and its outbox row commit together or not at all.

libsql-client's local driver opens a fresh connection per call with no busy timeout, so a
concurrent writer (another process, the operator CLI, a backup) surfaces as SQLITE_BUSY at
once: we retry those with a short backoff instead of failing the work.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import libsql_client

from axiom_shared.logging import get_logger

log = get_logger(__name__)

SqlArgs = Sequence[Any] | dict[str, Any] | None
Statement = tuple[str, SqlArgs] | str

_BUSY_CODES = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT"}


class DatabaseError(RuntimeError):
    """A database error whose message is safe to log (no SQL arguments)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class IntegrityError(DatabaseError):
    """A constraint (UNIQUE, CHECK, NOT NULL, FOREIGN KEY) refused the write."""


def normalize_url(url: str) -> str:
    """Make `file:` URLs absolute (and create their folder); leave remote URLs alone."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return url
    raw = url[len("file:") :]
    raw = raw[2:] if raw.startswith("//") else raw
    path = Path(raw).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"file://{path}"


def _to_stmt(stmt: Statement) -> libsql_client.Statement:
    if isinstance(stmt, str):
        return libsql_client.Statement(stmt)
    sql, args = stmt
    return libsql_client.Statement(sql, args)


def _classify(exc: libsql_client.LibsqlError) -> DatabaseError:
    code = getattr(exc, "code", None)
    text = str(exc)
    if (code and "CONSTRAINT" in code) or "constraint failed" in text:
        return IntegrityError(text, code)
    return DatabaseError(text, code)


def _is_busy(exc: libsql_client.LibsqlError) -> bool:
    code = getattr(exc, "code", None) or ""
    return code in _BUSY_CODES or "database is locked" in str(exc)


class Database:
    """Async access to one libSQL database, with busy-retry and one error type."""

    def __init__(self, client: libsql_client.Client, url: str, busy_retry_s: float = 5.0) -> None:
        self._client = client
        self.url = url
        self._busy_retry_s = busy_retry_s

    async def _retrying(self, call: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_retry_s
        delay = 0.005
        while True:
            try:
                return await call()
            except libsql_client.LibsqlError as exc:
                if _is_busy(exc) and loop.time() < deadline:
                    await asyncio.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.2)
                    continue
                raise _classify(exc) from exc

    async def execute(self, sql: str, args: SqlArgs = None) -> libsql_client.ResultSet:
        stmt = _to_stmt((sql, args))
        result: libsql_client.ResultSet = await self._retrying(lambda: self._client.execute(stmt))
        return result

    async def batch(self, statements: Sequence[Statement]) -> list[libsql_client.ResultSet]:
        """Run the statements in one transaction: all of them take effect, or none."""
        stmts = [_to_stmt(s) for s in statements]
        result: list[libsql_client.ResultSet] = await self._retrying(
            lambda: self._client.batch(stmts)
        )
        return result

    async def fetch_all(self, sql: str, args: SqlArgs = None) -> list[dict[str, Any]]:
        rs = await self.execute(sql, args)
        return [dict(zip(rs.columns, row, strict=True)) for row in rs.rows]

    async def fetch_one(self, sql: str, args: SqlArgs = None) -> dict[str, Any] | None:
        rows = await self.fetch_all(sql, args)
        return rows[0] if rows else None

    async def ping(self) -> bool:
        try:
            await self._client.execute("SELECT 1")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self._client.close()


async def open_database(url: str, auth_token: str | None = None) -> Database:
    """Open (and for a file, create) the database at `url`."""
    normalized = normalize_url(url)
    try:
        client = libsql_client.create_client(normalized, auth_token=auth_token)
    except libsql_client.LibsqlError as exc:
        raise DatabaseError(f"cannot open database: {exc}", getattr(exc, "code", None)) from exc
    db = Database(client, normalized)
    if normalized.startswith("file:"):
        # WAL lets readers run beside the writer; the setting is stored in the file itself.
        await db.execute("PRAGMA journal_mode=WAL")
    return db
