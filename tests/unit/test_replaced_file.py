"""A thread's first connection to a Store or stream log whose file was replaced under the process (a wiped data
directory restored, as `notify restore` does) is refused like a write, where it opened the new file and
answered from it with the process's stale state (`notify serve` answered 401 from that thread for an API key
minted after the backup, found by `tests/backup/test_restore_in_use.py` with 2 workers)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from notify_core.errors import DatabaseReplacedError
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog


def _in_a_new_thread(fn: object) -> BaseException | object:
    out: list[BaseException | object] = []

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


def test_a_new_threads_read_of_a_replaced_store_is_refused(tmp_path: Path) -> None:
    backup = tmp_path / "backup.sqlite"
    first = SqliteStore(backup)
    first.table(tables.USERS).put({"pk": "old", "sk": tables.PROFILE_SK})
    first.close()
    live = tmp_path / "data" / "store.sqlite"
    store = SqliteStore(live)
    store.table(tables.USERS).put({"pk": "new", "sk": tables.PROFILE_SK})
    assert store.table(tables.USERS).get("new", tables.PROFILE_SK) is not None  # this thread's connection
    shutil.rmtree(live.parent)  # wiped, and restored from an older copy
    live.parent.mkdir()
    shutil.copy(backup, live)
    got = _in_a_new_thread(lambda: store.table(tables.USERS).get("old", tables.PROFILE_SK))
    assert isinstance(got, DatabaseReplacedError), got
    with pytest.raises(DatabaseReplacedError):
        store.table(tables.USERS).put({"pk": "x", "sk": tables.PROFILE_SK})  # as a write always was
    store.close()


def test_a_new_threads_read_of_a_replaced_stream_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stream" / "log.sqlite"
    log = LocalLog(path)
    log.close()
    shutil.copy(path, tmp_path / "copy.sqlite")
    log = LocalLog(path)
    (tmp_path / "copy.sqlite").replace(path)  # another file now at the path
    got = _in_a_new_thread(lambda: log.committed("g", "t"))
    assert isinstance(got, DatabaseReplacedError), got
    log.close()


def test_a_store_first_opened_after_a_restore_by_a_process_that_started_before_it_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`notify serve`'s workers open their Store on their first request: one whose first request came after the
    data directory was wiped and restored answered 401 from the restored file (a key minted after the backup),
    where the worker that had served before answered 503 and stopped (CI, 1 run in 2 with 2 workers)."""
    from notify_core import sqlite_tx

    monkeypatch.setattr(sqlite_tx, "_STARTED_WITH", {})
    data = tmp_path / "data"
    SqliteStore(data / "store.sqlite").close()
    LocalLog(data / "log.sqlite").close()
    sqlite_tx.started_with({p: sqlite_tx.file_identity(p) for p in (data / "store.sqlite", data / "log.sqlite")})
    shutil.rmtree(data)  # wiped
    with pytest.raises(DatabaseReplacedError):
        SqliteStore(data / "store.sqlite")
    assert not data.exists()  # nothing made again in its place
    data.mkdir()
    SqliteStore(tmp_path / "other.sqlite").close()  # a file not named at the start opens as before
    shutil.copy(tmp_path / "other.sqlite", data / "store.sqlite")  # restored
    shutil.copy(tmp_path / "other.sqlite", data / "log.sqlite")
    with pytest.raises(DatabaseReplacedError):
        SqliteStore(data / "store.sqlite")
    with pytest.raises(DatabaseReplacedError):
        LocalLog(data / "log.sqlite")
