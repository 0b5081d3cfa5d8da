"""`make backup | restore | migrate | migrate-down`: the payments and bookings databases.

    python -m deploy.local.dbtool backup [--db payments|bookings|all] [--out DIR]
    python -m deploy.local.dbtool restore BACKUP_DIR [--db ...] [--force]
    python -m deploy.local.dbtool migrate [--db ...]
    python -m deploy.local.dbtool migrate-down [--db ...] [--target N] [--allow-data-loss]

The databases are the ones the services use: `TURSO_DB_URL` (payments) and `BOOKINGS_DB_URL`
(bookings), defaulting to the files of `make run` under `var/` (`AXIOM_VAR_DIR`).

- **backup** is online: SQLite's backup API copies a consistent snapshot while the services
  keep writing (WAL: the copy reads one snapshot and blocks no writer). The copy is switched to
  a self-contained rollback-journal file, checked with `PRAGMA integrity_check`, and written to
  `var/backups/<UTC time>/` with `manifest.json` (file, size, sha256, applied migrations, row
  counts). The folder appears only once complete.
- **restore** checks the manifest (sizes, sha256) and the copy's integrity before touching
  anything, refuses while the database is in use (stop the stack first; `--force` overrides),
  and swaps the file in atomically: copied next to the target, fsynced, renamed over it. The
  target's WAL is checkpointed first and stale `-wal`/`-shm` files are removed, so no old log
  is ever replayed over the restored file; the previous file stays beside it as
  `<name>.pre-restore-<time>`.
- **migrate / migrate-down** run the services' own migration lists. Going down takes a backup
  first, reverts one migration by default (`--target N` keeps 1..N), and refuses a migration
  whose way down would drop data (a table with rows, a column holding values) unless
  `--allow-data-loss`.

Remote databases (`libsql://`, `https://`: Turso or a libSQL server) are migrated like files but
never backed up or restored here: Turso keeps point-in-time history (docs/runbook.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from axiom_amadeus_proxy.app import bookings_migrations
from axiom_payments.app import payments_migrations
from axiom_shared.db import Database, open_database
from axiom_shared.migrations import Migration, applied_versions, migrate, migrate_down, split_sql
from deploy.local.processes import PORT_VARS, SERVICES

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "manifest.json"
MANIFEST_FORMAT: Literal[1] = 1
TURSO_HINT = (
    "back up and restore a Turso database with Turso's point-in-time recovery "
    "(`turso db create <new-db> --from-db <db> --timestamp <RFC 3339 time>`), "
    "see docs/runbook.md"
)

DbName = Literal["payments", "bookings"]


class DbToolError(RuntimeError):
    """A refusal or failure whose message is meant for the operator."""


class RemoteDatabaseError(DbToolError):
    pass


@dataclass(frozen=True)
class DbTarget:
    """One database the services own, and where it is."""

    name: DbName
    url: str
    auth_token: str | None
    migrations: list[Migration]
    #: The service that writes it (its /healthz answering means: in use).
    service: str

    @property
    def remote(self) -> bool:
        return urlparse(self.url).scheme != "file"

    @property
    def path(self) -> Path:
        return local_path(self.url, self.name)


def _var_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("AXIOM_VAR_DIR") or ROOT / "var").resolve()


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """`NAME`, else the file named by `NAME_FILE` (the services' convention)."""
    value = env.get(name)
    if not value and env.get(f"{name}_FILE"):
        value = Path(env[f"{name}_FILE"]).read_text(encoding="utf-8").strip()
    return value or None


def targets_from_env(env: Mapping[str, str] | None = None) -> dict[DbName, DbTarget]:
    """The two databases, with the same defaults as `make run`."""
    env = os.environ if env is None else env
    var = _var_dir(env)
    return {
        "payments": DbTarget(
            "payments",
            env.get("TURSO_DB_URL") or f"file:{var / 'payments.db'}",
            _secret(env, "TURSO_DB_AUTH_TOKEN"),
            payments_migrations(),
            "payments",
        ),
        "bookings": DbTarget(
            "bookings",
            env.get("BOOKINGS_DB_URL") or f"file:{var / 'bookings.db'}",
            _secret(env, "BOOKINGS_DB_AUTH_TOKEN"),
            bookings_migrations(),
            "amadeus-proxy",
        ),
    }


def local_path(url: str, name: str = "database") -> Path:
    """The file behind a `file:` URL (as `axiom_shared.db` reads it); remote URLs are refused."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise RemoteDatabaseError(
            f"the {name} DB is remote ({parsed.scheme}://{parsed.hostname or ''}): "
            f"this tool backs up and restores local files only; {TURSO_HINT}"
        )
    raw = url[len("file:") :]
    raw = raw[2:] if raw.startswith("//") else raw
    return Path(raw).expanduser().resolve()


# --- files ---------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def integrity_problems(path: Path) -> list[str]:
    """`PRAGMA integrity_check` on `path`, read-only: [] when the file is sound."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


def _migrations_in(conn: sqlite3.Connection) -> list[int]:
    try:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    except sqlite3.OperationalError:  # never migrated
        return []
    return [int(row[0]) for row in rows]


def _row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    ]
    counts: dict[str, int] = {}
    for table in tables:
        quoted = table.replace('"', '""')
        counts[table] = int(conn.execute(f'SELECT count(*) FROM "{quoted}"').fetchone()[0])  # noqa: S608
    return counts


# --- backup --------------------------------------------------------------------------------


class BackupFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: DbName
    #: The copy's file name inside the backup folder (a bare name, never a path).
    file: str = Field(pattern=r"^[a-z]+\.db$")
    source: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    integrity: Literal["ok"]
    migrations: list[int]
    rows: dict[str, int]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    created_at: datetime
    files: list[BackupFile] = Field(min_length=1)


def copy_online(source: Path, copy: Path) -> None:
    """A consistent copy of a live database (the backup API reads one snapshot), turned into
    a self-contained file (rollback journal, no -wal beside it)."""
    if not source.is_file():
        raise DbToolError(f"no database file at {source}")
    # Read-write, as the services open it: a read-only last connection would leave -wal/-shm.
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)  # pages=-1: the whole database in one step, from one read snapshot
        dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise DbToolError(f"could not copy {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def backup_one(target: DbTarget, folder: Path) -> BackupFile:
    source = target.path
    copy = folder / f"{target.name}.db"
    copy_online(source, copy)
    problems = integrity_problems(copy)
    if problems:
        raise DbToolError(
            f"the {target.name} DB copy fails its integrity check ({'; '.join(problems[:5])}): "
            f"the source {source} may be damaged; no backup written"
        )
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        migrations, rows = _migrations_in(conn), _row_counts(conn)
    finally:
        conn.close()
    _fsync_file(copy)
    return BackupFile(
        database=target.name,
        file=copy.name,
        source=str(source),
        bytes=copy.stat().st_size,
        sha256=sha256_of(copy),
        integrity="ok",
        migrations=migrations,
        rows=rows,
    )


def backup(
    targets: Sequence[DbTarget], root: Path, *, now: datetime | None = None
) -> tuple[Path, Manifest]:
    """Back `targets` up into a new folder `root/<UTC time>/`; returns it and its manifest."""
    for target in targets:
        local_path(target.url, target.name)  # refuse a remote one before writing anything
    root.mkdir(parents=True, exist_ok=True)
    created = now or datetime.now(UTC)
    final = root / _stamp(created)
    suffix = 1
    while final.exists():
        suffix += 1
        final = root / f"{_stamp(created)}-{suffix}"
    partial = root / f".partial-{final.name}-{os.getpid()}"
    partial.mkdir()
    try:
        files = [backup_one(target, partial) for target in targets]
        manifest = Manifest(format=MANIFEST_FORMAT, created_at=created, files=files)
        (partial / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        _fsync_file(partial / MANIFEST)
        _fsync_dir(partial)
        # Only a complete backup ever has its final name.
        partial.rename(final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final, manifest


# --- restore -------------------------------------------------------------------------------


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise DbToolError(f"{folder} is not a backup: no {MANIFEST}")
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise DbToolError(f"{path} is not a valid manifest: {problems}") from None


def verify_backup(folder: Path, names: Sequence[DbName] | None = None) -> Manifest:
    """The manifest, after checking that every file it lists (or those of `names`) is there,
    unchanged (size, sha256) and sound (integrity check)."""
    manifest = read_manifest(folder)
    listed = [entry.database for entry in manifest.files]
    if len(listed) != len(set(listed)):
        raise DbToolError(f"{folder / MANIFEST} lists a database twice")
    missing = [name for name in names or [] if name not in listed]
    if missing:
        raise DbToolError(f"{folder} holds no backup of the {', '.join(missing)} DB")
    for entry in manifest.files:
        if names and entry.database not in names:
            continue
        copy = folder / entry.file
        if not copy.is_file():
            raise DbToolError(f"{copy} is missing")
        size = copy.stat().st_size
        if size != entry.bytes:
            raise DbToolError(f"{copy} is {size} bytes, the manifest says {entry.bytes}")
        if sha256_of(copy) != entry.sha256:
            raise DbToolError(f"{copy} does not match its sha256 in the manifest")
        problems = integrity_problems(copy)
        if problems:
            raise DbToolError(f"{copy} fails its integrity check: {'; '.join(problems[:5])}")
    return manifest


def _open_elsewhere(paths: Sequence[Path]) -> list[str]:
    """Other processes holding one of `paths` open (Linux /proc; empty elsewhere)."""
    wanted = {str(p) for p in paths}
    found: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            links = {os.readlink(fd) for fd in (pid_dir / "fd").iterdir()}
            held = sorted(links & wanted)
            if held:
                name = (pid_dir / "comm").read_text().strip()
                found.append(f"process {pid_dir.name} ({name}) has {', '.join(held)} open")
        except OSError:  # gone, or not ours to look at
            continue
    return found


def _service_answers(service: str, port: int, timeout: float = 0.5) -> bool:
    """True when our `service` answers /healthz on 127.0.0.1:`port`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        body = json.loads(answer.read(4096) or b"{}")
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return isinstance(body, dict) and body.get("service") == service


def service_port(service: str, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get(PORT_VARS[service]) or SERVICES[service][1])


def in_use(target: DbTarget, port: int | None) -> list[str]:
    """Why `target` looks in use: processes holding its files, its service answering."""
    path = target.path
    reasons = _open_elsewhere([path, Path(f"{path}-wal"), Path(f"{path}-shm")])
    if port is not None and _service_answers(target.service, port):
        reasons.append(f"the {target.service} service answers on 127.0.0.1:{port}")
    return reasons


def _checkpoint(path: Path) -> None:
    """Fold the target's WAL into its file, so that nothing committed lives only in the log."""
    try:
        conn = sqlite3.connect(path, timeout=10)
    except sqlite3.Error:
        return
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass  # a damaged target: its -wal is kept aside below, never replayed
    finally:
        conn.close()


def restore_file(copy: Path, expected_sha256: str, target: Path, stamp: str) -> Path | None:
    """Swap `copy` in as `target`, atomically; returns where the previous file was kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restore-{os.getpid()}")
    shutil.copyfile(copy, staged)
    _fsync_file(staged)
    if sha256_of(staged) != expected_sha256:
        staged.unlink()
        raise DbToolError(f"the staged copy of {copy} does not match its sha256")
    kept: Path | None = None
    if target.exists():
        _checkpoint(target)
        kept = target.with_name(f"{target.name}.pre-restore-{stamp}")
        os.link(target, kept)  # the previous file stays reachable under another name
    # A -wal left beside the new file would be replayed over it: move it aside (its frames
    # belong to the previous file), and drop the -shm index, which describes that log.
    for suffix in ("-wal", "-journal"):
        stale = Path(f"{target}{suffix}")
        if stale.exists():
            if kept is not None:
                os.replace(stale, Path(f"{kept}{suffix}"))
            else:
                stale.unlink()
    with contextlib.suppress(FileNotFoundError):
        Path(f"{target}-shm").unlink()
    os.replace(staged, target)
    _fsync_dir(target.parent)
    return kept


def restore(
    folder: Path,
    targets: Sequence[DbTarget],
    *,
    force: bool = False,
    ports: Mapping[str, int | None] | None = None,
    say: Callable[[str], None] = print,
) -> Manifest:
    """Restore `targets` from the backup in `folder` (all checks first, then the swaps)."""
    for target in targets:
        local_path(target.url, target.name)
    manifest = verify_backup(folder, [t.name for t in targets])
    entries = {entry.database: entry for entry in manifest.files}
    if not force:
        busy: list[str] = []
        for target in targets:
            port = (ports or {}).get(target.service, service_port(target.service))
            busy += [f"{target.name} DB: {why}" for why in in_use(target, port)]
        if busy:
            raise DbToolError(
                "refusing to restore a database in use (stop the stack first, e.g. Ctrl-C "
                "`make run` or scale payments and amadeus-proxy to 0; --force / FORCE=1 "
                "overrides):\n  " + "\n  ".join(busy)
            )
    stamp = _stamp()
    for target in targets:
        entry = entries[target.name]
        kept = restore_file(folder / entry.file, entry.sha256, target.path, stamp)
        problems = integrity_problems(target.path)
        if problems:
            raise DbToolError(f"{target.path} fails its integrity check after the restore")
        versions = ", ".join(str(v) for v in entry.migrations) or "none"
        say(
            f"{target.name} DB {target.path}: restored from {folder.name} "
            f"({entry.bytes} bytes, migrations {versions}, rows {entry.rows})"
        )
        if kept is not None:
            say(f"  the previous file is kept as {kept} (delete it once satisfied)")
    return manifest


# --- migrations ----------------------------------------------------------------------------

_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(\w+)", re.I)
_DROP_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+DROP\s+COLUMN\s+(\w+)", re.I)


async def data_lost_by(db: Database, migration: Migration) -> list[str]:
    """What reverting `migration` would destroy: tables with rows, columns holding values."""
    losses: list[str] = []
    for statement in split_sql(migration.down_sql):
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        )
        if match := _DROP_TABLE.match(body):
            table = match[1]
            if await db.fetch_one(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
            ):
                row = await db.fetch_one(f'SELECT count(*) AS n FROM "{table}"')  # noqa: S608
                if row and int(row["n"]):
                    losses.append(f"table {table} ({row['n']} rows)")
        elif match := _DROP_COLUMN.match(body):
            table, column = match[1], match[2]
            info = await db.fetch_one(
                "SELECT dflt_value FROM pragma_table_info(?) WHERE name = ?", [table, column]
            )
            if info:
                # A value equal to the column's default comes back as it was when the column is
                # added again: only the others are lost.
                default = info["dflt_value"]
                differs = f' AND "{column}" IS NOT ({default})' if default is not None else ""
                row = await db.fetch_one(
                    f'SELECT count(*) AS n FROM "{table}"'  # noqa: S608 - names from our schema
                    f' WHERE "{column}" IS NOT NULL{differs}'
                )
                if row and int(row["n"]):
                    losses.append(f"column {table}.{column} ({row['n']} values)")
    return losses


def _names(migrations: Sequence[Migration], versions: Sequence[int]) -> str:
    by_version = {m.version: m for m in migrations}
    return ", ".join(
        f"{v:04d}_{by_version[v].name}" if v in by_version else f"{v:04d}" for v in versions
    )


async def migrate_target(target: DbTarget, say: Callable[[str], None] = print) -> list[int]:
    db = await open_database(target.url, target.auth_token)
    try:
        applied = await migrate(db, target.migrations)
        current = max(await applied_versions(db), default=0)
    finally:
        await db.close()
    if applied:
        say(f"{target.name} DB: applied {_names(target.migrations, applied)}; now at {current}")
    else:
        say(f"{target.name} DB: nothing to apply, at version {current}")
    return applied


async def migrate_down_target(
    target: DbTarget,
    version: int | None,
    *,
    allow_data_loss: bool = False,
    backup_root: Path | None = None,
    say: Callable[[str], None] = print,
) -> list[int]:
    """Revert `target`'s migrations above `version` (default: the newest one only)."""
    db = await open_database(target.url, target.auth_token)
    try:
        done = sorted(await applied_versions(db))
        one_step_back = done[-2] if len(done) > 1 else 0
        keep = one_step_back if version is None else version
        doomed = [v for v in reversed(done) if v > keep]
        if not doomed:
            say(f"{target.name} DB: nothing to revert, at version {done[-1] if done else 0}")
            return []
        known = {m.version: m for m in target.migrations}
        unknown = [v for v in doomed if v not in known]
        if unknown:
            raise DbToolError(
                f"{target.name} DB: migrations {unknown} are applied but unknown to this code "
                "(a newer release applied them): revert them with that release's tool"
            )
        losses = [
            f"{_names(target.migrations, [v])}: {loss}"
            for v in doomed
            for loss in await data_lost_by(db, known[v])
        ]
        if losses and not allow_data_loss:
            raise DbToolError(
                f"{target.name} DB: going down to {keep} would destroy data:\n  "
                + "\n  ".join(losses)
                + "\n(--allow-data-loss / ALLOW_DATA_LOSS=1 goes ahead; a backup is taken first)"
            )
        if backup_root is not None:
            if target.remote:
                say(
                    f"{target.name} DB is remote: no local backup; Turso can restore to "
                    f"{datetime.now(UTC).isoformat(timespec='seconds')} (point-in-time)"
                )
            else:
                folder, _ = backup([target], backup_root)
                say(f"{target.name} DB: backed up to {folder} before going down")
        reverted = await migrate_down(db, target.migrations, keep)
    finally:
        await db.close()
    say(f"{target.name} DB: reverted {_names(target.migrations, reverted)}; now at {keep}")
    return reverted


# --- command line --------------------------------------------------------------------------


def _selected(choice: str, env: Mapping[str, str] | None = None) -> list[DbTarget]:
    targets = targets_from_env(env)
    if choice == "all":
        return list(targets.values())
    return [target for name, target in targets.items() if name == choice]


def _default_backup_root(env: Mapping[str, str] | None = None) -> Path:
    return _var_dir(os.environ if env is None else env) / "backups"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.dbtool", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    db_choices = ["payments", "bookings", "all"]
    db_help = "which database (default: both)"

    p_backup = commands.add_parser("backup", help="online backup to var/backups/<time>/")
    p_backup.add_argument("--db", choices=db_choices, default="all", help=db_help)
    p_backup.add_argument("--out", type=Path, help="backup root (default var/backups)")

    p_restore = commands.add_parser("restore", help="restore a backup folder (stack stopped)")
    p_restore.add_argument("backup_dir", type=Path)
    p_restore.add_argument("--db", choices=db_choices, default="all", help=db_help)
    p_restore.add_argument("--force", action="store_true", help="skip the in-use check")

    p_migrate = commands.add_parser("migrate", help="apply every pending migration")
    p_migrate.add_argument("--db", choices=db_choices, default="all", help=db_help)

    p_down = commands.add_parser("migrate-down", help="revert migrations (a backup first)")
    p_down.add_argument("--db", choices=db_choices, default="all", help=db_help)
    p_down.add_argument("--target", type=int, help="keep migrations 1..N (default: N-1)")
    p_down.add_argument("--allow-data-loss", action="store_true")
    p_down.add_argument("--no-backup", action="store_true", help="skip the backup first")

    args = parser.parse_args(argv)
    try:
        targets = _selected(args.db)
        if args.command == "backup":
            folder, manifest = backup(targets, args.out or _default_backup_root())
            for entry in manifest.files:
                versions = ", ".join(str(v) for v in entry.migrations) or "none"
                print(
                    f"{entry.database} DB {entry.source}: {entry.bytes} bytes, integrity ok, "
                    f"migrations {versions}"
                )
            print(f"backup written to {folder}")
        elif args.command == "restore":
            if args.db == "all":  # whatever the backup holds
                held = {entry.database for entry in read_manifest(args.backup_dir).files}
                targets = [target for target in targets if target.name in held]
            restore(args.backup_dir, targets, force=args.force)
        elif args.command == "migrate":
            for target in targets:
                asyncio.run(migrate_target(target))
        else:
            if args.target is not None and args.target < 0:
                raise DbToolError("--target must be 0 or more")
            root = None if args.no_backup else _default_backup_root()
            for target in targets:
                asyncio.run(
                    migrate_down_target(
                        target,
                        args.target,
                        allow_data_loss=args.allow_data_loss,
                        backup_root=root,
                    )
                )
    except DbToolError as exc:
        print(f"dbtool: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
