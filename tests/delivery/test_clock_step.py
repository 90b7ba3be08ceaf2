"""The wall clock of a running `notify worker` stepped forward, then back (libfaketime reading its offset from a
file the test rewrites, as an NTP step or a restored VM moves a box's clock), for real: every notification is
sent once, none is left pending, and one a re-plan puts in a minute the worker closed while its clock was ahead
is still sent. Before, a forward step of an hour left 430 of 600 notifications ``pending`` for good (the
minutes the step jumped over were never looked at), and the step back left a new one in a closed minute unsent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notify_core.delivery.channels import read_outbox
from notify_core.delivery.synthetic import seed_due
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.crash_harness import REPO

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

pytestmark = [
    pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs libfaketime (scripts/setup.sh installs it)"),
    pytest.mark.skipif("FAKETIME" in os.environ, reason="moves the worker's clock itself: not under test-timeshift"),
]


def _offset(file: Path, seconds: int) -> None:
    """The worker's clock: real time plus ``seconds`` from now on, within a second (written whole: a read never
    sees half a file)."""
    part = file.with_suffix(".part")
    part.write_text(f"{seconds:+d}\n")
    part.replace(file)


def _sent(outbox: Path) -> Counter[str]:
    return Counter(str(r["notification_id"]) for r in read_outbox(outbox)) if outbox.exists() else Counter()


def _wait(outbox: Path, n: int, worker: subprocess.Popen[bytes], *, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while len(_sent(outbox)) < n:
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"{len(_sent(outbox))} of {n} sent; worker: {worker.communicate()[1][-3000:]!r}")
        time.sleep(0.2)


def test_a_worker_whose_clock_steps_forward_then_back_sends_everything_once(tmp_path: Path) -> None:
    data, outbox, offset = tmp_path / "data", tmp_path / "data" / "outbox.jsonl", tmp_path / "offset"
    store = SqliteStore(data / "store.sqlite")
    start = datetime.fromtimestamp(int(time.time()) + 2, UTC)
    items = seed_due(store, n=300, start=start, spread_s=240)  # over 4 minutes the worker has not reached
    _offset(offset, 0)
    # The offset file is read at most once a second. FAKETIME_NO_CACHE=1 (read at every call) opens and reads
    # it at every clock read, every stat and every wait for the GIL: on a box whose open+read+close took 10 us
    # the worker sent ~5 a second at 120 % CPU, and this test failed at 213-253 of 300 sent within the minute
    # (with a 1 s cache: all 300 within 4 s of the step).
    env = {**os.environ, "NOTIFY_DELIVERY_CHANNEL": "outbox", "LD_PRELOAD": str(LIBFAKETIME),
           "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_CACHE_DURATION": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           # libfaketime answers time.sleep's clock_nanosleep with EINVAL: the suite's own workaround
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests" / "timeshift"),
                                                       os.environ.get("PYTHONPATH")]))}
    worker = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.delivery_commands", "--data-dir", str(data), "--outbox", str(outbox),
         "--lease-s", "2", "--concurrency", "4", "--idle-exit", "600"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _wait(outbox, 10, worker, within_s=60)
        # half an hour forward: the rest is due at once, up to 30 minutes late (a step of an hour would make
        # what was due just before it more than NOTIFY_DELIVERY_MAX_LATE_S late: suppressed, as it should be)
        _offset(offset, 1800)
        _wait(outbox, 300, worker, within_s=60)
        again = datetime.fromtimestamp(int(time.time()) + 3, UTC)
        deadline = time.monotonic() + 30  # the worker closes that minute, by its clock half an hour ago
        while not store.table(tables.DELIVERY_CURSOR).get("minute", tables.due_minute(again)):
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.2)
        _offset(offset, 0)  # back: a re-plan puts one in a minute that clock closed
        replanned = seed_due(store, n=1, start=again, user_prefix="re")
        _wait(outbox, 301, worker, within_s=30)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode(errors="replace")[-3000:]

    sent = _sent(outbox)
    assert set(sent) == {i["notification_id"] for i in [*items, *replanned]} and max(sent.values()) == 1
    schedules = list(store.table(tables.SCHEDULES).scan())
    assert Counter(str(i["status"]) for i in schedules) == {"sent": 301}
    assert max(int(i["attempt"]) for i in schedules) == 1  # no claim was taken twice, across either step
    # The step back is logged, by its size. libfaketime may hand out the old offset once more right after the
    # file is replaced (seen in CI: back by 1,799 s, the log line's own stamp +1800 again, then back again a
    # second later), so a process can see the step twice; a box's clock does not flicker so.
    steps = [json.loads(line)["by_s"] for line in (data / "logs" / "delivery.jsonl").read_text().splitlines()
             if "the wall clock went back" in line]
    assert 1 <= len(steps) <= 2 and all(1790 <= step <= 1801 for step in steps), steps
    store.close()
