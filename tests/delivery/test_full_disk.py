"""The disk under `notify worker` fills up mid-delivery (a small tmpfs as its data directory,
tests/small_disk.py), for real: the worker keeps running (claims fail and stay due, nothing crashes), a
SIGTERM then ends it within seconds with a one-line reason (exit 75 if its last writes were refused), and
once space is back a worker finishes the job: every notification reaches the receiver, every schedule
item ends sent with its deliveries and sends rows, and the only repeats are sends whose outcome the full
disk refused (re-sent under the same idempotency key)."""

from __future__ import annotations

import signal
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
            deadline = time.monotonic() + 120
            while not receipts.exists() or receipts.stat().st_size < RECEIPT_BYTES * N // 3:
                assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[1][-2000:]
                time.sleep(0.01)
            filler = fill(data, leave_kib=0)  # a third delivered: the disk is full from here
            time.sleep(3.0)
            if worker.poll() is not None:
                pytest.fail(f"the worker died on the full disk: {worker.communicate()[1][-3000:]!r}")
            worker.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            _out, err = worker.communicate(timeout=30)
            stopped_in = time.monotonic() - asked
            text = err.decode(errors="replace")
            assert worker.returncode in (0, STOPPED_UNFINISHED), text[-3000:]
            assert stopped_in < 10.0
            # No crash: no rich traceback panel. (A log line the full disk refused is printed to stderr by
            # Python's logging as "--- Logging error ---" with its traceback; that is not a crash.)
            assert "\u256d" not in text
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
              f"{duplicates} re-sent under the same key")
