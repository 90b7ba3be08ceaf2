"""The embedded log's retention: a week of records once every group has read them, never an unread one.

Before session 40 the log kept every record ever captured: the file (and its Litestream replica) grew with
every event for as long as the deployment ran. The test's own clock moves 30 days in seconds.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from notify_core.clock import ManualClock
from notify_core.stream.local_log import RETENTION_S, LocalLog, LocalLogConsumer
from notify_core.stream.port import Message

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DAYS = 30
PER_DAY = 100
PURCHASES, CLICKS = "purchase_history", "notify_clickstream"


def _kept(path: Path, topic: str) -> tuple[int, int | None]:
    """(records physically in the topic's table, its lowest offset)."""
    conn = sqlite3.connect(path)
    try:
        (topic_id,) = conn.execute("SELECT id FROM topics WHERE name=?", (topic,)).fetchone()
        count, first = conn.execute(f"SELECT count(*), MIN(offset) FROM log_{int(topic_id)}").fetchone()
        return int(count), first
    finally:
        conn.close()


def _drain(consumer: LocalLogConsumer) -> int:
    read = 0
    while records := consumer.poll_batch(max_records=1000, timeout=0):
        consumer.commit(records)
        read += len(records)
    consumer.commit([])  # a commit with nothing new (the consumer's idle loop) also trims when due
    return read


def test_records_every_group_has_read_go_after_a_week_and_unread_ones_stay(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    path = tmp_path / "log.sqlite"
    log = LocalLog(path, clock=clock)
    main = log.consumer(group="consumer", topics=[PURCHASES, CLICKS])
    slow = log.consumer(group="reporting", topics=[CLICKS])  # a second group that stops reading on day 3
    for day in range(DAYS):
        log.produce_batch([Message(PURCHASES, f"u{i}".encode(), b"p") for i in range(PER_DAY)]
                          + [Message(CLICKS, f"u{i}".encode(), b"c") for i in range(PER_DAY)])
        assert _drain(main) == 2 * PER_DAY
        if day < 3:
            assert _drain(slow) == PER_DAY
        clock.advance(86400)
    _drain(main)

    # purchases: every group read them, so a week is kept (days 23-29), in offset order from the cutoff
    week = int(RETENTION_S // 86400)
    assert _kept(path, PURCHASES) == (week * PER_DAY, (DAYS - week) * PER_DAY)
    # clicks: "reporting" stopped at offset 300; nothing from there on is gone, however old
    assert log.committed("reporting", CLICKS) == 3 * PER_DAY
    assert _kept(path, CLICKS) == ((DAYS - 3) * PER_DAY, 3 * PER_DAY)
    late = slow.poll_batch(max_records=10_000, timeout=0)
    assert [r.offset for r in late] == list(range(3 * PER_DAY, DAYS * PER_DAY))  # every unread record is read
    slow.commit(late)
    assert _kept(path, CLICKS) == (week * PER_DAY, (DAYS - week) * PER_DAY)  # and then trimmed like the other

    # offsets never move: the next record numbers after the last, and the group reads exactly it
    assert log.end_offsets(PURCHASES) == {0: DAYS * PER_DAY}
    log.produce(PURCHASES, b"u1", b"next")
    assert [(r.offset, r.value) for r in main.poll_batch(timeout=0)] == [(DAYS * PER_DAY, b"next")]
    main.close()
    slow.close()
    log.close()


def test_a_topic_no_group_has_committed_on_keeps_everything(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    log = LocalLog(tmp_path / "log.sqlite", clock=clock)
    log.produce_batch([Message(CLICKS, None, b"c")] * 50)
    clock.advance(30 * 86400)
    assert log.trim(older_than_ms=int(clock.now() * 1000)) == 0
    assert _kept(tmp_path / "log.sqlite", CLICKS) == (50, 0)
    log.close()


def test_trim_is_bounded_per_call_and_goes_on_from_where_it_stopped(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    log = LocalLog(tmp_path / "log.sqlite", clock=clock)
    log.produce_batch([Message(PURCHASES, None, b"p")] * 12_000)
    consumer = log.consumer(group="consumer", topics=[PURCHASES])
    assert _drain(consumer) == 12_000
    cutoff = int((clock.now() + 1) * 1000)
    assert [log.trim(older_than_ms=cutoff, limit=5000) for _ in range(4)] == [5000, 5000, 2000, 0]
    consumer.close()
    log.close()


def test_a_dead_letter_topic_is_kept_by_time_alone(tmp_path: Path) -> None:
    """No group reads a dead-letter topic (people do, `notify events refused`), so the rule above kept it whole
    for good: a client sending poison grew the file for as long as the box ran. It goes by time, as on a
    broker; its source topic, which no group has read either, still keeps everything."""
    clock = ManualClock(T0)
    path = tmp_path / "log.sqlite"
    log = LocalLog(path, clock=clock)
    dlq = f"{CLICKS}.dlq"
    for _day in range(DAYS):
        log.produce_batch([Message(dlq, None, b"refused")] * PER_DAY + [Message(CLICKS, None, b"c")] * PER_DAY)
        clock.advance(86400)
    week = int(RETENTION_S // 86400)
    assert log.trim(older_than_ms=int((clock.now() - RETENTION_S) * 1000)) == (DAYS - week) * PER_DAY
    assert _kept(path, dlq) == (week * PER_DAY, (DAYS - week) * PER_DAY)
    assert _kept(path, CLICKS) == (DAYS * PER_DAY, 0)
    log.close()
