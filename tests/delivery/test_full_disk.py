"""The disk under `notify worker` fills up mid-delivery (a small tmpfs as its data directory,
tests/small_disk.py), for real: the worker keeps running (claims fail and stay due, nothing crashes), a
SIGTERM then ends it within seconds with a one-line reason (exit 75 if its last writes were refused), and
once space is back a worker finishes the job: every notification reaches the receiver, every schedule
item ends sent with its deliveries and sends rows, and the only repeats are sends whose outcome the full
disk refused (re-sent under the same idempotency key)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notify_cli import STOPPED_UNFINISHED
from notify_core.delivery.sink import read_receipts
from notify_core.delivery.synthetic import seed_due
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.crash_harness import _start, _start_sink, _stop_sink
from tests.small_disk import fill, small_disk

N = 3000
RECEIPT_BYTES = 90  # ~bytes per receipt line (a trigger point, not a count)
REFUSED = "claiming a batch failed"


class _Lines:
    """A process's stderr read as it comes (a thread), so a test can wait for a line before it acts."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._lines: list[str] = []
        self._ended = False  # the pipe closed: the process has ended, no line comes any more
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, needle: str, *, timeout: float) -> bool:
        """Whether a line with ``needle`` came within ``timeout`` (False at once if the process ended without)."""

        def seen() -> bool:
            return any(needle in line for line in self._lines)

        with self._changed:
            self._changed.wait_for(lambda: self._ended or seen(), timeout=timeout)
            return seen()

    def close(self) -> None:
        """Called once the process has ended: the reader has its last lines when the pipe closes."""
        self._reader.join(timeout=30)

    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)


def test_a_disk_that_fills_mid_delivery_loses_nothing_and_sigterm_still_stops_the_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    receipts = tmp_path / "receipts.jsonl"  # the receiver's disk is not the one that fills
    with small_disk(data, 65536):
        store = SqliteStore(data / "store.sqlite")
        items = seed_due(store, n=N, start=datetime.fromtimestamp(int(time.time()) - 2, UTC), campaigns=20)
        store.close()
        sink, url = _start_sink(receipts)
        workers = []
        try:
            worker = _start(data, data / "outbox.jsonl", lease_s=2.0, concurrency=4, idle_exit=60, webhook_url=url)
            workers.append(worker)
            stderr = _Lines(worker)
            deadline = time.monotonic() + 120
            while not receipts.exists() or receipts.stat().st_size < RECEIPT_BYTES * N // 3:
                assert worker.poll() is None and time.monotonic() < deadline, stderr.text()[-2000:]
                time.sleep(0.01)
            filler = fill(data, leave_kib=0)  # a third delivered: the disk is full from here
            full_since = time.monotonic()
            # The log file's first refused line, waited for rather than assumed within a fixed 3 s: a line that
            # fits in the room left in the file's last page is still written on a full tmpfs, so a worker that
            # only logged a few refused claims in those 3 s was once stopped before its log file refused any.
            assert stderr.wait_for("the log file cannot be written", timeout=90), stderr.text()[-3000:]
            log_refused_in = time.monotonic() - full_since
            time.sleep(max(0.0, 3.0 - (time.monotonic() - full_since)))
            if worker.poll() is not None:
                pytest.fail(f"the worker died on the full disk: {stderr.text()[-3000:]!r}")
            worker.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            worker.wait(timeout=30)
            stopped_in = time.monotonic() - asked
            stderr.close()
            text = stderr.text()
            assert worker.returncode in (0, STOPPED_UNFINISHED), text[-3000:]
            assert stopped_in < 10.0
            # No crash: no rich traceback panel. Log lines the full disk refused go to stderr, after one line
            # saying so (before: "--- Logging error ---" and ~70 lines of traceback each, the line itself lost)
            assert "\u256d" not in text and "Logging error" not in text and "Traceback" not in text, text[-3000:]
            assert 1 <= text.count("the log file cannot be written") <= 5, text[-3000:]  # once per full spell
            refused = text.count(REFUSED)  # (when it came to claim: see the test below)
            assert refused <= 20, (refused, text[-3000:])
            last = text.strip().splitlines()[-1] if text.strip() else ""
            if worker.returncode == STOPPED_UNFINISHED:  # its last writes were refused: one line says so
                assert last.startswith("notify worker: stopped with writes the Store refused") and "full" in last

            filler.unlink()  # space is back: a worker finishes the job, after the burst's minute has passed
            # (derived rows the full disk refused are re-created when a worker closes their minute; a worker
            # started now would go idle inside that minute)
            later = datetime.fromtimestamp(time.time() + 90, UTC)
            monkeypatch.setenv("NOTIFY_CLOCK_START", later.isoformat())
            rerun = _start(data, data / "outbox.jsonl", lease_s=2.0, concurrency=4, idle_exit=8, webhook_url=url)
            workers.append(rerun)
            _out, err = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, err.decode(errors="replace")[-3000:]
        finally:
            for proc in workers:  # a failed assertion must not leave a worker running
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            _stop_sink(sink)

        keys = Counter(r["key"] for r in read_receipts(receipts) if r["status"] == 200)
        ids = {i["notification_id"] for i in items}
        store = SqliteStore(data / "store.sqlite")
        try:
            statuses = Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())
            deliveries = {str(r["pk"]) for r in store.table(tables.DELIVERIES).scan()}
            sends = sum(1 for _ in store.table(tables.SENDS).scan())
        finally:
            store.close()
        assert ids <= set(keys)  # every notification reached the receiver
        assert statuses == {"sent": N} and deliveries == ids and sends == N, (statuses, len(deliveries), sends)
        duplicates = sum(c - 1 for c in keys.values())
        assert duplicates <= 100, duplicates  # only sends whose outcome the full disk refused
        print(f"\nfull disk mid-delivery: worker stopped in {stopped_in:.1f} s (exit {worker.returncode}); "
              f"{duplicates} re-sent under the same key; {refused} refused claim passes; the log file refused a line "
              f"{log_refused_in:.1f} s after the disk filled")


def test_a_worker_that_starts_on_a_full_disk_pauses_between_refused_claims_and_logs_to_stderr(
        tmp_path: Path) -> None:
    """Due notifications and no room to claim them: the worker tries again after a pause that doubles up to
    5 s, with one line per refused claim on stderr, where before its loop went straight round (~60 claim
    attempts a second, each a "--- Logging error ---" traceback of ~70 lines: 27,000 lines in 6 s), and a
    SIGTERM ends it in one line, exit 75."""
    data = tmp_path / "data"
    with small_disk(data, 16384):
        first = _start(data, data / "outbox.jsonl", lease_s=2.0, concurrency=2, idle_exit=0.5)
        assert first.wait(timeout=120) == 0  # its keys and folders made while there is room: nothing was due
        store = SqliteStore(data / "store.sqlite")  # held open: its WAL index (-shm) stays for the worker to open
        seed_due(store, n=300, start=datetime.fromtimestamp(int(time.time()) - 2, UTC), campaigns=5)
        filler = fill(data, leave_kib=0)
        worker = _start(data, data / "outbox.jsonl", lease_s=2.0, concurrency=2, idle_exit=60)
        stderr = _Lines(worker)
        try:
            # The 6 s counted from the first refused claim, not from the spawn: on a loaded CI box the worker's
            # start (imports, opening the Store) once took most of a fixed 6 s, and it was stopped unclaimed.
            assert stderr.wait_for(REFUSED, timeout=90), stderr.text()[-3000:]
            time.sleep(6.0)
            assert worker.poll() is None, stderr.text()[-3000:]
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            stderr.close()
            store.close()
        filler.unlink()
    text = stderr.text()
    lines = text.strip().splitlines()
    refused = text.count(REFUSED)
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s of pauses fit in 6 s: at most 7 passes (plus one per claimed batch)
    assert 2 <= refused <= 14, (refused, text[-3000:])
    assert "Logging error" not in text and "Traceback" not in text, text[-3000:]
    assert text.count("the log file cannot be written") == 1, text[-3000:]
    assert len(lines) <= 40, (len(lines), text[-3000:])
    assert worker.returncode == STOPPED_UNFINISHED, text[-3000:]
    assert lines[-1].startswith("notify worker: stopped with writes the Store refused"), lines[-1]
