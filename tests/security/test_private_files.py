"""Data files 0600 and folders 0700 (Store, lake, landing, quarantine, artefacts, outbox, logs, secrets), and the
``notify secrets`` / ``notify users delete`` commands end to end in a real process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from notify_core.delivery.channels import Message, build_channel
from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.security.files import harden_tree, loose_entries, use_private_umask
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.factory import build_store


@pytest.fixture
def private_umask() -> Iterator[None]:
    previous = use_private_umask()
    yield
    os.umask(previous)


def test_what_notify_writes_is_private(tmp_path: Path, private_umask: None) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    store = build_store(settings)
    try:
        (settings.landing / "users").mkdir(parents=True)
        (settings.landing / "users" / "u.csv").write_text("user_id,timezone\nu1,UTC\nu2,Not/AZone\n")
        ingest_dataset("users", landing=settings.landing, lake=Lake(settings.lake_root), store=store,
                       quarantine=settings.quarantine_root)
        store.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "email": "a@example.org"})
        channel = build_channel(settings, clock=settings.clock())
        channel.send(Message("n", "u1", "c", "t", "body", "l", "p", "s"), idempotency_key="n")
        channel.close()
        (settings.data_dir / "artefacts" / "campaign_index" / "v1").mkdir(parents=True)
        pl.DataFrame({"a": [1]}).write_parquet(settings.data_dir / "artefacts" / "campaign_index" / "v1" / "k.parquet")
    finally:
        store.close()
    made = {p.relative_to(settings.data_dir).parts[0] for p in settings.data_dir.rglob("*")}
    assert {"store.sqlite", "lake", "landing", "quarantine", "outbox", "secrets", "artefacts"} <= made
    assert loose_entries(settings.data_dir) == []


def test_harden_tree_fixes_an_old_data_directory(tmp_path: Path) -> None:
    old = tmp_path / "data" / "lake" / "users"
    old.mkdir(parents=True)
    (old / "data.parquet").write_bytes(b"x")
    os.chmod(old / "data.parquet", 0o644)
    os.chmod(old, 0o755)
    assert len(loose_entries(tmp_path / "data")) >= 2
    assert harden_tree(tmp_path / "data") >= 2
    assert loose_entries(tmp_path / "data") == []
    assert stat.S_IMODE(os.stat(old / "data.parquet").st_mode) == 0o600


def _notify(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_secrets_rotate_and_users_delete_commands(tmp_path: Path, private_umask: None) -> None:
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    store = build_store(settings)
    try:
        for uid in ("gone", "kept"):
            store.table(tables.USERS).put({"pk": uid, "sk": tables.PROFILE_SK, "user_id": uid,
                                           "email": f"{uid}@example.org"})
            store.table(tables.PURCHASES).put({"pk": uid, "sk": "2031#o#p", "user_id": uid})
    finally:
        store.close()
    listed = _notify("secrets", "list", "--data-dir", str(data))
    rotated = _notify("secrets", "rotate", "--data-dir", str(data), "--overlap-days", "2")
    assert set(rotated) == {"master", "tracking", "webhook"}
    assert rotated["master"]["rewrapped_data_keys"] == 1  # type: ignore[index]
    assert len(rotated["tracking"]["verifying"]) == 2  # type: ignore[index]
    assert listed["tracking"][0]["kid"] in rotated["tracking"]["verifying"]  # type: ignore[index]
    report = _notify("users", "delete", "gone", "--data-dir", str(data))
    assert report["store_rows"] == {"purchases": 1, "users": 1}
    store = build_store(load_settings(data_dir=data))
    try:  # the kept user's email still opens after the master key rotation
        kept = store.table(tables.USERS).get("kept", tables.PROFILE_SK)
        assert kept is not None and kept["email"] == "kept@example.org"
        assert store.table(tables.USERS).get("gone", tables.PROFILE_SK) is None
    finally:
        store.close()
    assert loose_entries(data) == []


def test_the_sqlite_store_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    """docs/security.md: "the SQLite Store file is created 0600 whatever the umask": with the usual 022 (no
    entry point setting 077 first), the database and the files SQLite and the write gate make beside it."""
    from notify_core.store.sqlite import SqliteStore

    previous = os.umask(0o022)
    try:
        store = SqliteStore(tmp_path / "store.sqlite")
        store.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "country": "UK"})
    finally:
        os.umask(previous)
    try:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        store.close()
    assert "store.sqlite" in modes and "store.sqlite-wal" in modes
    assert set(modes.values()) == {0o600}, {name: oct(mode) for name, mode in modes.items()}
