"""The embedded durable log: the Stream port's default adapter, in one SQLite file.

Why SQLite and not hand-written segment files: the log must survive ``kill -9`` at any instant and be
shared by several processes (the gateway appends while ``notify consume`` reads). SQLite in WAL mode
gives exactly that without code of our own: a batch append is one atomic transaction (a torn tail is
discarded by the WAL's checksums on the next open, never half-visible), writers from any process are
serialised by its file lock, readers never block the writer, and committed group positions live in the
same file, so "records + where each group is" is always consistent. Segment files would need their own
cross-process locking, tail recovery, offset index and checkpoint file; that is the code we avoid.

Layout: one table per topic (``offset INTEGER PRIMARY KEY``, the produce time, key and value; appends go
to the end of the B-tree, the cheap case) and a ``positions`` table (group, topic) -> next offset. The
``topics`` table holds each topic's high-water mark (``next_offset``, the offset the next record gets):
it only ever goes up, so erasing a user's records (:meth:`LocalLog.erase_key`), even the tail, never lets
a later record reuse an offset a group has already committed past. Offsets are therefore increasing but
not dense once an erasure has run (like a compacted Kafka topic): readers go by ``offset >= position``.
Each topic is one partition (partition 0): a total order, which on one machine costs nothing, and one
active consumer per group, which is what the embedded default runs. "One" is enforced, not assumed: a
member holds an exclusive lock on ``<log>.<group hash>.lock`` (``flock``, released by the kernel when the
process dies, even by ``kill -9``), so a second ``notify consume`` of the same group refuses with a
clear message (``notify consume --standby`` waits instead, and takes over when the first one stops or dies).
Two members never both process a record. ``synchronous=NORMAL`` survives a
process crash (the durability this log promises, like Kafka's acks without fsync); pass ``fsync=True``
for ``synchronous=FULL`` if it must also survive power loss.

Retention: a record goes once it is :data:`RETENTION_S` old (a week, Kafka's default) and every group that
has committed on its topic is past it (:meth:`LocalLog.trim`, run hourly by the consuming member), so the
file holds about a week of events, not every event ever captured; nothing a group has still to read goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from notify_core.chores import SlicedChore
from notify_core.clock import SYSTEM_CLOCK, Clock
from notify_core.errors import ConditionFailedError, ValidationError
from notify_core.per_thread import PerThread
from notify_core.sqlite_tx import (
    FileIdentity,
    connect,
    file_identity,
    opened_since_start,
    write_gate,
)
from notify_core.stream.port import (
    Message,
    OnRevoke,
    Record,
    StartAt,
    decode_headers,
    encode_headers,
    is_dead_letter_topic,
    next_positions,
)

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")

RETENTION_S = 7 * 86400.0
"""How long a record is kept once every group reading its topic has committed past it (Kafka's default
``log.retention.hours``): restore + replay from a Store backup up to a week old still finds its records."""

TRIM_EVERY_S = 3600.0
"""How often a consuming member trims the log once the previous trim was through."""

FIRST_TRIM_AFTER_S = 300.0
"""A starting member's first trim waits this long (a restart loop does not trim at every start)."""

TRIM_ROWS_PER_CALL = 50_000
"""Records removed by one trim at most; a backlog is worked off over the next commits."""

_TRIM_CHUNK = 5000  # records deleted per transaction on the write gate


class LocalLog:
    """A Stream in one SQLite file. Thread-safe; any number of processes may open the same file."""

    def __init__(self, path: Path | str, *, fsync: bool = False, poll_interval: float = 0.005,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        """``clock`` stamps records with their produce time, as a broker's clock would."""
        self.clock = clock
        self.path = Path(path)
        opened_since_start(self.path, what="opening the stream log")  # before a wiped directory is made again
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._poll_interval = poll_interval
        self.write_gate = write_gate(self.path)  # writers queue there, not in SQLite's busy handler
        self.write_gate.lease()  # before the file is opened: a restore sees this process, or is waited out
        self._leased = True
        self._tables: dict[str, str] = {}
        self._tables_lock = threading.Lock()
        self.opened: FileIdentity | None = None  # set once the first connection has the file
        self._connections = PerThread(self._connect, close=sqlite3.Connection.close)
        conn = self._conn()
        self.opened = file_identity(self.path)  # every write, and every later connection, checks it still is
        conn.execute(
            "CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE, "
            "next_offset INTEGER NOT NULL DEFAULT 0)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS positions (grp TEXT NOT NULL, topic TEXT NOT NULL, "
            "position INTEGER NOT NULL, PRIMARY KEY (grp, topic)) WITHOUT ROWID"
        )
        self._add_next_offset_column(conn)

    def _add_next_offset_column(self, conn: sqlite3.Connection) -> None:
        """Logs written before the high-water mark existed get the column once, on open: each topic's mark
        starts after its last record and never below a position a group has committed (an erasure under
        the old code may already have removed the tail those positions point past)."""
        if any(col[1] == "next_offset" for col in conn.execute("PRAGMA table_info(topics)")):
            return
        with self.writing(conn, what="adding next_offset to topics"):
            if any(col[1] == "next_offset" for col in conn.execute("PRAGMA table_info(topics)")):
                return
            conn.execute("ALTER TABLE topics ADD COLUMN next_offset INTEGER NOT NULL DEFAULT 0")
            for name, topic_id in conn.execute("SELECT name, id FROM topics").fetchall():
                conn.execute(
                    f"UPDATE topics SET next_offset = MAX(COALESCE((SELECT MAX(offset) FROM log_{int(topic_id)}), -1) "
                    "+ 1, COALESCE((SELECT MAX(position) FROM positions WHERE topic=?), 0)) WHERE id=?",
                    (name, topic_id),
                )

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path, opened=self.opened)  # a thread's first: still the file this log opened
        conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def writing(self, conn: sqlite3.Connection, *, what: str) -> AbstractContextManager[None]:
        """A write transaction of this log (:meth:`WriteGate.transaction`), refused once the path no longer
        names the file this log opened: every write path goes through here, so none can skip that check."""
        return self.write_gate.transaction(conn, what=what, opened=self.opened)

    def _table(self, topic: str, *, create: bool = True) -> str | None:
        table = self._tables.get(topic)
        if table is not None:
            return table
        if not _TOPIC.match(topic):
            raise ValidationError(f"invalid topic name {topic!r}")
        conn = self._conn()
        row = conn.execute("SELECT id FROM topics WHERE name=?", (topic,)).fetchone()
        if row is None:
            if not create:
                return None
            with self.writing(conn, what=f"creating topic {topic}"):
                row = conn.execute("SELECT id FROM topics WHERE name=?", (topic,)).fetchone()
                if row is None:
                    (next_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM topics").fetchone()
                    conn.execute("INSERT INTO topics (name, id) VALUES (?, ?)", (topic, next_id))
                    conn.execute(
                        f"CREATE TABLE log_{next_id} (offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, "
                        "key BLOB, value BLOB NOT NULL, headers BLOB)"
                    )
                    row = (next_id,)
        table = f"log_{int(row[0])}"
        self._add_headers_column(conn, table)
        with self._tables_lock:
            self._tables[topic] = table
        return table

    def _add_headers_column(self, conn: sqlite3.Connection, table: str) -> None:
        """Logs written before record headers existed get the (nullable) column once, on first open."""
        if any(col[1] == "headers" for col in conn.execute(f"PRAGMA table_info({table})")):
            return
        with self.writing(conn, what=f"adding headers to {table}"):
            if not any(col[1] == "headers" for col in conn.execute(f"PRAGMA table_info({table})")):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN headers BLOB")

    @staticmethod
    def _next_offset_sql(table: str) -> str:
        """The offset the topic's next record gets (parameter: the topic's name): its high-water mark, and
        never at or below a record already there (one written by an older version, which did not move the
        mark). Both are index look-ups: the topics row by name, the B-tree's last key."""
        return f"SELECT MAX(next_offset, COALESCE((SELECT MAX(offset) FROM {table}), -1) + 1) FROM topics WHERE name=?"

    # producing ---------------------------------------------------------------------------------
    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.produce_batch([Message(topic, key, value)])

    def produce_batch(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        by_topic: dict[str, list[Message]] = {}
        for message in messages:
            by_topic.setdefault(message.topic, []).append(message)
        tables = {topic: self._table(topic) for topic in by_topic}
        conn = self._conn()
        with self.writing(conn, what="local log append"):
            now_ms = int(self.clock.now() * 1000)
            for topic, batch in by_topic.items():
                table = tables[topic]
                assert table is not None  # _table(create=True) always names one
                (first,) = conn.execute(self._next_offset_sql(table), (topic,)).fetchone()
                conn.executemany(
                    f"INSERT INTO {table} (offset, ts_ms, key, value, headers) VALUES (?, ?, ?, ?, ?)",
                    [(first + i, now_ms, m.key, m.value, encode_headers(m.headers)) for i, m in enumerate(batch)],
                )
                conn.execute("UPDATE topics SET next_offset=? WHERE name=?", (first + len(batch), topic))

    # reading -----------------------------------------------------------------------------------
    def end_offsets(self, topic: str) -> dict[int, int]:
        table = self._table(topic, create=False)
        if table is None:
            return {0: 0}
        row = self._conn().execute(self._next_offset_sql(table), (topic,)).fetchone()
        return {0: 0 if row is None else int(row[0])}

    def committed(self, group: str, topic: str) -> int:
        row = self._conn().execute("SELECT position FROM positions WHERE grp=? AND topic=?", (group, topic)).fetchone()
        return 0 if row is None else int(row[0])

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        start_at: StartAt | None = None,
        on_revoke: OnRevoke | None = None,
    ) -> LocalLogConsumer:
        """The group's one member; ``on_revoke`` is never called (nothing is ever taken from it)."""
        return LocalLogConsumer(self, group=group, topics=topics, start_at=start_at)

    def group_lock_path(self, group: str) -> Path:
        digest = hashlib.blake2b(group.encode(), digest_size=8).hexdigest()
        return self.path.with_name(f"{self.path.name}.{digest}.lock")

    def erase_key(self, key: bytes) -> int:
        """Delete every message with this key from every topic, zeroing the freed pages (right to
        erasure: a user's events are keyed by user id). Offsets of other messages do not move, and the
        topic's high-water mark does not go down: the next record produced gets a new offset, never one a
        group has committed past, even when the erased records were the tail. A group whose every record
        still to read was erased is moved to the mark, so its lag is 0 again rather than counting records
        that no longer exist."""
        conn = self._conn()
        removed = 0
        conn.execute("PRAGMA secure_delete=ON")
        with self.writing(conn, what="erasing a key"):
            for name, topic_id in conn.execute("SELECT name, id FROM topics").fetchall():
                table = f"log_{int(topic_id)}"
                # pin the mark first (records from an older version may lie past it), then delete
                conn.execute(
                    f"UPDATE topics SET next_offset = MAX(next_offset, COALESCE((SELECT MAX(offset) FROM {table}), -1) "
                    "+ 1) WHERE id=?",
                    (topic_id,),
                )
                deleted = conn.execute(f"DELETE FROM {table} WHERE key=?", (key,)).rowcount
                if deleted:
                    conn.execute(
                        "UPDATE positions SET position = (SELECT next_offset FROM topics WHERE id=?) "
                        "WHERE topic=? AND position < (SELECT next_offset FROM topics WHERE id=?) "
                        f"AND NOT EXISTS (SELECT 1 FROM {table} WHERE offset >= positions.position)",
                        (topic_id, name, topic_id),
                    )
                removed += deleted
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def trim(self, *, older_than_ms: int, limit: int | None = None) -> int:
        """Delete the records produced before ``older_than_ms`` that every group reading their topic has
        committed past: the log's retention, as a broker's (at most ``limit`` records, None: all; returns
        how many went). A topic no group has committed on keeps everything, and only a prefix of each topic
        goes (up to its first record at or after the cutoff), so no record a group has still to read is
        ever removed. A dead-letter topic (:func:`~notify_core.stream.port.is_dead_letter_topic`) is the
        exception: no group reads one, so it goes by time alone, as on a broker (kept whole, a poisoned
        client's refused events grew the file for as long as the box ran). Offsets and the high-water mark
        do not move; freed pages are reused by later appends.
        Consuming members call it on their own (:meth:`LocalLogConsumer.commit`, hourly)."""
        conn = self._conn()
        removed = 0
        for name, topic_id in conn.execute("SELECT name, id FROM topics ORDER BY id").fetchall():
            table = f"log_{int(topic_id)}"
            (read,) = conn.execute("SELECT MIN(position) FROM positions WHERE topic=?", (name,)).fetchone()
            if read is None and is_dead_letter_topic(name):  # by time alone (a group that commits is honoured)
                (read,) = conn.execute("SELECT next_offset FROM topics WHERE id=?", (topic_id,)).fetchone()
            if read is None:
                continue
            row = conn.execute(f"SELECT offset FROM {table} WHERE ts_ms >= ? ORDER BY offset LIMIT 1",
                               (older_than_ms,)).fetchone()
            upto = int(read) if row is None else min(int(read), int(row[0]))
            while limit is None or removed < limit:
                chunk = _TRIM_CHUNK if limit is None else min(_TRIM_CHUNK, limit - removed)
                with self.writing(conn, what=f"trimming topic {name}"):
                    deleted = conn.execute(
                        f"DELETE FROM {table} WHERE offset IN (SELECT offset FROM {table} WHERE offset < ? "
                        "ORDER BY offset LIMIT ?)", (upto, chunk)).rowcount
                removed += deleted
                if deleted < chunk:
                    break
        return removed

    def close(self) -> None:
        self._connections.close_all()
        if self._leased:  # closed: a restore may go ahead (a write after this still checks the file's identity)
            self._leased = False
            self.write_gate.release()


class GroupBusyError(ConditionFailedError):
    """Another process already consumes this group on this log."""


def _lock_group(path: Path, *, group: str) -> int:
    """Take the group's exclusive lock; the descriptor holds it until closed (or the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = b""
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 64, 0)
        os.close(fd)
        pid = holder.decode(errors="replace").strip() or "?"
        raise GroupBusyError(
            f"consumer group {group!r} is already being consumed from this log by process {pid}; the "
            "embedded log serves one member per group (stop that one, or start this one with --standby "
            "to take over when it stops; use Kafka for a group of several members)"
        ) from None
    with contextlib.suppress(OSError):  # the holder's pid is for the message only: a full disk must not stop it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class LocalLogConsumer:
    """The group's one member over the local log (an exclusive lock; see the module doc).

    Its position per topic starts where ``start_at`` says (the application's record, clamped to the end
    of the log: a log restored from an older backup than the Store's has fewer records), else at the
    group's committed position when there is no ``start_at``, else at 0.
    """

    def __init__(
        self,
        log: LocalLog,
        *,
        group: str,
        topics: Sequence[str],
        start_at: StartAt | None = None,
    ) -> None:
        if not topics:
            raise ValidationError("a consumer needs at least one topic")
        self._log = log
        self.group = group
        self.topics = list(dict.fromkeys(topics))
        self._tables = {topic: log._table(topic) for topic in self.topics}
        self._lock_fd: int | None = _lock_group(log.group_lock_path(group), group=group)
        try:
            self._positions = self._starting_positions(start_at)
        except BaseException:  # all or nothing: a member that failed to start holds no lock (a retry takes it)
            self.close()
            raise
        self._turn = 0
        # the log's retention: records every group has read, a week old (LocalLog.trim), trimmed hourly
        self._trim = SlicedChore(
            lambda limit: log.trim(older_than_ms=int((log.clock.now() - RETENTION_S) * 1000), limit=limit),
            what="stream log trim", now=log.clock.now(), every_s=TRIM_EVERY_S, first_after_s=FIRST_TRIM_AFTER_S,
            per_call=TRIM_ROWS_PER_CALL)

    def _starting_positions(self, start_at: StartAt | None) -> dict[str, int]:
        log, group = self._log, self.group
        if start_at is None:
            return {topic: log.committed(group, topic) for topic in self.topics}
        starts = start_at([(topic, 0) for topic in self.topics])
        positions = {topic: min(starts.get((topic, 0), 0), log.end_offsets(topic)[0]) for topic in self.topics}
        # The application's record was ahead of the log's commit (a kill between the two): the log catches up,
        # so what it reports as lag is what this member will really read.
        ahead = {(topic, 0): pos for topic, pos in positions.items() if pos > log.committed(group, topic)}
        self._commit_positions(ahead)
        return positions

    def poll_batch(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + max(timeout, 0.0)
        conn = self._log._conn()
        while True:
            records: list[Record] = []
            # Rotate the topic read first so a busy topic cannot starve the other.
            order = self.topics[self._turn :] + self.topics[: self._turn]
            self._turn = (self._turn + 1) % len(self.topics)
            for topic in order:
                room = max_records - len(records)
                if room <= 0:
                    break
                rows = conn.execute(
                    f"SELECT offset, ts_ms, key, value, headers FROM {self._tables[topic]} WHERE offset >= ? "
                    "ORDER BY offset LIMIT ?",
                    (self._positions[topic], room),
                ).fetchall()
                if rows:
                    headers: dict[bytes | None, tuple[tuple[str, bytes], ...]] = {None: ()}
                    append, new = records.append, tuple.__new__  # a Record from its fields in order: no
                    for off, ts, key, value, hdr in rows:  # keyword __new__ per record (see kafka._records)
                        decoded = headers.get(hdr)  # a batch's records share a few header blobs
                        if decoded is None:
                            decoded = headers[hdr] = decode_headers(hdr)
                        append(new(Record, (topic, 0, off, key, value, ts, decoded)))
                    self._positions[topic] = rows[-1][0] + 1
            if records or time.monotonic() >= deadline:
                return records
            time.sleep(self._log._poll_interval)

    def commit(self, records: Sequence[Record]) -> None:
        self._commit_positions(next_positions(records))
        self._trim.maybe_run(self._log.clock.now())  # the commit stands whatever the trim does

    def _commit_positions(self, positions: dict[tuple[str, int], int]) -> None:
        if not positions:
            return
        conn = self._log._conn()
        with self._log.writing(conn, what="local log commit"):
            conn.executemany(
                "INSERT INTO positions (grp, topic, position) VALUES (?, ?, ?) "
                "ON CONFLICT(grp, topic) DO UPDATE SET position=excluded.position",
                [(self.group, topic, pos) for (topic, _partition), pos in positions.items()],
            )

    def lag(self) -> int:
        return sum(
            max(self._log.end_offsets(topic)[0] - self._log.committed(self.group, topic), 0) for topic in self.topics
        )

    def seek_to_beginning(self) -> None:
        self._positions = dict.fromkeys(self.topics, 0)

    def settle(self, *, timeout: float | None = None) -> int:
        """Nothing to wait for: one member at a time, and every commit is written before ``commit`` returns."""
        return 0

    def close(self) -> None:
        """Release the group's lock (positions live in the log file, connections belong to the log)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
