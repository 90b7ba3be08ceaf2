"""Litestream's log under ``notify backup`` keeps the logs' retention instead of growing while the backup runs.

Litestream writes its lines to a file it holds open (``O_APPEND``) for as long as it runs: under writes, a
"compaction complete" line every 30 s per database, ~1 MB a day. The file was moved aside only when `notify
backup` started again. A real Litestream runs here; the day is the test's clock, not the calendar.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from notify_core.backup.service import BackupService, plan_backup
from notify_core.backup.target import BackupTarget
from notify_core.clock import ManualClock
from notify_core.line_file import rotate_held_file
from notify_core.settings import NotifySettings
from notify_core.store.sqlite import SqliteStore

LATE = datetime(2031, 5, 4, 23, 59, 0, tzinfo=UTC)


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_litestreams_log_moves_aside_at_midnight_and_old_days_go(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    SqliteStore(data / "store.sqlite").close()
    clock = ManualClock(LATE)
    service = BackupService(plan_backup(NotifySettings(data_dir=data), BackupTarget.parse(str(tmp_path / "b"))),
                            clock=clock)
    log = service.log_path
    stale = log.with_name(f"{log.stem}.2031-04-01{log.suffix}")  # 34 days before the next day: past the 30
    stop = threading.Event()
    runner = threading.Thread(target=service.run, kwargs={"stop": stop, "interval": 0.1}, daemon=True)
    runner.start()
    try:
        _wait_for(lambda: log.exists() and b"replicating to" in log.read_bytes())
        stale.write_text("time=2031-04-01T00:00:00Z level=INFO msg=old\n")
        clock.advance(120)  # past midnight
        aside = log.with_name(f"{log.stem}.2031-05-04{log.suffix}")
        _wait_for(aside.exists)
        _wait_for(lambda: not stale.exists())
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()
    assert b"replicating to" in aside.read_bytes() and aside.stat().st_mode & 0o077 == 0
    current = log.read_bytes()
    # Litestream's lines after the truncate land at the file's new start (O_APPEND): no hole of NUL bytes
    assert b"\0" not in current and b"litestream shut down" in current and b"replicating to" not in current


def test_a_held_file_is_copied_aside_and_truncated_under_its_appender(tmp_path: Path) -> None:
    path = tmp_path / "held.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"day one\n")
        assert not rotate_held_file(path, day="2031-05-04", last_day="2031-05-04", keep_days=30)  # same day
        assert rotate_held_file(path, day="2031-05-05", last_day="2031-05-04", keep_days=30)
        os.write(fd, b"day two\n")
        assert rotate_held_file(path, day="2031-05-05", last_day="2031-05-04", keep_days=30)  # again: .1
    finally:
        os.close(fd)
    assert path.read_bytes() == b""
    assert (tmp_path / "held.2031-05-04.log").read_bytes() == b"day one\n"
    assert (tmp_path / "held.2031-05-04.1.log").read_bytes() == b"day two\n"
    later = (datetime(2031, 5, 5, tzinfo=UTC) + timedelta(days=31)).date().isoformat()
    assert not rotate_held_file(path, day=later, last_day="2031-06-04", keep_days=30)  # empty: nothing moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held.log"]  # both past the retention
