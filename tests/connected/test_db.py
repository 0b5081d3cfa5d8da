"""The contract of `axiom_shared.db`, run against every backend that can run here: a libSQL
file through the group-committing writer thread. (A remote libSQL server or a Turso embedded
replica needs a server this machine does not have; set AXIOM_TEST_DB_URL, and for a replica
AXIOM_TEST_DB_SYNC_URL, to run the same tests against one.)"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from axiom_shared.db import Database, DatabaseError, FileDatabase, IntegrityError, open_database

pytestmark = pytest.mark.connected

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " qty INTEGER NOT NULL CHECK (qty >= 0), price REAL, blob BLOB)",
    "CREATE TABLE IF NOT EXISTS audit (item TEXT NOT NULL, note TEXT NOT NULL)",
]


def backends() -> list[str]:
    found = ["file"]
    if os.environ.get("AXIOM_TEST_DB_URL"):
        found.append("remote")
    return found


@pytest.fixture(params=backends())
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "file":
        database = await open_database(f"file:{tmp_path / 'contract.db'}")
    else:
        database = await open_database(
            os.environ["AXIOM_TEST_DB_URL"],
            os.environ.get("AXIOM_TEST_DB_AUTH_TOKEN"),
            sync_url=os.environ.get("AXIOM_TEST_DB_SYNC_URL"),
        )
    await database.batch(["DROP TABLE IF EXISTS items", "DROP TABLE IF EXISTS audit", *SCHEMA])
    try:
        yield database
    finally:
        await database.close()


async def test_values_round_trip(db: Database) -> None:
    result = await db.execute(
        "INSERT INTO items (name, qty, price, blob) VALUES (?, ?, ?, ?)",
        ["café ☕", 2**62, 1.5, b"\x00\xff"],
    )
    assert result.rows_affected == 1
    assert result.last_insert_rowid == 1
    row = await db.fetch_one("SELECT name, qty, price, blob FROM items WHERE id = ?", [1])
    assert row == {"name": "café ☕", "qty": 2**62, "price": 1.5, "blob": b"\x00\xff"}
    named = await db.fetch_all("SELECT name FROM items WHERE qty = :qty", {"qty": 2**62})
    assert named == [{"name": "café ☕"}]
    assert await db.fetch_one("SELECT name FROM items WHERE id = 99") is None
    assert await db.ping()


async def test_a_batch_is_all_or_nothing_and_names_the_constraint(db: Database) -> None:
    await db.execute("INSERT INTO items (name, qty) VALUES ('a', 1)")
    with pytest.raises(IntegrityError) as refused:
        await db.batch(
            [
                ("INSERT INTO items (name, qty) VALUES (?, ?)", ["b", 1]),
                ("INSERT INTO audit (item, note) VALUES (?, ?)", ["b", "created"]),
                ("INSERT INTO items (name, qty) VALUES (?, ?)", ["a", 1]),  # duplicate
            ]
        )
    assert "CONSTRAINT" in (refused.value.code or "")
    assert await db.fetch_all("SELECT name FROM items ORDER BY name") == [{"name": "a"}]
    assert await db.fetch_all("SELECT * FROM audit") == []
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO items (name, qty) VALUES ('c', -1)")
    with pytest.raises(DatabaseError) as bad:
        await db.execute("INSERT INTO nowhere VALUES (1)")
    assert not isinstance(bad.value, IntegrityError)


async def test_concurrent_batches_each_keep_their_own_outcome(db: Database) -> None:
    """400 batches at once, every tenth of them refused by a constraint: each caller gets its
    own answer, every accepted batch is there whole and no refused one left a trace."""

    async def write(n: int) -> str:
        name = f"item-{n}" if n % 10 else "item-1"  # n % 10 == 0 collides with item-1
        try:
            results = await db.batch(
                [
                    ("INSERT INTO items (name, qty) VALUES (?, ?)", [name, n]),
                    ("INSERT INTO audit (item, note) VALUES (?, ?)", [name, f"batch {n}"]),
                ]
            )
        except IntegrityError:
            return "refused"
        assert [r.rows_affected for r in results] == [1, 1]
        return "ok"

    await db.execute("INSERT INTO items (name, qty) VALUES ('item-1', 0)")
    await db.execute("INSERT INTO audit (item, note) VALUES ('item-1', 'first')")
    outcomes = await asyncio.gather(*(write(n) for n in range(2, 402)))
    refused = [n for n, outcome in zip(range(2, 402), outcomes, strict=True) if outcome != "ok"]
    assert refused == [n for n in range(2, 402) if n % 10 == 0]
    items = {r["name"]: r["qty"] for r in await db.fetch_all("SELECT name, qty FROM items")}
    notes = {r["note"] for r in await db.fetch_all("SELECT note FROM audit")}
    accepted = [n for n in range(2, 402) if n % 10]
    assert items == {"item-1": 0, **{f"item-{n}": n for n in accepted}}
    assert notes == {"first", *(f"batch {n}" for n in accepted)}
    if isinstance(db, FileDatabase):
        # They were committed together: far fewer transactions than batches.
        assert db.batches_committed >= len(accepted)
        assert db.groups_committed < db.batches_committed


async def test_an_argument_the_driver_cannot_take_fails_its_batch_alone(db: Database) -> None:
    for bad in (object(), {"a": 1}):
        with pytest.raises(DatabaseError):
            await db.batch(
                [
                    ("INSERT INTO items (name, qty) VALUES ('before', 1)", None),
                    ("INSERT INTO items (name, qty) VALUES (?, 1)", [bad]),
                ]
            )
    await db.execute("INSERT INTO items (name, qty) VALUES ('after', 1)")
    assert await db.fetch_all("SELECT name FROM items") == [{"name": "after"}]


async def test_a_write_is_visible_to_the_next_read(db: Database) -> None:
    for n in range(50):
        await db.execute("INSERT INTO items (name, qty) VALUES (?, ?)", [f"r{n}", n])
        row = await db.fetch_one("SELECT qty FROM items WHERE name = ?", [f"r{n}"])
        assert row == {"qty": n}


async def test_read_many_answers_each_query_from_one_snapshot(db: Database) -> None:
    """Every pair of rows is written in one batch; reads taken together never see half of
    one, however the writes interleave."""

    async def write(n: int) -> None:
        await db.batch(
            [
                ("INSERT INTO items (name, qty) VALUES (?, ?)", [f"s{n}", n]),
                ("INSERT INTO audit (item, note) VALUES (?, ?)", [f"s{n}", "added"]),
            ]
        )

    async def read() -> tuple[int, int]:
        items, audit, named = await db.read_many(
            [
                "SELECT count(*) FROM items",
                ("SELECT count(*) FROM audit WHERE note = ?", ["added"]),
                ("SELECT name FROM items WHERE qty = ?", [0]),
            ]
        )
        assert named.columns == ("name",)
        return items.rows[0][0], audit.rows[0][0]

    seen = await asyncio.gather(*(write(n) for n in range(40)), *(read() for _ in range(40)))
    pairs = [pair for pair in seen if pair is not None]
    assert pairs
    assert all(items == audit for items, audit in pairs), pairs
    assert await read() == (40, 40)
    with pytest.raises(DatabaseError, match="queries only"):
        await db.read_many(["SELECT 1", "DELETE FROM items"])
    assert (await db.fetch_one("SELECT count(*) AS n FROM items")) == {"n": 40}


async def test_another_process_holding_the_lock_delays_a_write_without_failing_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    db = await open_database(f"file:{path}")
    try:
        await db.batch(SCHEMA)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (name, qty) VALUES ('theirs', 1)")
        release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
        release.start()
        await db.execute("INSERT INTO items (name, qty) VALUES ('ours', 1)")
        release.join()
        other.close()
        names = {r["name"] for r in await db.fetch_all("SELECT name FROM items")}
        assert names == {"theirs", "ours"}
    finally:
        await db.close()


async def test_the_event_loop_keeps_running_while_a_commit_works(tmp_path: Path) -> None:
    """A long write runs on the writer thread: the loop keeps serving other coroutines."""
    db = await open_database(f"file:{tmp_path / 'loop.db'}")
    try:
        await db.execute("CREATE TABLE big (n INTEGER)")
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ticks_before = ticks
        await db.execute(
            "INSERT INTO big (n) WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r"
            " WHERE i < 2000000) SELECT i FROM r"
        )
        during = ticks - ticks_before
        done.set()
        await task
        # The old driver ran SQLite on the loop's thread: not one tick got through.
        assert during >= 3
        assert await db.fetch_one("SELECT count(*) AS n FROM big") == {"n": 2_000_000}
    finally:
        await db.close()


async def test_close_finishes_what_was_queued_then_refuses(tmp_path: Path) -> None:
    db = await open_database(f"file:{tmp_path / 'close.db'}")
    await db.batch(SCHEMA)
    writes = [
        asyncio.ensure_future(db.execute("INSERT INTO items (name, qty) VALUES (?, 1)", [f"c{n}"]))
        for n in range(100)
    ]
    await asyncio.sleep(0)
    await db.close()
    assert all(w.done() and w.exception() is None for w in writes)
    with pytest.raises(DatabaseError):
        await db.execute("SELECT 1")
    reopened = await open_database(f"file:{tmp_path / 'close.db'}")
    try:
        assert await reopened.fetch_one("SELECT count(*) AS n FROM items") == {"n": 100}
    finally:
        await reopened.close()


async def test_a_file_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not a database file, not at all" * 100)
    with pytest.raises(DatabaseError):
        await open_database(f"file:{tmp_path / 'not-a-db'}")
