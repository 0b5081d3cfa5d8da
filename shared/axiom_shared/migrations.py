"""A migration runner for numbered SQL files with a way down.

Files are `NNNN_name.up.sql` and `NNNN_name.down.sql` in one folder (package data). Each
migration runs in one transaction together with its row in `schema_migrations`, so it is
applied entirely or not at all, and applying twice changes nothing. An applied migration whose
file changed since is refused (its checksum is stored): history is never rewritten silently.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from axiom_shared.db import Database, DatabaseError, Statement
from axiom_shared.logging import get_logger
from axiom_shared.wire import now_stamp

log = get_logger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()


def split_sql(script: str) -> list[str]:
    """Split a script into complete statements (triggers and strings with ';' stay whole)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            stmt = buffer.strip()
            if _strip_comments(stmt):
                statements.append(stmt)
            buffer = ""
    if _strip_comments(buffer):
        raise MigrationError(f"incomplete SQL statement at the end: {buffer.strip()[:80]!r}")
    return statements


def _strip_comments(sql: str) -> str:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return "\n".join(lines).strip().strip(";").strip()


def load_migrations(directory: Traversable | Path) -> list[Migration]:
    ups: dict[int, tuple[str, str]] = {}
    downs: dict[int, str] = {}
    for entry in directory.iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version, name, direction = int(match[1]), match[2], match[3]
        text = entry.read_text(encoding="utf-8")
        if direction == "up":
            if version in ups:
                raise MigrationError(f"two up migrations numbered {version:04d}")
            ups[version] = (name, text)
        else:
            downs[version] = text
    missing = sorted(set(ups) ^ set(downs))
    if missing:
        raise MigrationError(f"migrations without both up and down files: {missing}")
    return [Migration(v, ups[v][0], ups[v][1], downs[v]) for v in sorted(ups)]


async def applied_versions(db: Database) -> dict[int, str]:
    await db.execute(_CREATE_TABLE)
    rows = await db.fetch_all("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {int(r["version"]): str(r["checksum"]) for r in rows}


async def migrate(
    db: Database, migrations: list[Migration], target: int | None = None
) -> list[int]:
    """Apply every pending migration up to `target` (all by default); returns what it applied."""
    done = await applied_versions(db)
    for m in migrations:
        if m.version in done and done[m.version] != m.checksum:
            raise MigrationError(f"migration {m.version:04d}_{m.name} changed after it was applied")
    applied: list[int] = []
    for m in migrations:
        if m.version in done or (target is not None and m.version > target):
            continue
        now = now_stamp()
        stmts: list[Statement] = list(split_sql(m.up_sql))
        stmts.append(
            (
                "INSERT INTO schema_migrations (version, name, checksum, applied_at)"
                " VALUES (?, ?, ?, ?)",
                [m.version, m.name, m.checksum, now],
            )
        )
        try:
            await db.batch(stmts)
        except DatabaseError:
            # Another process may have applied it first: then it is done, not an error.
            if m.version in await applied_versions(db):
                continue
            raise
        log.info("migration applied", version=m.version, name=m.name)
        applied.append(m.version)
    return applied


async def migrate_down(db: Database, migrations: list[Migration], target: int = 0) -> list[int]:
    """Revert applied migrations newer than `target`, newest first; returns what it reverted."""
    done = await applied_versions(db)
    reverted: list[int] = []
    for m in sorted(migrations, key=lambda m: m.version, reverse=True):
        if m.version <= target or m.version not in done:
            continue
        stmts: list[Statement] = list(split_sql(m.down_sql))
        stmts.append(("DELETE FROM schema_migrations WHERE version = ?", [m.version]))
        await db.batch(stmts)
        log.info("migration reverted", version=m.version, name=m.name)
        reverted.append(m.version)
    return reverted
