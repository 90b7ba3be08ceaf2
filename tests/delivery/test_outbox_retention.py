"""The embedded default's outbox keeps 30 days of sends, not every send for as long as Notify runs.

Before session 40 ``outbox/notifications.jsonl`` took a line per send (a sealed copy of every message) for
good. The first send of a new UTC day, by the channel's injected clock, now moves the earlier days' lines
aside (``notifications.<day>.jsonl``) and removes those past the retention; ``read_outbox`` reads them all,
a restarted worker still recognises what its killed predecessor wrote just before midnight, and an erasure
finds the user in the days moved aside, wherever the outbox is configured."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from notify_core.clock import ManualClock
from notify_core.delivery.channels import ALREADY_IN_OUTBOX, Message, OutboxChannel, Outcome, read_outbox
from notify_core.erasure import erase_user, erasure_paths
from notify_core.line_file import rotated_files
from notify_core.observability import LOG_RETENTION_DAYS
from notify_core.settings import load_settings
from notify_core.store.sqlite import SqliteStore

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0


def _message(n: int, user: str = "u1") -> Message:
    return Message(notification_id=f"n{n}", user_id=user, campaign_id="c1", title="t", body="b", link="l",
                   open_pixel="o", send_at="", attempt=1, unsubscribe="x")


def test_forty_days_of_sends_keep_the_last_thirty_one_days_whole(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "notifications.jsonl"
    clock = ManualClock(START)
    channel = OutboxChannel(outbox, clock=clock)
    sent: dict[str, float] = {}
    for day in range(40):
        for hour in (0, 5, 14):
            clock.set(START + day * DAY + hour * 3600)
            key = f"k{day}-{hour}"
            assert channel.send(_message(day * 10 + hour), idempotency_key=key).outcome == Outcome.DELIVERED
            sent[key] = clock.now()
    channel.close()
    moved = rotated_files(outbox)
    assert len(moved) == LOG_RETENTION_DAYS  # the 30 days before today, today in the current file
    first_kept = START + (39 - LOG_RETENTION_DAYS) * DAY - 9 * 3600  # midnight 30 days before the last day
    expected = sorted(k for k, at in sent.items() if at >= first_kept)
    rows = read_outbox(outbox)
    assert sorted(r["idempotency_key"] for r in rows) == expected  # every send of a kept day, once
    assert [r["sent_at"] for r in rows] == sorted(r["sent_at"] for r in rows)  # oldest day first
    for part in moved:  # each file holds its own day's lines only
        lines = map(json.loads, part.read_text().splitlines())
        days = {datetime.fromtimestamp(r["sent_at"], UTC).date().isoformat() for r in lines}
        assert days == {part.name.split(".")[1]}


def test_two_workers_across_midnight_lose_no_line(tmp_path: Path) -> None:
    outbox = tmp_path / "notifications.jsonl"
    clock = ManualClock(START + 14 * 3600)  # 23:00
    channels = [OutboxChannel(outbox, clock=clock) for _ in range(2)]
    barrier = threading.Barrier(2)

    def send_all(i: int) -> None:
        barrier.wait()
        for n in range(300):
            if i == 0 and n == 150:
                clock.advance(2 * 3600)  # midnight passes while both are sending
            channels[i].send(_message(i * 1000 + n), idempotency_key=f"w{i}-{n}")

    threads = [threading.Thread(target=send_all, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in channels:
        c.close()
    keys = [r["idempotency_key"] for r in read_outbox(outbox)]
    assert sorted(keys) == sorted(f"w{i}-{n}" for i in range(2) for n in range(300))
    # the day before moved aside: once, or twice when the other worker appended a line it stamped before
    # midnight to the new file before any line of the new day (a file is moved on its latest day's lines)
    moved = rotated_files(outbox)
    assert 1 <= len(moved) <= 2 and all(".2026-11-01." in p.name for p in moved), moved
    assert any(r["sent_at"] >= START + 15 * 3600 for r in read_outbox_lines(outbox))  # the new day's file


def read_outbox_lines(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_worker_restarted_after_midnight_recognises_its_predecessors_last_sends(tmp_path: Path) -> None:
    outbox = tmp_path / "notifications.jsonl"
    clock = ManualClock(START + 14 * 3600 + 59 * 60 + 50)  # 23:59:50
    killed = OutboxChannel(outbox, clock=clock)
    killed.send(_message(1), idempotency_key="before-midnight")
    clock.advance(20)  # 00:00:10: its next send rotates the file, then it dies before recording the first
    killed.send(_message(2), idempotency_key="after-midnight")
    killed.close()
    assert len(rotated_files(outbox)) == 1
    successor = OutboxChannel(outbox, clock=clock)
    for key in ("before-midnight", "after-midnight"):
        result = successor.send(_message(3), idempotency_key=key)
        assert (result.outcome, result.detail) == (Outcome.DELIVERED, ALREADY_IN_OUTBOX), key
    successor.close()
    assert sorted(r["idempotency_key"] for r in read_outbox(outbox)) == ["after-midnight", "before-midnight"]


def test_an_erasure_finds_the_user_in_the_days_moved_aside_of_an_outbox_outside_the_data_directory(
        tmp_path: Path) -> None:
    outbox = tmp_path / "spool" / "notifications.jsonl"
    settings = load_settings(data_dir=tmp_path / "data", outbox_path=outbox)
    clock = ManualClock(START)
    channel = OutboxChannel(outbox, clock=clock)
    for day in range(3):
        clock.set(START + day * DAY)
        channel.send(_message(day, user="victim"), idempotency_key=f"v{day}")
        channel.send(_message(10 + day, user="other"), idempotency_key=f"o{day}")
    channel.close()
    assert len(rotated_files(outbox)) == 2
    assert set(rotated_files(outbox)) <= set(erasure_paths(settings))
    store = SqliteStore(tmp_path / "data" / "store.sqlite", clock=clock)
    try:
        erase_user("victim", store=store, file_roots=erasure_paths(settings), clock=clock)
    finally:
        store.close()
    rows = read_outbox(outbox)
    assert sorted(r["idempotency_key"] for r in rows) == ["o0", "o1", "o2"]
    assert not any(b'"victim"' in p.read_bytes() for p in [*rotated_files(outbox), outbox])
