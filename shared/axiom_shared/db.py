"""libSQL access for every service that owns a database, without ever blocking the event loop.

`open_database(url)` picks the backend by URL; callers see one `Database` API, one `ResultSet`
and one error type (`DatabaseError`, `IntegrityError` for constraints, the SQLite error name in
`.code`), whatever the driver:

- `file:` (what `make run` and the tests use, and a single-host deployment): the libSQL/SQLite
  file through the standard library's `sqlite3`, which releases the GIL while SQLite works.
  One **writer thread** owns one long-lived connection and **group-commits**: the batches that
  queue up while a commit is running are committed together in one transaction and one fsync,
  each inside its own savepoint, so each keeps its own all-or-nothing result; a caller is
  answered only after the COMMIT that made its batch durable returned. Reads (`SELECT`) go to
  a small pool of reader threads with their own long-lived connections (WAL: readers never
  wait for the writer). A real busy timeout covers other processes (the operator CLI, a
  backup); there is no retry loop of our own.
- `file:` with `TURSO_SYNC_URL`: an embedded replica of a Turso database through `libsql`
  (Turso's driver): reads are local, writes go to the primary. libsql holds the GIL while it
  works, so it runs on its own thread one call at a time (see docs/design-notes.md).
- `libsql://`, `https://`, `wss://` (a libSQL server or Turso): libsql-client's Hrana client,
  which is asynchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

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


@dataclass
class _Job:
    statements: Sequence[Statement]
    #: Settled on its own loop's thread once the batch is committed (or refused).
    future: asyncio.Future[list[ResultSet]]


Outcome = list[ResultSet] | DatabaseError


def _settle(future: asyncio.Future[list[ResultSet]], outcome: Outcome) -> None:
    if future.done():
        return  # the caller was cancelled; the write happened (or not) all the same
    if isinstance(outcome, DatabaseError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class FileDatabase(Database):
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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"db-writer:{path.name}", daemon=True
        )
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
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
        # Autocommit mode: transactions are ours (BEGIN IMMEDIATE ... COMMIT).
        return sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )

    async def start(self) -> None:
        self._writer.start()
        await asyncio.to_thread(self._opened.wait)
        if self._open_error is not None:
            error = self._open_error
            await asyncio.to_thread(self._writer.join)
            self._reader_pool.shutdown(wait=False)
            if isinstance(error, sqlite3.Error):
                raise DatabaseError(f"cannot open database: {error}", None) from error
            raise error

    # -- writes

    async def execute(self, sql: str, args: SqlArgs = None) -> ResultSet:
        if _is_read(sql):
            return await self._read((sql, args))
        (result,) = await self.batch([(sql, args)])
        return result

    async def batch(self, statements: Sequence[Statement]) -> list[ResultSet]:
        if self._closed:
            raise DatabaseError("the database is closed", None)
        future: asyncio.Future[list[ResultSet]] = asyncio.get_running_loop().create_future()
        self._jobs.put(_Job(list(statements), future))
        return await future

    def _write_loop(self) -> None:
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a COMMIT has reached the disk when it returns (WAL's default is NORMAL-safe
            # against corruption but may lose the last commits on power loss).
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            stopping = False
            while not stopping:
                job = self._jobs.get()
                if job is None:
                    break
                group = [job]
                while len(group) < self._max_group:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    group.append(more)
                self._commit(conn, group)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        """Commit `group` in one transaction; each job in its own savepoint."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._answer(group, [_classify_sqlite(exc)] * len(group))
            return
        outcomes: list[Outcome] = []
        for index, job in enumerate(group):
            conn.execute("SAVEPOINT batch")
            try:
                results = [_run(conn, stmt) for stmt in job.statements]
            except sqlite3.Error as exc:
                error = _classify_sqlite(exc)
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O error): the jobs
                    # before this one are undone too, and none was answered yet: run them again.
                    self._answer([job], [error])
                    rest = group[:index] + group[index + 1 :]
                    if rest:
                        self._commit(conn, rest)
                    return
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                outcomes.append(error)
            except Exception as exc:  # a bad argument type: this job's mistake alone
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                outcomes.append(DatabaseError(f"cannot run the statement: {exc}", None))
            else:
                conn.execute("RELEASE batch")
                outcomes.append(results)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._answer(group, [_classify_sqlite(exc)] * len(group))
            return
        self.groups_committed += 1
        self.batches_committed += sum(1 for o in outcomes if not isinstance(o, DatabaseError))
        self._answer(group, outcomes)

    @staticmethod
    def _answer(group: list[_Job], outcomes: list[Outcome]) -> None:
        for job, outcome in zip(group, outcomes, strict=True):
            job.future.get_loop().call_soon_threadsafe(_settle, job.future, outcome)

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
        self._jobs.put(None)  # after every batch already queued
        await asyncio.to_thread(self._writer.join)
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
