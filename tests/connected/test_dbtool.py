"""`deploy.local.dbtool`: online backup, verified restore, and migrations down and up, on real
libSQL/SQLite files written through the services' own driver."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from axiom_shared.db import Database, open_database
from axiom_shared.migrations import applied_versions, migrate
from deploy.local import dbtool
from deploy.local.dbtool import DbTarget, DbToolError, RemoteDatabaseError
from tests.fixtures.infra import start_app

pytestmark = pytest.mark.connected

NOW = "2026-01-01T00:00:00+00:00"
#: Skip the "is its service up?" probe: another stack may well run on the default ports.
NO_PROBE: dict[str, int | None] = {"payments": None, "amadeus-proxy": None}


def targets(var: Path) -> dict[str, DbTarget]:
    env = {"AXIOM_VAR_DIR": str(var)}
    return {str(name): target for name, target in dbtool.targets_from_env(env).items()}


async def fill_payments(db: Database) -> None:
    """One payment in every state (as the schema's CHECKs want them), its entitlement, its
    idempotency record and an outbox row."""
    rows: list[dict[str, Any]] = [
        {"status": "pending"},
        {"status": "verified", "tx_signature": "sig-verified"},
        {"status": "provisioned", "tx_signature": "sig-provisioned", "finalized_at": NOW},
        {"status": "failed", "failure_reason": "cancelled", "received_lamports": 10},
        {"status": "expired"},
    ]  # fmt: skip
    for n, extra in enumerate(rows):
        row: dict[str, Any] = {
            "public_id": f"pay_{n:020d}",
            "order_id": "axiomid-pro-monthly",
            "user_id": f"user-{n}",
            "reference_key": f"ref-{n}",
            "amount_lamports": 100_000_000 + n,
            "received_lamports": 0,
            "recipient": "merchant",
            "expires_at": NOW,
            "created_at": NOW,
            "updated_at": NOW,
            **extra,
        }
        cols, marks = ", ".join(row), ", ".join("?" for _ in row)
        await db.execute(f"INSERT INTO payments ({cols}) VALUES ({marks})", list(row.values()))  # noqa: S608
    await db.execute(
        "INSERT INTO entitlements (payment_id, user_id, order_id, granted_at)"
        " SELECT id, user_id, order_id, ? FROM payments WHERE status = 'provisioned'",
        [NOW],
    )


async def fill_bookings(db: Database) -> None:
    await db.execute(
        "INSERT INTO agent_transactions (id, agent_id, user_id, kind, amount_cents, currency,"
        " status, details, created_at) VALUES"
        " ('legacy-1', 'agent-1', 'user-1', 'flight', 12000, 'EGP', 'confirmed', '{}', ?),"
        " ('legacy-2', 'agent-1', NULL, 'hotel', NULL, NULL, 'cancelled', NULL, ?)",
        [NOW, NOW],
    )


async def fresh(target: DbTarget) -> Database:
    db = await open_database(target.url)
    await migrate(db, target.migrations)
    return db


@pytest.fixture
async def var(tmp_path: Path) -> Path:
    """Both databases under tmp_path/var, migrated and holding rows."""
    folder = tmp_path / "var"
    found = targets(folder)
    for name, fill in (("payments", fill_payments), ("bookings", fill_bookings)):
        db = await fresh(found[name])
        try:
            await fill(db)
        finally:
            await db.close()
    return folder


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in order (the schema included)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}  # noqa: S608
        out["sqlite_master"] = conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()
        return out
    finally:
        conn.close()


def exists(path: Path) -> bool:
    return path.exists()


def kept_files(var: Path) -> list[Path]:
    """The previous files a restore kept aside."""
    return sorted(var.glob("*.pre-restore-*"))


def hold_open(path: Path) -> subprocess.Popen[bytes]:
    """Another process with `path` open (as a service's connection would hold it)."""
    code = f"import time; f = open({str(path)!r}, 'rb'); print('open', flush=True); time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def wipe(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def corrupt_table(path: Path, table: str) -> None:
    """Break the b-tree page of `table` (its page type byte), leaving the header intact."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    with path.open("r+b") as handle:
        handle.seek((root[0] - 1) * page_size)
        handle.write(b"\x00" * 12)


# --- backup and restore -----------------------------------------------------------------------


async def test_backup_wipe_restore_round_trips_both_databases(var: Path) -> None:
    found = targets(var)
    before = {name: dump(t.path) for name, t in found.items()}
    folder, manifest = await asyncio.to_thread(dbtool.backup, list(found.values()), var / "backups")

    assert folder.parent == var / "backups"
    assert sorted(p.name for p in folder.iterdir()) == [
        "bookings.db",
        "manifest.json",
        "payments.db",
    ]
    written = json.loads((folder / "manifest.json").read_text())
    assert written["format"] == 1
    for entry in manifest.files:
        target = found[entry.database]
        copy = folder / entry.file
        assert entry.bytes == copy.stat().st_size
        assert entry.sha256 == dbtool.sha256_of(copy)
        assert entry.integrity == "ok"
        assert entry.migrations == [m.version for m in target.migrations]
        assert entry.source == str(target.path)
    rows = {e.database: e.rows for e in manifest.files}
    assert rows["payments"]["payments"] == 5
    assert rows["payments"]["entitlements"] == 1
    assert rows["bookings"]["agent_transactions"] == 2
    # The copy is one self-contained file, in rollback-journal mode.
    assert not any(p.name.endswith(("-wal", "-shm")) for p in folder.iterdir())

    for target in found.values():
        wipe(target.path)
    said: list[str] = []
    dbtool.restore(folder, list(found.values()), ports=NO_PROBE, say=said.append)

    for name, target in found.items():
        assert dump(target.path) == before[name]
        assert dbtool.integrity_problems(target.path) == []
        assert not exists(Path(f"{target.path}-wal"))
    assert len([line for line in said if "restored from" in line]) == 2
    # The services open it again as before (WAL) and see every payment.
    db = await open_database(found["payments"].url)
    try:
        states = await db.fetch_all("SELECT status FROM payments ORDER BY id")
        assert [r["status"] for r in states] == [
            "pending", "verified", "provisioned", "failed", "expired"
        ]  # fmt: skip
        assert sorted(await applied_versions(db)) == entry_versions(manifest, "payments")
    finally:
        await db.close()


def entry_versions(manifest: dbtool.Manifest, name: str) -> list[int]:
    return next(e.migrations for e in manifest.files if e.database == name)


async def test_restore_replaces_newer_data_and_keeps_the_previous_file(var: Path) -> None:
    target = targets(var)["payments"]
    before = dump(target.path)
    folder, _ = dbtool.backup([target], var / "backups")
    db = await open_database(target.url)
    try:
        await db.execute("UPDATE payments SET order_id = 'changed-after-backup'")
    finally:
        await db.close()

    dbtool.restore(folder, [target], ports=NO_PROBE, say=lambda _line: None)

    assert dump(target.path) == before
    kept = kept_files(var)
    assert len(kept) == 1
    conn = sqlite3.connect(kept[0])
    try:
        assert conn.execute("SELECT DISTINCT order_id FROM payments").fetchall() == [
            ("changed-after-backup",)
        ]
    finally:
        conn.close()


async def test_online_backup_is_one_consistent_snapshot_while_writes_go_on(var: Path) -> None:
    target = targets(var)["payments"]
    db = await open_database(target.url)
    stop = asyncio.Event()
    written = 0

    async def writer() -> None:
        # Each transaction adds a payment and its entitlement: a consistent copy holds both or
        # neither of every pair.
        nonlocal written
        while not stop.is_set():
            n = 1000 + written
            await db.batch(
                [
                    (
                        "INSERT INTO payments (public_id, order_id, reference_key, "
                        "amount_lamports, recipient, status, tx_signature, expires_at, "
                        "created_at, updated_at) VALUES (?, 'o', ?, 1, 'm', 'provisioned', ?, "
                        "?, ?, ?)",
                        [f"pay_{n:020d}", f"ref-{n}", f"sig-{n}", NOW, NOW, NOW],
                    ),
                    (
                        "INSERT INTO entitlements (payment_id, user_id, order_id, granted_at) "
                        "SELECT id, user_id, order_id, ? FROM payments WHERE public_id = ?",
                        [NOW, f"pay_{n:020d}"],
                    ),
                ]
            )
            written += 1
            await asyncio.sleep(0)  # the local driver does not yield by itself

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.2)
        manifests = []
        for _ in range(3):
            manifests.append((await asyncio.to_thread(dbtool.backup, [target], var / "backups"))[1])
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await db.close()

    assert written > 0
    for manifest in manifests:
        (entry,) = manifest.files
        provisioned_pairs = entry.rows["entitlements"] - 1  # one came with the fixture
        assert entry.rows["payments"] - 5 == provisioned_pairs
    assert manifests[-1].files[0].rows["payments"] > 5  # the writer's rows were seen


async def test_a_corrupt_database_is_never_backed_up(var: Path) -> None:
    target = targets(var)["payments"]
    db = await open_database(target.url)
    await db.close()
    sqlite3.connect(target.path).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
    corrupt_table(target.path, "payments")
    with pytest.raises(DbToolError, match="integrity check"):
        dbtool.backup([target], var / "backups")
    assert list((var / "backups").iterdir()) == []  # nothing half-written is left


async def test_a_corrupt_copy_fails_the_restore_even_with_a_matching_manifest(var: Path) -> None:
    found = targets(var)
    folder, _ = dbtool.backup(list(found.values()), var / "backups")
    copy = folder / "payments.db"
    corrupt_table(copy, "payments")
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["database"] == "payments":
            entry["sha256"] = dbtool.sha256_of(copy)
            entry["bytes"] = copy.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    untouched = {name: dbtool.sha256_of(t.path) for name, t in found.items()}

    with pytest.raises(DbToolError, match="integrity check"):
        dbtool.restore(folder, list(found.values()), ports=NO_PROBE)
    # Checked before any swap: the bookings DB, listed after, is not restored either.
    assert {name: dbtool.sha256_of(t.path) for name, t in found.items()} == untouched
    assert kept_files(var) == []


def _edit_manifest(folder: Path, change: str) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["files"][0]
    if change == "no manifest":
        path.unlink()
        return
    if change == "not json":
        path.write_text("{ nope")
        return
    if change == "format":
        manifest["format"] = 2
    elif change == "sha256":
        entry["sha256"] = "0" * 64
    elif change == "bytes":
        entry["bytes"] += 1
    elif change == "path":
        entry["file"] = "../payments.db"
    elif change == "database":
        entry["database"] = "accounts"
    elif change == "missing file":
        (folder / entry["file"]).unlink()
    elif change == "unknown field":
        manifest["files"][0]["extra"] = 1
    elif change == "tampered file":
        with (folder / entry["file"]).open("r+b") as handle:
            handle.seek(-1, 2)
            handle.write(b"\x01")
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "change",
    [
        "no manifest",
        "not json",
        "format",
        "sha256",
        "bytes",
        "path",
        "database",
        "missing file",
        "unknown field",
        "tampered file",
    ],
)
async def test_restore_refuses_a_bad_manifest_and_touches_nothing(var: Path, change: str) -> None:
    target = targets(var)["payments"]
    folder, _ = dbtool.backup([target], var / "backups")
    _edit_manifest(folder, change)
    untouched = dbtool.sha256_of(target.path)
    with pytest.raises(DbToolError):
        dbtool.restore(folder, [target], ports=NO_PROBE)
    assert dbtool.sha256_of(target.path) == untouched
    assert kept_files(var) == []


async def test_restore_refuses_a_database_in_use_unless_forced(var: Path) -> None:
    found = targets(var)
    target = found["payments"]
    folder, _ = dbtool.backup([target], var / "backups")

    # Another process holding the file open.
    with hold_open(target.path) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == b"open"
            with pytest.raises(DbToolError, match=rf"process {holder.pid} .* open"):
                dbtool.restore(folder, [target], ports=NO_PROBE)
        finally:
            holder.kill()

    # Its service answering on its port.
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": "payments"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    service = await start_app(app)
    try:
        port = service.server.port
        assert port is not None
        ports = {"payments": port}
        with pytest.raises(DbToolError, match="stop the stack first"):
            await asyncio.to_thread(dbtool.restore, folder, [target], ports=ports)
        # Another service on that port is not ours: no refusal on its account.
        assert await asyncio.to_thread(dbtool.in_use, found["bookings"], port) == []
        await asyncio.to_thread(
            dbtool.restore, folder, [target], ports=ports, force=True, say=lambda _l: None
        )
    finally:
        await service.server.close()


async def test_remote_databases_are_refused_with_the_turso_way(tmp_path: Path) -> None:
    env = {"AXIOM_VAR_DIR": str(tmp_path), "TURSO_DB_URL": "libsql://payments-axiomid.turso.io"}
    remote = dbtool.targets_from_env(env)["payments"]
    assert remote.remote
    with pytest.raises(RemoteDatabaseError, match=r"turso db create .* --from-db"):
        dbtool.backup([remote], tmp_path / "backups")
    with pytest.raises(RemoteDatabaseError, match="point-in-time"):
        dbtool.restore(tmp_path, [remote], ports=NO_PROBE)
    assert not (tmp_path / "backups").exists()


# --- migrations -------------------------------------------------------------------------------


async def rows_of(target: DbTarget, table: str, columns: str) -> list[dict[str, Any]]:
    db = await open_database(target.url)
    try:
        return await db.fetch_all(f"SELECT {columns} FROM {table} ORDER BY rowid")  # noqa: S608
    finally:
        await db.close()


async def versions_of(target: DbTarget) -> list[int]:
    db = await open_database(target.url)
    try:
        return sorted(await applied_versions(db))
    finally:
        await db.close()


PAYMENT_COLUMNS = (
    "id, public_id, order_id, user_id, reference_key, amount_lamports, received_lamports,"
    " recipient, status, tx_signature, failure_reason, version, expires_at, finalized_at,"
    " created_at, updated_at"
)
BOOKING_COLUMNS = "id, agent_id, user_id, kind, amount_cents, currency, status, details, created_at"


async def test_migrate_down_and_up_keeps_payments_and_bookings(var: Path) -> None:
    found = targets(var)
    payments, bookings = found["payments"], found["bookings"]
    head = {name: [m.version for m in t.migrations] for name, t in found.items()}
    before_payments = await rows_of(payments, "payments", PAYMENT_COLUMNS)
    before_entitlements = await rows_of(payments, "entitlements", "*")
    before_bookings = await rows_of(bookings, "agent_transactions", BOOKING_COLUMNS)
    said: list[str] = []

    # One step back by default: only the newest migration.
    reverted = await dbtool.migrate_down_target(payments, None, say=said.append)
    assert reverted == [head["payments"][-1]]
    assert await versions_of(payments) == head["payments"][:-1]

    # Down to 1 (the payments table itself stays): nothing lost, since the dropped columns and
    # tables hold nothing here; a backup is taken first.
    reverted = await dbtool.migrate_down_target(
        payments, 1, backup_root=var / "backups", say=said.append
    )
    assert reverted == head["payments"][1:-1][::-1]
    assert await versions_of(payments) == [1]
    (backup_dir,) = (var / "backups").iterdir()
    manifest = dbtool.read_manifest(backup_dir)
    assert manifest.files[0].migrations == head["payments"][:-1]
    assert any("backed up to" in line for line in said)
    assert await rows_of(payments, "payments", PAYMENT_COLUMNS) == before_payments

    # The bookings DB keeps agent_transactions at every version; going below 2 would drop the
    # payment_provider column, where one row holds something else than the default: refused,
    # nothing changed.
    db = await open_database(bookings.url)
    try:
        await db.execute(
            "UPDATE agent_transactions SET payment_provider = 'paymob' WHERE id = 'legacy-2'"
        )
    finally:
        await db.close()
    with pytest.raises(DbToolError, match=r"agent_transactions\.payment_provider \(1 values\)"):
        await dbtool.migrate_down_target(bookings, 1, say=said.append)
    assert await versions_of(bookings) == head["bookings"]
    reverted = await dbtool.migrate_down_target(bookings, 2, say=said.append)
    assert reverted == head["bookings"][2:][::-1]
    assert await rows_of(bookings, "agent_transactions", BOOKING_COLUMNS) == before_bookings

    # And up again: every row as it was.
    for target in (payments, bookings):
        await dbtool.migrate_target(target, say=said.append)
        assert await versions_of(target) == head[target.name]
    assert await rows_of(payments, "payments", PAYMENT_COLUMNS) == before_payments
    assert await rows_of(payments, "entitlements", "*") == before_entitlements
    assert await rows_of(bookings, "agent_transactions", BOOKING_COLUMNS) == before_bookings
    assert any(line.startswith("payments DB: applied 0002_creation") for line in said)


async def test_migrate_down_names_what_it_would_destroy_and_goes_ahead_only_when_allowed(
    var: Path,
) -> None:
    payments = targets(var)["payments"]
    db = await open_database(payments.url)
    try:
        await db.execute("UPDATE payments SET last_check = 'no_reference' WHERE status = 'pending'")
    finally:
        await db.close()
    with pytest.raises(DbToolError, match=r"payments\.last_check \(1 values\)"):
        await dbtool.migrate_down_target(payments, 2, say=lambda _l: None)
    assert await versions_of(payments) == [m.version for m in payments.migrations]

    reverted = await dbtool.migrate_down_target(
        payments, 2, allow_data_loss=True, backup_root=var / "backups", say=lambda _l: None
    )
    assert 3 in reverted
    # What was lost is in the backup taken first.
    (backup_dir,) = (var / "backups").iterdir()
    conn = sqlite3.connect(backup_dir / "payments.db")
    try:
        assert (
            conn.execute("SELECT count(*) FROM payments WHERE last_check IS NOT NULL").fetchone()[0]
            == 1
        )
    finally:
        conn.close()


def test_the_command_line_backs_up_restores_and_explains_refusals(
    var: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AXIOM_VAR_DIR", str(var))
    for name in ("TURSO_DB_URL", "BOOKINGS_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    # Ports nobody answers on, so that a stack running on this machine is not mistaken for ours.
    monkeypatch.setenv("PAYMENTS_PORT", "1")
    monkeypatch.setenv("AMADEUS_PROXY_PORT", "1")

    assert dbtool.main(["migrate"]) == 0
    assert "nothing to apply" in capsys.readouterr().out
    assert dbtool.main(["backup"]) == 0
    out = capsys.readouterr().out
    assert "integrity ok" in out
    (folder,) = (var / "backups").iterdir()
    assert f"backup written to {folder}" in out
    wipe(var / "payments.db")
    assert dbtool.main(["restore", str(folder), "--db", "payments"]) == 0
    assert "payments DB" in capsys.readouterr().out
    assert (var / "payments.db").exists()

    # A backup of one DB restores that one when no --db is given.
    assert dbtool.main(["backup", "--db", "bookings", "--out", str(var / "one")]) == 0
    (single,) = (var / "one").iterdir()
    capsys.readouterr()
    assert dbtool.main(["restore", str(single)]) == 0
    assert "bookings DB" in (out := capsys.readouterr().out)
    assert "payments DB" not in out

    assert dbtool.main(["restore", str(var)]) == 2
    assert "not a backup" in capsys.readouterr().err
    monkeypatch.setenv("TURSO_DB_URL", "libsql://payments-axiomid.turso.io")
    assert dbtool.main(["backup", "--db", "payments"]) == 2
    assert "point-in-time" in capsys.readouterr().err
    shutil.rmtree(folder)
