"""A restore after losing the data directory opens what the backup holds: the keys come back with the data.

The keys (``<data_dir>/secrets``: the data keys, the API-key pepper, the signing rings) were not in the backup.
Restored onto a new disk, the Store came back with every sealed personal field unreadable ("unknown data key")
and every API key refused. Now the backup holds them as one bundle sealed by the master key, which the operator
keeps off the machine; the restore puts them back, or is refused before anything is replaced when the master
key is not there. Real processes, real files.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from notify_core.backup.service import BackupService, plan_backup
from notify_core.backup.target import BackupTarget
from notify_core.clock import ManualClock
from notify_core.security.crypto import MASTER_FILE, DecryptionError
from notify_core.settings import NotifySettings
from notify_core.store import tables
from notify_core.store.factory import build_store
from tests.backup.test_backup import ROOT, _cli
from tests.servers import notify_serve
from tests.small_disk import fill, small_disk

EMAIL = "ada@example.com"
NOW = datetime(2031, 5, 4, 12, 0, 0, tzinfo=UTC)


def _notify(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notify_cli.main", *args, "--data-dir", str(data)], cwd=ROOT,
                          env={**os.environ, "NOTIFY_ENV": "local"}, capture_output=True, text=True, timeout=120)


def _user(data: Path) -> dict[str, object] | None:
    store = build_store(NotifySettings(data_dir=data))
    try:
        return store.table(tables.USERS).get("u1", tables.PROFILE_SK)
    finally:
        store.close()


def _backed_up(tmp_path: Path) -> tuple[Path, Path, str, Path]:
    """A data directory with a sealed user and an API key, backed up once; its master key copied away (as the
    operator keeps it); then the disk is lost. Returns (data dir, target, the API key, the master's copy)."""
    data, target, escrow = tmp_path / "data", tmp_path / "backup", tmp_path / "escrow" / MASTER_FILE
    store = build_store(NotifySettings(data_dir=data))
    store.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "email": EMAIL})
    store.close()
    made = _notify(data, "keys", "create", "--name", "app", "--scope", "users:read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    out = _cli("backup", "--data-dir", str(data), "--to", str(target), "--once")
    assert out.returncode == 0, out.stderr
    assert "the master key is in the data directory" in out.stderr  # said at every backup
    escrow.parent.mkdir(mode=0o700)
    shutil.copy2(data / "secrets" / MASTER_FILE, escrow)
    shutil.rmtree(data)  # the disk is gone
    return data, target, token, escrow


def test_a_restore_onto_a_new_disk_opens_the_sealed_fields_and_the_api_keys(tmp_path: Path) -> None:
    data, target, token, escrow = _backed_up(tmp_path)
    (data / "secrets").mkdir(parents=True, mode=0o700)
    shutil.copy2(escrow, data / "secrets" / MASTER_FILE)  # the operator puts the master key back first
    out = _cli("restore", "--data-dir", str(data), "--from", str(target))
    assert out.returncode == 0, out.stderr
    assert '"keys": 2' in out.stdout  # the data keys and the pepper (never the master, never admin.key)
    assert _user(data) == {"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "email": EMAIL}
    with notify_serve(data) as (_, base):  # the key issued before the disaster still verifies
        reply = httpx.get(f"{base}/v1/users/u1/preferences", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200, reply.text


def test_without_the_master_key_the_restore_is_refused_before_anything_is_replaced(tmp_path: Path) -> None:
    data, target, _token, _escrow = _backed_up(tmp_path)
    out = _cli("restore", "--data-dir", str(data), "--from", str(target))
    assert out.returncode == 2, out.stderr
    assert "the backup's keys are sealed by master key version" in out.stderr and MASTER_FILE in out.stderr
    assert not (data / "store.sqlite").exists() or (data / "store.sqlite").stat().st_size == 0
    assert not (data / "secrets" / MASTER_FILE).exists()  # no master minted in its place

    out = _cli("restore", "--data-dir", str(data), "--from", str(target), "--without-keys")  # on purpose
    assert out.returncode == 0, out.stderr
    with pytest.raises(DecryptionError):  # what a restore without the keys means, and why it is refused
        _user(data)


def test_the_backup_holds_no_key_in_clear(tmp_path: Path) -> None:
    data, target, _token, escrow = _backed_up(tmp_path)
    (data / "secrets").mkdir(parents=True, mode=0o700)
    shutil.copy2(escrow, data / "secrets" / MASTER_FILE)
    assert _cli("restore", "--data-dir", str(data), "--from", str(target)).returncode == 0
    secrets = {p.name: p.read_bytes() for p in (data / "secrets").iterdir() if p.is_file()}
    pepper = secrets["api_key_pepper"].strip()
    master = secrets[MASTER_FILE]
    backed_up = b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file())
    assert len(pepper) >= 32 and pepper not in backed_up
    assert b'"keys"' in master and master not in backed_up
    for line in master.splitlines():  # no master key version's secret either
        if b'": "' in line and len(line.split(b'": "')[1]) > 40:
            assert line.split(b'": "')[1].rstrip(b'",') not in backed_up
    assert list(target.glob("keys/*.json")) and all(p.stat().st_mode & 0o077 == 0 for p in target.glob("keys/*"))


def test_a_key_bundle_the_target_cannot_take_is_one_error_line_until_it_works_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full target: the bundle is tried again at every tick, one error line for the spell (apart from the
    file snapshot's), one when it works again, and the bundle is there then."""
    data, target = tmp_path / "data", tmp_path / "target"
    store = build_store(NotifySettings(data_dir=data))  # its keys made
    store.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "email": EMAIL})
    store.close()
    caplog.set_level(logging.INFO, logger="notify_core.backup")
    with small_disk(target, 1024):
        filler = fill(target, leave_kib=0)
        service = BackupService(plan_backup(NotifySettings(data_dir=data), BackupTarget.parse(str(target))),
                                clock=ManualClock(NOW))
        stop = threading.Event()
        runner = threading.Thread(target=service.run, kwargs={"stop": stop, "interval": 0.1}, daemon=True)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while not [r for r in caplog.records if r.getMessage().startswith("key backup failed")]:
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                time.sleep(0.05)
            time.sleep(1.0)  # ~10 more ticks
            failed = [r for r in caplog.records if r.getMessage().startswith("key backup failed")]
            assert len(failed) == 1 and "No space left" in failed[0].error  # type: ignore[attr-defined]
            filler.unlink()
            while not [r for r in caplog.records if r.getMessage() == "key backup works again"]:
                assert time.monotonic() < deadline + 60, [r.getMessage() for r in caplog.records]
                time.sleep(0.05)
            assert list((target / "keys").glob("*.json"))
        finally:
            stop.set()
            runner.join(60)
