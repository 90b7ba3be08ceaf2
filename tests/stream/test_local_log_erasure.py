"""Erasure on the embedded log never lets a later record reuse an offset (the high-water mark).

``LocalLog.erase_key`` (right to erasure) deletes a user's records. The log used to number a new record
MAX(offset) + 1, so erasing the tail made the next record reuse an offset at or below a group's committed
position: never read, and not counted by ``lag()``. Each topic now keeps a mark that never goes down,
also in log files written before it existed (migrated on open) and across reopening the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from notify_core.stream.local_log import LocalLog, LocalLogConsumer
from notify_core.stream.port import Message

TOPIC = "clickstream"


def produce(log: LocalLog, *users: str) -> None:
    log.produce_batch([Message(TOPIC, user.encode(), f"event of {user}".encode()) for user in users])


def read(consumer: LocalLogConsumer) -> list[tuple[int, bytes | None]]:
    return [(r.offset, r.key) for r in consumer.poll_batch(max_records=100, timeout=0)]


def test_a_record_produced_after_erasing_the_tail_is_read_and_counted(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log.sqlite")
    consumer = log.consumer(group="g", topics=[TOPIC])
    try:
        produce(log, "u1", "u2")
        records = consumer.poll_batch(max_records=100, timeout=0)
        assert [(r.offset, r.key) for r in records] == [(0, b"u1"), (1, b"u2")]
        consumer.commit(records)
        assert log.committed("g", TOPIC) == 2 and consumer.lag() == 0

        assert log.erase_key(b"u2") == 1  # the tail, already consumed and committed past
        assert log.end_offsets(TOPIC) == {0: 2}  # the mark does not go down
        produce(log, "u3")  # acknowledged: must be read
        assert log.end_offsets(TOPIC) == {0: 3}
        assert consumer.lag() == 1
        records = consumer.poll_batch(max_records=100, timeout=0)
        assert [(r.offset, r.key) for r in records] == [(2, b"u3")]
        consumer.commit(records)
        assert consumer.lag() == 0

        # every record still to read is erased: nothing is left to wait for, and the next one is read
        produce(log, "u4")
        assert consumer.lag() == 1
        assert log.erase_key(b"u4") == 1
        assert consumer.lag() == 0 and log.end_offsets(TOPIC) == {0: 4}
        produce(log, "u5")
        assert consumer.lag() == 1
        assert read(consumer) == [(4, b"u5")]
    finally:
        consumer.close()
        log.close()


def _old_log(path: Path) -> None:
    """A log file as the code before the mark wrote it (and before record headers): two topics, one whose
    tail was already erased under the old code (its group's position points past the last record)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE topics (name TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE)")
    conn.execute(
        "CREATE TABLE positions (grp TEXT NOT NULL, topic TEXT NOT NULL, "
        "position INTEGER NOT NULL, PRIMARY KEY (grp, topic)) WITHOUT ROWID"
    )
    for topic_id, name, offsets, position in ((1, TOPIC, (0, 1, 2), 5), (2, "purchases", (0, 1), None)):
        conn.execute("INSERT INTO topics (name, id) VALUES (?, ?)", (name, topic_id))
        conn.execute(
            f"CREATE TABLE log_{topic_id} (offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, key BLOB, "
            "value BLOB NOT NULL)"
        )
        conn.executemany(
            f"INSERT INTO log_{topic_id} (offset, ts_ms, key, value) VALUES (?, 0, ?, ?)",
            [(off, f"old{off}".encode(), b"v") for off in offsets],
        )
        if position is not None:
            conn.execute("INSERT INTO positions (grp, topic, position) VALUES ('g', ?, ?)", (name, position))
    conn.commit()
    conn.close()


def test_a_log_from_the_old_schema_migrates_and_numbers_after_the_committed_position(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    _old_log(path)
    for _ in range(2):  # the migration runs once; opening again changes nothing
        log = LocalLog(path)
        assert log.end_offsets(TOPIC) == {0: 5}  # never below what group g committed
        assert log.end_offsets("purchases") == {0: 2}  # MAX(offset) + 1 where nothing was committed past
        log.close()
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT name, next_offset FROM topics").fetchall()) == {TOPIC: 5, "purchases": 2}
    conn.close()

    log = LocalLog(path)
    consumer = log.consumer(group="g", topics=[TOPIC])
    try:
        assert consumer.lag() == 0
        produce(log, "u9")
        log.produce_batch([Message("purchases", b"u9", b"p")])
        assert consumer.lag() == 1
        assert read(consumer) == [(5, b"u9")]
        assert log.end_offsets(TOPIC) == {0: 6} and log.end_offsets("purchases") == {0: 3}
    finally:
        consumer.close()
        log.close()


def test_reopening_the_log_after_an_erasure_keeps_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    log = LocalLog(path)
    produce(log, "u1", "u2", "u3")
    assert log.erase_key(b"u3") == 1 and log.erase_key(b"u2") == 1  # no group has committed anything
    log.close()

    log = LocalLog(path)  # the mark comes from the file, not from its records or positions
    consumer = log.consumer(group="fresh", topics=[TOPIC])
    try:
        assert log.end_offsets(TOPIC) == {0: 3}
        produce(log, "u4")
        assert read(consumer) == [(0, b"u1"), (3, b"u4")]
        assert log.end_offsets(TOPIC) == {0: 4}
    finally:
        consumer.close()
        log.close()
