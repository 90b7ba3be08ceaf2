"""A replica that stops receiving changes while `notify backup` runs is an error line and a gauge; so are file
snapshots that keep failing.

Litestream retries a replica it cannot write for ever and says so in its own log only; its metrics count the
local syncs, which go on succeeding. Here a real Litestream replicates a Store to a folder on a 1 MB tmpfs
(tests/small_disk.py) that cannot hold it: before, `notify backup` logged nothing and the replica stayed
empty. The clock is the test's.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from notify_core.backup.replica_lag import BEHIND_ALERT_S, local_ltx_files, newest_txid
from notify_core.backup.service import BackupService, plan_backup
from notify_core.backup.target import BackupTarget
from notify_core.clock import ManualClock
from notify_core.settings import NotifySettings
from notify_core.store.sqlite import SqliteStore
from tests.small_disk import small_disk

NOW = datetime(2031, 5, 4, 12, 0, 0, tzinfo=UTC)


def _wait_for(predicate: Callable[[], bool], *, timeout: float = 60.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _behind(database: str) -> float | None:
    return REGISTRY.get_sample_value("notify_backup_replica_behind_seconds", {"database": database})


def _files_behind() -> float | None:
    return REGISTRY.get_sample_value("notify_backup_files_behind_seconds")


def _records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(message)]


def test_a_replica_the_target_cannot_hold_is_an_error_then_catches_up_once_there_is_room(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    SqliteStore(data / "store.sqlite").close()
    with sqlite3.connect(data / "store.sqlite") as conn:  # 3 MB that no compression shrinks
        conn.execute("CREATE TABLE ballast (b BLOB)")
        conn.executemany("INSERT INTO ballast VALUES (?)", [(os.urandom(1000),) for _ in range(3000)])
    lake = data / "lake" / "purchases"
    lake.mkdir(parents=True)
    (lake / "2011-03.parquet").write_bytes(os.urandom(2_000_000))  # a file snapshot the target cannot hold either
    target = tmp_path / "target"
    caplog.set_level(logging.INFO, logger="notify_core.backup")
    with small_disk(target, 1024) as resize:
        clock = ManualClock(NOW)
        service = BackupService(plan_backup(NotifySettings(data_dir=data), BackupTarget.parse(str(target))),
                                clock=clock)
        stop = threading.Event()
        runner = threading.Thread(target=service.run, kwargs={"stop": stop, "interval": 0.1}, daemon=True)
        runner.start()
        try:
            _wait_for(lambda: newest_txid(local_ltx_files(data / "store.sqlite")) > 0, what="Litestream's staging")
            _wait_for(lambda: b"no space left on device" in service.log_path.read_bytes(), what="the upload failing")
            for _ in range(300):  # the clock moves a second a look until the backup has seen its replica behind
                if (_behind("store") or 0) > 0:
                    break
                clock.advance(1)
                time.sleep(0.2)
            clock.advance(30)
            _wait_for(lambda: (_behind("store") or 0) >= 30, what="the gauge")
            assert not _records(caplog, "backup replica behind")  # not yet an error: under a minute
            clock.advance(BEHIND_ALERT_S)
            _wait_for(lambda: bool(_records(caplog, "backup replica behind")), what="the error line")
            (error,) = _records(caplog, "backup replica behind")
            assert error.levelno == logging.ERROR and error.database == "store"  # type: ignore[attr-defined]
            assert "no space left on device" in error.litestream_error  # type: ignore[attr-defined]
            assert (_behind("store") or 0) >= BEHIND_ALERT_S + 30
            clock.advance(60)
            time.sleep(0.5)
            assert len(_records(caplog, "backup replica behind")) == 1  # once, not at every look
            # the file snapshot failed at every tick too: one line for the spell (was one a tick), and its gauge
            assert len(_records(caplog, "file snapshot failed")) == 1
            assert (_files_behind() or 0) >= BEHIND_ALERT_S + 90

            resize(65536)  # the operator makes room: Litestream's retry uploads, nothing restarted
            _wait_for(lambda: _behind("store") == 0, what="the replica catching up")
            assert _records(caplog, "backup replica caught up")
            _wait_for(lambda: _files_behind() == 0, what="a file snapshot working again")
            assert _records(caplog, "file snapshot works again")
            assert newest_txid(service.plan.target.blobs().list("store/")) >= newest_txid(
                local_ltx_files(data / "store.sqlite"))
        finally:
            stop.set()
            runner.join(60)
    assert not runner.is_alive()
