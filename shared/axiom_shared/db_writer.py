"""The writer process of a libSQL/SQLite file (`db.FileDatabase`): `python -m
axiom_shared.db_writer PATH BUSY_TIMEOUT MAX_GROUP`.

One process per open database file owns its one write connection and **group-commits**: the
batches that arrived while a commit was running are committed together in one transaction and
one fsync, each inside its own savepoint, so each keeps its own all-or-nothing result. A batch
is answered only after the COMMIT that made it durable returned.

Why a process and not a thread of the service: `sqlite3` releases the GIL around each step and
must win it back from the event loop several times per statement. On a busy service the writer
thread spent 1.2-1.5 ms per payment waiting for it, for statements that take 0.1 ms on their own
(docs/design-notes.md, "Performance"). Here the writer never waits for the service's GIL.

The channel is the child's stdin and stdout: length-prefixed pickles (the child is our own
program, started by the service itself; nothing else writes to these pipes).
  service → writer: (job id, statements), one frame per batch;
  writer → service: the open result ("ready" or an error), then one frame per committed group:
  [(job id, outcome), ...] and the running counts of batches and groups committed.
The writer exits when its stdin closes (the service closed the database, or died: a batch whose
frame arrived whole is still committed, one that did not is not), after answering everything it
read. It ignores SIGINT and SIGTERM: the service decides when it stops (a Ctrl-C or a TERM sent
to the whole process group must not take the database away from a service still finishing).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence
from typing import Any

#: An outcome on the wire: ("ok", [ResultSet fields...]) or ("error", message, code, integrity).
WireOutcome = tuple[Any, ...]

HEADER = struct.Struct("!I")


def frame(obj: object) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def split_frames(buffer: bytearray) -> list[Any]:
    """Take every whole frame off the front of `buffer`."""
    found: list[Any] = []
    offset = 0
    while len(buffer) - offset >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer, offset)
        end = offset + HEADER.size + size
        if len(buffer) < end:
            break
        found.append(pickle.loads(bytes(buffer[offset + HEADER.size : end])))  # noqa: S301 - our own writer
        offset = end
    del buffer[:offset]
    return found


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    # Autocommit mode: transactions are ours (BEGIN IMMEDIATE ... COMMIT).
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a COMMIT has reached the disk when it returns (WAL's default, NORMAL, is safe against
    # corruption but may lose the last commits on power loss).
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _error(exc: sqlite3.Error) -> WireOutcome:
    code = getattr(exc, "sqlite_errorname", None)
    message = str(exc)
    integrity = bool((code and "CONSTRAINT" in code) or "constraint failed" in message)
    return ("error", message, code, integrity)


def _run(conn: sqlite3.Connection, sql: str, args: Any) -> tuple[Any, ...]:
    cursor = conn.execute(sql, args if args is not None else ())
    rows = [tuple(row) for row in cursor.fetchall()]
    columns = tuple(d[0] for d in cursor.description) if cursor.description else ()
    return (columns, rows, max(cursor.rowcount, 0), cursor.lastrowid)


def commit_group(
    conn: sqlite3.Connection, jobs: Sequence[Sequence[tuple[str, Any]]]
) -> list[WireOutcome]:
    """Commit `jobs` in one transaction, each in its own savepoint; one outcome per job."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return [_error(exc)] * len(jobs)
    outcomes: list[WireOutcome] = []
    for index, statements in enumerate(jobs):
        conn.execute("SAVEPOINT batch")
        try:
            results = [_run(conn, sql, args) for sql, args in statements]
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the jobs
                # before this one are undone too, and none was answered yet: run them again.
                rest = [*jobs[:index], *jobs[index + 1 :]]
                again = commit_group(conn, rest) if rest else []
                return [*again[:index], _error(exc), *again[index:]]
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            outcomes.append(_error(exc))
        except Exception as exc:  # a bad argument type: this job's mistake alone
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            outcomes.append(("error", f"cannot run the statement: {exc}", None, False))
        else:
            conn.execute("RELEASE batch")
            outcomes.append(("ok", results))
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [_error(exc)] * len(jobs)
    return outcomes


def serve(path: str, busy_timeout: float, max_group: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox, outbox = sys.stdin.buffer.fileno(), sys.stdout.buffer
    try:
        conn = connect(path, busy_timeout)
    except sqlite3.Error as exc:
        outbox.write(frame(("error", str(exc))))
        outbox.flush()
        return 1
    outbox.write(frame(("ready", None)))
    outbox.flush()
    buffer = bytearray()
    queued: list[tuple[int, Any]] = []
    batches = groups = 0
    open_ = True
    while open_ or queued:
        if not queued:
            chunk = os.read(inbox, 1 << 20)  # wait for work
            if not chunk:
                break
            buffer += chunk
        # Whatever else has arrived meanwhile joins this group.
        while open_ and select.select([inbox], [], [], 0)[0]:
            chunk = os.read(inbox, 1 << 20)
            if not chunk:
                open_ = False
                break
            buffer += chunk
        queued += split_frames(buffer)
        if not queued:
            continue
        group, queued = queued[:max_group], queued[max_group:]
        outcomes = commit_group(conn, [statements for _job, statements in group])
        groups += 1
        batches += sum(1 for outcome in outcomes if outcome[0] == "ok")
        answers = [(job, outcome) for (job, _s), outcome in zip(group, outcomes, strict=True)]
        outbox.write(frame((answers, batches, groups)))
        outbox.flush()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
