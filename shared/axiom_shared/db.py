"""libSQL access for every service that owns a database, without ever blocking the event loop.

`open_database(url)` picks the backend by URL; callers see one `Database` API, one `ResultSet`
and one error type (`DatabaseError`, `IntegrityError` for constraints, the SQLite error name in
`.code`), whatever the driver:

- `file:` (what `make run` and the tests use, and a single-host deployment): the libSQL/SQLite
  file through the standard library's `sqlite3`. One **writer process** (`db_writer`, started
  by `open_database` and gone with it) owns one long-lived connection and **group-commits**:
  the batches that arrive while a commit is running are committed together in one transaction
  and one fsync, each inside its own savepoint, so each keeps its own all-or-nothing result; a
  caller is answered only after the COMMIT that made its batch durable returned. A process, not
  a thread: a writer thread loses the GIL to the event loop at every statement (see
  `db_writer`). Reads (`SELECT`) go to a small pool of reader threads with their own
  long-lived connections (WAL: readers never wait for the writer). A real busy timeout covers
  other processes (the operator CLI, a backup, a second replica); there is no retry loop of
  our own.
- `file:` with `TURSO_SYNC_URL`: an embedded replica of a Turso database through `libsql`
  (Turso's driver): reads are local, writes go to the primary. libsql holds the GIL while it
  works, so it runs on its own thread one call at a time (see docs/design-notes.md).
- `libsql://`, `https://`, `wss://` (a libSQL server or Turso): libsql-client's Hrana client,
  which is asynchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pickle
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from axiom_shared.db_writer import HEADER, frame
from axiom_shared.logging import get_logger

log = get_logger(__name__)

SqlArgs = Sequence[Any] | dict[str, Any] | None
Statement = tuple[str, SqlArgs] | str
T = TypeVar("T")

#: Seconds a write waits for another process's lock before it fails with SQLITE_BUSY.
BUSY_TIMEOUT = 5.0
#: The most batches committed in one transaction.
MAX_GROUP = 256
READERS = 4


class DatabaseError(RuntimeError):
    """A database error whose message is safe to log (no SQL arguments)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class IntegrityError(DatabaseError):
    """A constraint (UNIQUE, CHECK, NOT NULL, FOREIGN KEY) refused the write."""


@dataclass(frozen=True)
class ResultSet:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    #: Rows inserted, updated or deleted by the statement (0 for a query).
    rows_affected: int = 0
    last_insert_rowid: int | None = None


def normalize_url(url: str) -> str:
    """Make `file:` URLs absolute (and create their folder); leave remote URLs alone."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return url
    return f"file://{file_path(url)}"


def file_path(url: str) -> Path:
    raw = url[len("file:") :]
    raw = raw[2:] if raw.startswith("//") else raw
    path = Path(raw).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _split(stmt: Statement) -> tuple[str, SqlArgs]:
    if isinstance(stmt, str):
        return stmt, None
    return stmt


def _is_read(sql: str) -> bool:
    """A statement a reader connection may run: a plain query."""
    head = sql.lstrip()[:8].lower()
    return head.startswith(("select", "values"))


def _queries_only(statements: Sequence[Statement]) -> None:
    for stmt in statements:
        if not _is_read(_split(stmt)[0]):
            raise DatabaseError("read_many takes queries only", None)


def _error(message: str, code: str | None) -> DatabaseError:
    if (code and "CONSTRAINT" in code) or "constraint failed" in message:
        return IntegrityError(message, code or "SQLITE_CONSTRAINT")
    return DatabaseError(message, code)


def _classify_sqlite(exc: sqlite3.Error) -> DatabaseError:
    return _error(str(exc), getattr(exc, "sqlite_errorname", None))


class Database:
    """The calls every backend answers. `batch` is atomic: all its statements take effect, or
    none (a status change, its audit row and its outbox row commit together or not at all)."""

    url: str

    async def execute(self, sql: str, args: SqlArgs = None) -> ResultSet:
        raise NotImplementedError

    async def batch(self, statements: Sequence[Statement]) -> list[ResultSet]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def read_many(self, statements: Sequence[Statement]) -> list[ResultSet]:
        """Several queries (`SELECT` only) answered together: on a file, in one trip to a
        reader thread and from one snapshot; elsewhere one after another."""
        _queries_only(statements)
        return [await self.execute(*_split(stmt)) for stmt in statements]

    async def fetch_all(self, sql: str, args: SqlArgs = None) -> list[dict[str, Any]]:
        rs = await self.execute(sql, args)
        return [dict(zip(rs.columns, row, strict=True)) for row in rs.rows]

    async def fetch_one(self, sql: str, args: SqlArgs = None) -> dict[str, Any] | None:
        rows = await self.fetch_all(sql, args)
        return rows[0] if rows else None

    async def ping(self) -> bool:
        try:
            await self.execute("SELECT 1")
        except Exception:
            return False
        return True


# --- files: sqlite3 on threads, group commit -----------------------------------------------


def _run(conn: sqlite3.Connection, stmt: Statement) -> ResultSet:
    sql, args = _split(stmt)
    cursor = conn.execute(sql, args if args is not None else ())
    rows = [tuple(row) for row in cursor.fetchall()]
    columns = tuple(d[0] for d in cursor.description) if cursor.description else ()
    return ResultSet(columns, rows, max(cursor.rowcount, 0), cursor.lastrowid)


class FileDatabase(Database):
    """A libSQL/SQLite file: writes through its writer process (`db_writer`, group commit),
    reads on a small pool of reader threads with their own long-lived connections."""

    def __init__(
        self,
        path: Path,
        url: str,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        readers: int = READERS,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.url = url
        self.path = path
        self._busy_timeout = busy_timeout
        self._max_group = max_group
        self._writer: asyncio.subprocess.Process | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[list[ResultSet]]] = {}
        self._jobs = itertools.count(1)
        #: Set when the writer process went away while the database was open.
        self._lost: DatabaseError | None = None
        self._restart = asyncio.Lock()
        self._reader_pool = ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix=f"db-reader:{path.name}"
        )
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        #: Batches and groups committed (the group-commit ratio is batches / groups).
        self.batches_committed = 0
        self.groups_committed = 0

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )

    async def start(self) -> None:
        try:
            await self._start_writer()
        except BaseException:
            self._reader_pool.shutdown(wait=False)
            raise

    async def _start_writer(self) -> None:
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "axiom_shared.db_writer",
            str(self.path),
            str(self._busy_timeout),
            str(self._max_group),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        opened = await self._next_frame(writer)
        if not isinstance(opened, tuple) or opened[0] != "ready":
            await writer.wait()
            problem = opened[1] if isinstance(opened, tuple) else "the writer process exited"
            raise DatabaseError(f"cannot open database: {problem}", None)
        self._writer = writer
        self._lost = None
        self._receiver = asyncio.create_task(self._receive(writer), name=f"db-writer:{self.path}")

    @staticmethod
    async def _next_frame(writer: asyncio.subprocess.Process) -> Any:
        """The writer's next message; None once it has exited."""
        stdout = writer.stdout
        if stdout is None:
            return None
        try:
            (size,) = HEADER.unpack(await stdout.readexactly(HEADER.size))
            return pickle.loads(await stdout.readexactly(size))  # noqa: S301 - our own writer
        except asyncio.IncompleteReadError:
            return None

    async def _receive(self, writer: asyncio.subprocess.Process) -> None:
        """Answer each batch once the writer reports the group that committed it."""
        try:
            while (message := await self._next_frame(writer)) is not None:
                answers, self.batches_committed, self.groups_committed = message
                for job, outcome in answers:
                    future = self._pending.pop(job, None)
                    if future is None or future.done():
                        continue  # the caller was cancelled; the write happened (or not)
                    if outcome[0] == "ok":
                        future.set_result([ResultSet(*result) for result in outcome[1]])
                    else:
                        future.set_exception(_error(outcome[1], outcome[2]))
            await writer.wait()  # it closed its stdout: it is exiting
        except asyncio.CancelledError:
            # The loop is going away without close(): the writer finishes what it was sent and
            # exits once its stdin is closed; nobody waits for it here.
            if writer.stdin is not None:
                writer.stdin.close()
            raise
        finally:
            lost = DatabaseError(
                "the database writer stopped before answering: the batch may not be committed",
                None,
            )
            if not self._closed:
                log.error("database writer stopped", path=str(self.path), code=writer.returncode)
                self._lost = lost
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(lost)

    async def _revive(self) -> None:
        """A new writer process after the last one went away (raises while the file cannot be
        opened); the batches the old one had not answered were failed, never silently lost."""
        async with self._restart:
            if self._lost is not None and not self._closed:
                await self._start_writer()

    async def ping(self) -> bool:
        if self._lost is not None:
            try:
                await self._revive()
            except DatabaseError:
                return False
        return await super().ping()

    # -- writes

    async def execute(self, sql: str, args: SqlArgs = None) -> ResultSet:
        if _is_read(sql):
            return await self._read((sql, args))
        (result,) = await self.batch([(sql, args)])
        return result

    async def batch(self, statements: Sequence[Statement]) -> list[ResultSet]:
        if self._closed:
            raise DatabaseError("the database is closed", None)
        if self._lost is not None:
            await self._revive()
        writer = self._writer
        if writer is None or writer.stdin is None:
            raise DatabaseError("the database is not open", None)
        job = next(self._jobs)
        try:
            message = frame((job, [_split(stmt) for stmt in statements]))
        except Exception as exc:  # an argument that cannot be sent: this batch's mistake alone
            raise DatabaseError(f"cannot run the statement: {exc}", None) from None
        future: asyncio.Future[list[ResultSet]] = asyncio.get_running_loop().create_future()
        self._pending[job] = future
        writer.stdin.write(message)
        # Back-pressure while the writer is busy committing; if it is gone, `_receive` fails
        # this batch.
        with contextlib.suppress(ConnectionError, OSError):
            await writer.stdin.drain()
        return await future

    # -- reads

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _read_sync(self, stmt: Statement) -> ResultSet:
        try:
            return _run(self._reader(), stmt)
        except sqlite3.Error as exc:
            raise _classify_sqlite(exc) from None

    def _read_many_sync(self, statements: Sequence[Statement]) -> list[ResultSet]:
        conn = self._reader()
        try:
            conn.execute("BEGIN")  # one snapshot for all of them (WAL: never waits for writes)
            try:
                return [_run(conn, stmt) for stmt in statements]
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _classify_sqlite(exc) from None

    async def read_many(self, statements: Sequence[Statement]) -> list[ResultSet]:
        if self._closed:
            raise DatabaseError("the database is closed", None)
        _queries_only(statements)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._read_many_sync, statements)

    async def _read(self, stmt: Statement) -> ResultSet:
        if self._closed:
            raise DatabaseError("the database is closed", None)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._read_sync, stmt)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        writer, receiver = self._writer, self._receiver
        if writer is not None and writer.stdin is not None:
            # The writer commits and answers every batch already sent, then exits.
            writer.stdin.close()
            if receiver is not None:
                await receiver
        await asyncio.to_thread(self._reader_pool.shutdown, True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()


# --- an embedded replica of a Turso database (libsql) --------------------------------------


class ReplicaDatabase(Database):
    """A local file kept in sync with a Turso primary (`TURSO_SYNC_URL`): reads are served from
    the file, writes are sent to the primary and then synced back. One thread, one connection,
    one call at a time (libsql holds the GIL while it works)."""

    def __init__(self, path: Path, sync_url: str, auth_token: str | None) -> None:
        self.url = f"file://{path}"
        self._path = path
        self._sync_url = sync_url
        self._auth_token = auth_token
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-replica")
        self._conn: Any = None

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn)

    async def start(self) -> None:
        import libsql  # the embedded-replica driver; only this mode needs it

        def connect() -> None:
            self._conn = libsql.connect(
                str(self._path),
                sync_url=self._sync_url,
                auth_token=self._auth_token or "",
                isolation_level=None,
            )
            self._conn.sync()

        try:
            await self._call(connect)
        except Exception as exc:
            raise DatabaseError(f"cannot open the replica: {exc}", None) from None

    def _run(self, stmt: Statement) -> ResultSet:
        sql, args = _split(stmt)
        cursor = self._conn.execute(sql, args if args is not None else ())
        rows = [tuple(row) for row in cursor.fetchall()]
        columns = tuple(d[0] for d in cursor.description or ())
        return ResultSet(columns, rows, max(cursor.rowcount, 0), cursor.lastrowid)

    async def execute(self, sql: str, args: SqlArgs = None) -> ResultSet:
        if _is_read(sql):
            return await self._call(lambda: self._guarded(lambda: self._run((sql, args))))
        (result,) = await self.batch([(sql, args)])
        return result

    async def batch(self, statements: Sequence[Statement]) -> list[ResultSet]:
        def run() -> list[ResultSet]:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                results = [self._run(stmt) for stmt in statements]
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.sync()
            return results

        return await self._call(lambda: self._guarded(run))

    @staticmethod
    def _guarded(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except DatabaseError:
            raise
        except Exception as exc:  # libsql raises ValueError with SQLite's message
            raise _error(str(exc), None) from None

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
        self._pool.shutdown(wait=False)


# --- remote: libsql-client (Hrana over HTTP or WebSocket) -----------------------------------


class RemoteDatabase(Database):
    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url

    @staticmethod
    def _result(rs: Any) -> ResultSet:
        return ResultSet(
            tuple(rs.columns),
            [tuple(row) for row in rs.rows],
            int(rs.rows_affected or 0),
            rs.last_insert_rowid,
        )

    async def _guarded(self, call: Callable[[], Any]) -> Any:
        import libsql_client

        try:
            return await call()
        except libsql_client.LibsqlError as exc:
            raise _error(str(exc), getattr(exc, "code", None)) from None

    async def execute(self, sql: str, args: SqlArgs = None) -> ResultSet:
        import libsql_client

        stmt = libsql_client.Statement(sql, args) if args is not None else sql
        return self._result(await self._guarded(lambda: self._client.execute(stmt)))

    async def batch(self, statements: Sequence[Statement]) -> list[ResultSet]:
        import libsql_client

        stmts = [
            libsql_client.Statement(sql, args) if args is not None else libsql_client.Statement(sql)
            for sql, args in map(_split, statements)
        ]
        results = await self._guarded(lambda: self._client.batch(stmts))
        return [self._result(rs) for rs in results]

    async def close(self) -> None:
        await self._client.close()


async def open_database(
    url: str, auth_token: str | None = None, *, sync_url: str | None = None
) -> Database:
    """Open (and for a file, create) the database at `url` (see the module's docstring)."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        path = file_path(url)
        if sync_url:
            replica = ReplicaDatabase(path, sync_url, auth_token)
            await replica.start()
            return replica
        db = FileDatabase(path, f"file://{path}")
        await db.start()
        return db
    import libsql_client

    try:
        client = libsql_client.create_client(url, auth_token=auth_token)
    except libsql_client.LibsqlError as exc:
        raise DatabaseError(f"cannot open database: {exc}", getattr(exc, "code", None)) from exc
    return RemoteDatabase(client, url)
