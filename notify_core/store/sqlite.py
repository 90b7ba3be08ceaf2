"""SQLite adapter of the Store port: the embedded default.

One SQLite file in WAL mode; one table per Notify table with a unique index on ``(pk, sk)``, the item
kept as one JSON document, and the TTL copied into its own column so expiry is a cheap filter.

Why a rowid table plus an index, not a ``WITHOUT ROWID`` table clustered on the key: Notify's busiest
writes arrive in random key order (a click lands in its user's partition, anywhere in the key space).
Clustered on the key, every row then dirties a random page of full rows, and past a few million rows
those page writes cap ingest (~49k rows/s at 3M rows here). Rows appended in rowid order fill pages
sequentially and only the small index entries land at random: the stream consumer went from ~60k to
~94k events/s over 3M events (bench/bench_stream.py: 50k events/s sustained, p99 0.53 s). A key lookup
costs one more B-tree descent, a few microseconds. Files created with the clustered layout keep it and
keep working: every statement names ``(pk, sk)``, which both layouts make unique.
Conditional writes run inside ``BEGIN IMMEDIATE`` so the check and the write are atomic across threads
and processes (the delivery worker and the consumer rely on that to claim work exactly once).
"""

from __future__ import annotations

import functools
import operator
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from notify_core.clock import SYSTEM_CLOCK, Clock
from notify_core.errors import BackendError, ConditionFailedError, ValidationError
from notify_core.per_thread import PerThread
from notify_core.sqlite_tx import connect, file_identity, opened_since_start, write_gate
from notify_core.store.codec import decode_columns, decode_item, encode_item

if TYPE_CHECKING:
    import polars as pl

from notify_core.store.port import (
    TTL_ATTRIBUTE,
    Columns,
    Condition,
    Item,
    Key,
    KeyRange,
    Update,
    check_attributes,
    check_frame,
    check_key,
    check_pk,
    check_query,
    last_of_each_key,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SWEEP_CHUNK = 2000  # expired rows deleted per transaction by :meth:`SqliteStore.sweep_expired`
_COLUMNS = ("pk", "sk", "ttl", "body")  # every table :meth:`SqliteStore.table` creates, in this order
_BATCH = 500  # rows per transaction / per IN (...) lookup
_KEY_ORDER = operator.itemgetter(0, 1)  # (pk, sk) of a row tuple
_JSON_CHUNK = 20_000  # rows per json_each statement of a batch_put (all in the batch's one transaction)
_SMALL_UPDATE_BATCH = 4  # update_many of at most this many: statement by statement (see _update_many_small)
_FRAME_SLICE = 50_000  # rows per executemany of a batch_put_frame (all in its one transaction)
ROWS_PER_INSERT = 100  # rows per multi-row INSERT of a batch_put_frame (4 parameters each: 400 < SQLite's 999)
BULK_SPILL_BYTES = 1 << 30  # a bulk writer's transaction is held in memory up to this (tune_for_bulk_writes)


def _encode(item: Item) -> str:
    """The item as JSON; values no backend can store (NaN, sets, datetimes...) are the caller's error."""
    try:
        return encode_item(item)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"cannot store item {item.get('pk')!r}/{item.get('sk')!r}: {exc}") from exc


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: there is none).

    SQLite compares TEXT as UTF-8 bytes, i.e. in code-point order, like DynamoDB's begins_with; bumping the
    last code point that can be bumped gives an exact half-open range ``[prefix, end)`` that still uses the
    primary key index. (A fixed ``prefix + U+10FFFF`` bound would miss keys continuing with U+10FFFF.)
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            bumped = last + 1
            if 0xD800 <= bumped <= 0xDFFF:  # surrogates cannot be stored; skip to the next scalar value
                bumped = 0xE000
            return "".join(chars) + chr(bumped)
    return None


def _range_sql(key_range: KeyRange | None, column: str) -> tuple[str, list[Any]]:
    """The ``AND ...`` conditions of a key range on the sort-key ``column``, and their parameters."""
    sql = ""
    params: list[Any] = []
    if key_range is not None:
        if key_range.prefix is not None:
            # Half-open range [prefix, successor): the same ordering DynamoDB's begins_with sees.
            sql += f" AND {column} >= ?"
            params.append(key_range.prefix)
            end = _prefix_end(key_range.prefix)
            if end is not None:
                sql += f" AND {column} < ?"
                params.append(end)
        if key_range.start is not None:
            sql += f" AND {column} >= ?"
            params.append(key_range.start)
        if key_range.end is not None:
            sql += f" AND {column} <= ?"
            params.append(key_range.end)
    return sql, params


def _ttl_of(item: Mapping[str, Any]) -> float | None:
    ttl = item.get(TTL_ATTRIBUTE)
    return None if ttl is None else float(ttl)


class EncodedRows(NamedTuple):
    """A :meth:`SqliteTable.batch_put`'s rows, checked, in key order and encoded as the JSON arrays its
    statement reads: plain bytes, so a decoding process can build them and hand them over for the cost
    of a copy (pickling a dict per row would cost what building it did)."""

    payloads: tuple[bytes, ...]
    size: int  # rows


def encode_rows(items: Iterable[Item], *, table: str) -> EncodedRows:
    """The one encoding of batch_put rows: keys checked, ``(pk, sk, ttl, body)`` per item in key order
    (key order touches each B-tree page once), ``_JSON_CHUNK`` rows per JSON array (a 1M-row batch
    would pass SQLite's 1 GB limit on one value). Raises ``ValidationError`` for an item no backend can
    store. Pure: no connection, no I/O."""
    rows = []
    for item in items:
        check_key(item.get("pk"), item.get("sk"))
        rows.append((item["pk"], item["sk"], _ttl_of(item), _encode(item)))
    rows.sort(key=_KEY_ORDER)
    try:
        payloads = tuple(orjson.dumps(rows[i : i + _JSON_CHUNK]) for i in range(0, len(rows), _JSON_CHUNK))
    except TypeError as exc:  # e.g. a key with a lone surrogate: not storable anywhere
        raise ValidationError(f"cannot store a batch for {table}: {exc}") from exc
    return EncodedRows(payloads, len(rows))


class SqliteStore:
    """A Store in one SQLite file. Safe to share between threads (one connection per thread)."""

    single_writer = True

    def __init__(self, path: Path | str, *, clock: Clock = SYSTEM_CLOCK, fsync: bool = False) -> None:
        """``clock`` judges TTL expiry (DynamoDB judges it by its own clock; tests pick theirs). ``fsync``:
        ``synchronous=FULL``, each commit on disk before it returns (a power cut loses nothing acknowledged);
        without it ``NORMAL``, which a killed process loses nothing of."""
        self.path = Path(path)
        self.clock = clock
        self.fsync = fsync
        opened_since_start(self.path, what="opening the Store")  # before a wiped directory is made again
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.write_gate = write_gate(self.path)
        self.write_gate.lease()  # before the file is opened: a restore sees this process, or is waited out
        self._leased = True
        # Created 0600 whatever the umask (SQLite gives its -wal/-shm files the database file's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self.opened = file_identity(self.path)  # every write checks the path still names this file
        self._tables: dict[str, SqliteTable] = {}
        self._lock = threading.RLock()
        self._connections = PerThread(self._connect, close=sqlite3.Connection.close)

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path, opened=self.opened)  # a thread's first: still the file this Store opened
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        # Random keys (event ids, hashes) write to random B-tree pages: a 64 MiB page cache and a
        # checkpoint every ~40 MB of WAL (instead of 4 MB) keep them in memory between commits.
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (one per thread: sqlite3 connections are not shared)."""
        return self._connections.get()

    def writing(self, conn: sqlite3.Connection, *, what: str, immediate: bool = True) -> AbstractContextManager[None]:
        """A write transaction of this Store (:meth:`WriteGate.transaction`), refused once the path no longer
        names the file this Store opened: every write path goes through here, so none can skip that check."""
        return self.write_gate.transaction(conn, what=what, immediate=immediate, opened=self.opened)

    def table(self, name: str) -> SqliteTable:
        if not _NAME.match(name):
            raise ValidationError(f"invalid table name {name!r}")
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                conn = self.connection()
                try:  # a full disk fails here first on a fresh file: a BackendError naming it, not a raw sqlite3 error
                    conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (pk TEXT NOT NULL, sk TEXT NOT NULL, '
                                 "ttl REAL, body TEXT NOT NULL)")
                    conn.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS "{name}__key" ON "{name}" (pk, sk)')
                except sqlite3.Error as exc:
                    raise BackendError(f"SQLite create table {name} in {self.path.name} failed: {exc}") from exc
                table = self._tables[name] = SqliteTable(self, name)
        return table

    # maintenance hooks (right to erasure: notify_core/erasure.py) -----------------------------------
    def table_names(self) -> list[str]:
        """Every Notify table in the file, including ones this process has not opened.

        Only tables this adapter made: a name :meth:`table` accepts and its ``(pk, sk, ttl, body)`` columns.
        Other tables in the same file are not the Store's and are never listed: SQLite's own
        (``sqlite_*``) and Litestream's (``_litestream_seq``/``_litestream_lock``, added by ``notify backup``),
        which the erasure's sweep (``DELETE ... WHERE ttl``) would otherwise fail on."""
        conn = self.connection()
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").fetchall()
        names = [str(r[0]) for r in rows if _NAME.match(str(r[0])) and not str(r[0]).startswith("sqlite_")]
        return [name for name in names
                if tuple(str(c[1]) for c in conn.execute(f'PRAGMA table_info("{name}")')) == _COLUMNS]

    def sweep_expired(self, *, limit: int | None = None) -> int:
        """Physically delete items whose TTL has passed (reads already treat them as absent), as DynamoDB's
        TTL sweeper does on its own: at most ``limit`` rows (None: all); returns the rows deleted (``limit``
        of them: there may be more). The delivery worker calls it regularly
        (:class:`notify_core.store.expiry.ExpirySweep`), the erasure before it erases.

        The expired rows are found outside the write gate (a WAL read, resumed by rowid, so each table is
        scanned once) and deleted by rowid, :data:`SWEEP_CHUNK` at a time, inside it, with their TTL checked
        again (a row rewritten meanwhile stays). The scan is what costs on a big table with few expired rows
        (154 ms for 1M rows): done inside the gate, as first written, it held every writer of the file
        (the worker's outcomes, the consumer) that long, every hour."""
        conn = self.connection()
        now = self.clock.now()
        removed = 0
        for name in self.table_names():
            after = 0  # rowids start at 1
            while limit is None or removed < limit:
                chunk = SWEEP_CHUNK if limit is None else min(SWEEP_CHUNK, limit - removed)
                rowids = [rowid for (rowid,) in conn.execute(
                    f'SELECT rowid FROM "{name}" WHERE rowid > ? AND ttl IS NOT NULL AND ttl <= ? '
                    "ORDER BY rowid LIMIT ?", (after, now, chunk))]
                if not rowids:
                    break
                after = rowids[-1]
                with self.writing(conn, what=f"SQLite TTL sweep of {name}"):
                    removed += conn.execute(
                        f'DELETE FROM "{name}" WHERE rowid IN (SELECT value FROM json_each(?)) '
                        "AND ttl IS NOT NULL AND ttl <= ?", (orjson.dumps(rowids).decode(), now)).rowcount
                if len(rowids) < chunk:
                    break
        return removed

    def secure_delete(self) -> None:
        """Zero deleted content from now on in this thread's connection (``PRAGMA secure_delete``)."""
        self.connection().execute("PRAGMA secure_delete=ON")

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it, so deleted rows leave no copy there."""
        self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def vacuum(self) -> None:
        """Rebuild the file: no freed page or stale index divider keeps a deleted key (slow on big stores)."""
        conn = self.connection()
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def tune_for_bulk_writes(self) -> None:
        """Give the calling thread's connection a bigger page cache and rarer WAL checkpoints.

        Event ids and user ids are random, so the ``events`` and ``user_events`` B-trees are written at
        random pages: past a few hundred thousand rows nearly every row dirties a page of its own, and the
        commits and checkpoints (two fsyncs each) of those pages, not Python, cap ingest. With SQLite's 2 MB
        default cache and a checkpoint every 4 MB of WAL, ingest halves. A checkpoint every ~400 MB of WAL
        instead of ~80 MB writes a page dirtied by several batches once and fsyncs a fifth as often: random
        upserts into a 2.7M-row table went from ~29 to ~23 us/row here, for checkpoint pauses of up to
        ~0.5 s (the WAL file, ~400 MB, is reused after each).

        A transaction's dirty pages stay in memory until its commit up to :data:`BULK_SPILL_BYTES` (SQLite's
        ``cache_spill`` threshold) instead of being written to the WAL once the 256 MiB cache is full and
        then again at the commit: a plan chunk's table dirties ~0.7 GB of pages in one transaction. The 10M
        scheduling run's writer process spent 8-13 % less CPU so (363-368 against 400-425 CPU-s; the run
        412-414 against 443-466 s) for 0.6-0.9 GB more at its peak; a larger transaction still spills, so
        memory stays bounded.
        """
        conn = self.connection()
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
        conn.execute("PRAGMA wal_autocheckpoint=100000")  # pages (~400 MB of WAL)
        # In pages, and odd: SQLite reads the same argument as a boolean from its low byte, so a multiple of
        # 256 (e.g. 262,144 pages, 1 GiB of 4 KiB pages) would turn spilling off altogether, with no bound.
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA cache_spill={BULK_SPILL_BYTES // page | 1}")

    def reopener(self) -> functools.partial[SqliteStore]:
        """A picklable ``opener(clock=...)`` of this same file in another process (the plan writer
        process, :mod:`notify_core.scheduling.writer`): its own connection, the same file and pragmas."""
        return functools.partial(SqliteStore, self.path, fsync=self.fsync)

    def close(self) -> None:
        self._connections.close_all()
        if self._leased:  # closed: a restore may go ahead (a write after this still checks the file's identity)
            self._leased = False
            self.write_gate.release()


class SqliteTable:
    """One table; see :class:`notify_core.store.port.Table` for the contract."""

    def __init__(self, store: SqliteStore, name: str) -> None:
        self.store = store
        self.name = name
        self._q = f'"{name}"'
        # One row, written in place when its key exists (not INSERT OR REPLACE, which deletes the row and
        # inserts a new one: a new rowid and two index updates for every status change of an item).
        self._upsert = self._upsert_of(1)
        # The same upsert of ROWS_PER_INSERT rows at once (rows of one statement are applied in order, so
        # a key repeated within it still ends as its last row).
        self._upsert_rows = self._upsert_of(ROWS_PER_INSERT)

    def _upsert_of(self, rows: int) -> str:
        """The upsert statement of ``rows`` rows (4 parameters each)."""
        return (f"INSERT INTO {self._q} (pk, sk, ttl, body) VALUES " + ",".join(["(?,?,?,?)"] * rows)
                + " ON CONFLICT(pk, sk) DO UPDATE SET ttl=excluded.ttl, body=excluded.body")

    # reads -------------------------------------------------------------------------------------
    def get(self, pk: str, sk: str, *, consistent: bool = False) -> Item | None:
        check_key(pk, sk)
        row = self.store.connection().execute(
            f"SELECT body FROM {self._q} WHERE pk=? AND sk=? AND (ttl IS NULL OR ttl > ?)",
            (pk, sk, self.store.clock.now()),
        ).fetchone()
        return None if row is None else decode_item(row[0])

    def batch_get(self, keys: Sequence[Key], *, consistent: bool = False) -> list[Item]:
        for pk, sk in keys:
            check_key(pk, sk)
        unique = list(dict.fromkeys(keys))
        if len(unique) == 1:  # one key (a request's profile or vector): the plain lookup, no VALUES join
            item = self.get(*unique[0], consistent=consistent)
            return [] if item is None else [item]
        conn = self.store.connection()
        now = self.store.clock.now()
        found: list[Item] = []
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ",".join("(?,?)" for _ in chunk)
            params: list[Any] = [part for key in chunk for part in key]
            # A join from a VALUES list probes the primary key once per key; `(pk, sk) IN (VALUES ...)`
            # made SQLite scan the table instead (37 s for 400k keys against ~1 s for the join).
            rows = conn.execute(
                f"WITH k(pk, sk) AS (VALUES {marks}) SELECT t.body FROM k CROSS JOIN {self._q} AS t "
                "ON t.pk = k.pk AND t.sk = k.sk WHERE t.ttl IS NULL OR t.ttl > ?",
                (*params, now),
            ).fetchall()
            found.extend(decode_item(row[0]) for row in rows)
        return found

    def query(
        self,
        pk: str,
        *,
        key_range: KeyRange | None = None,
        limit: int | None = None,
        descending: bool = False,
        consistent: bool = False,
    ) -> list[Item]:
        check_query(pk, limit)
        sql, params = self._query_sql("body", pk, key_range=key_range, limit=limit, descending=descending)
        return [decode_item(row[0]) for row in self.store.connection().execute(sql, params).fetchall()]

    def query_columns(
        self,
        pk: str,
        attributes: Sequence[str],
        *,
        key_range: KeyRange | None = None,
        limit: int | None = None,
        descending: bool = False,
        consistent: bool = False,
    ) -> Columns:
        """The documents as bytes (no str made of them) into one projection decode (:func:`decode_columns`)."""
        check_query(pk, limit)
        check_attributes(attributes)
        sql, params = self._query_sql("CAST(body AS BLOB)", pk, key_range=key_range, limit=limit,
                                      descending=descending)
        return decode_columns([body for (body,) in self.store.connection().execute(sql, params)], attributes)

    def _query_sql(self, what: str, pk: str, *, key_range: KeyRange | None, limit: int | None,
                   descending: bool) -> tuple[str, list[Any]]:
        """One partition's live rows in sk order (the statement both queries run), selecting ``what``."""
        sql = f"SELECT {what} FROM {self._q} WHERE pk=? AND (ttl IS NULL OR ttl > ?)"
        params: list[Any] = [pk, self.store.clock.now()]
        range_sql, range_params = _range_sql(key_range, "sk")
        sql += range_sql
        params.extend(range_params)
        sql += " ORDER BY sk DESC" if descending else " ORDER BY sk"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return sql, params

    def scan(self, *, segment_size: int = 1000) -> Iterator[Item]:
        conn = self.store.connection()
        last: tuple[str, str] = ("", "")
        while True:
            rows = conn.execute(
                f"SELECT pk, sk, body FROM {self._q} WHERE (pk, sk) > (?, ?) AND (ttl IS NULL OR ttl > ?) "
                "ORDER BY pk, sk LIMIT ?",
                (*last, self.store.clock.now(), segment_size),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield decode_item(row[2])
            last = (rows[-1][0], rows[-1][1])

    # writes ------------------------------------------------------------------------------------
    def batch_put(self, items: Iterable[Item]) -> int:
        """All items in ONE transaction: a batch is atomic, and a commit (a WAL sync plus page writes)
        is paid once per batch rather than once per few hundred rows, which is what caps ingest.

        The rows go in as ONE statement over a JSON array (``json_each``), not ``executemany``: the
        sqlite3 module releases the GIL only inside each statement step, so a step per row hands the
        GIL back and forth thousands of times a batch, and another thread (the consumer decoding the
        next batch) can never run beside the B-tree work. One step per batch lets it, and binds no
        parameters row by row. Encoding (:func:`encode_rows`) and writing (:meth:`put_encoded`) are
        two steps so that the encoding can run elsewhere (the consumer's decoding process).
        """
        return self.put_encoded(encode_rows(items, table=self.name))

    row_encoder = staticmethod(encode_rows)
    """Items -> what :meth:`put_encoded` takes (a module function, so it pickles by name): the consumer
    hands it to its decoding process."""

    def put_encoded(self, rows: EncodedRows) -> int:
        """:meth:`batch_put` of rows :func:`encode_rows` made (possibly in another process): ONE
        transaction, one ``json_each`` statement per payload."""
        if not rows.size:
            return 0
        conn = self.store.connection()
        with self.store.writing(conn, what=f"SQLite batch write to {self.name}", immediate=False):
            for payload in rows.payloads:
                conn.execute(
                    f"INSERT INTO {self._q} (pk, sk, ttl, body) "
                    "SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?) WHERE true "
                    "ON CONFLICT(pk, sk) DO UPDATE SET ttl=excluded.ttl, body=excluded.body",
                    (payload,),
                )
        return rows.size

    def batch_put_frame(self, frame: pl.DataFrame) -> int:
        """:meth:`batch_put` of a frame's rows (see the port), in key order and ONE transaction.

        polars writes each row's JSON document in Rust, so a million plan items cost no Python dict and
        no per-item encode; the rows then go in by ``executemany`` of multi-row INSERTs
        (:meth:`_insert_rows`) in slices of ``_FRAME_SLICE`` (bounded memory). Not ``json_each`` as
        :meth:`batch_put`: that one trades speed for releasing the GIL once per batch (the consumer decodes
        beside it); for a bulk load alone, executemany of ready rows measured ~2x faster here (300k plan
        rows: 2.4 s against 4.8 s).
        """
        import polars as pl

        frame = check_frame(frame)
        if frame.is_empty():
            return 0
        ttl = (pl.col(TTL_ATTRIBUTE).cast(pl.Float64) if TTL_ATTRIBUTE in frame.columns
               else pl.lit(None, dtype=pl.Float64))
        # Encode first, then sort the four columns: the JSON encoder reads the frame in its own order
        # (sorting first scatters every column it reads); 250k users' schedules rows: 1.4 against 2.6 CPU-s.
        rows = last_of_each_key(frame.select("pk", "sk", ttl.alias("_ttl"),
                                             pl.struct(frame.columns).struct.json_encode().alias("_b")))
        conn = self.store.connection()
        with self.store.writing(conn, what=f"SQLite batch write to {self.name}", immediate=False):
            for start in range(0, rows.height, _FRAME_SLICE):
                part = rows.slice(start, _FRAME_SLICE)
                self._insert_rows([part[c].to_list() for c in part.columns], conn)
        return rows.height

    def _insert_rows(self, columns: list[list[Any]], conn: sqlite3.Connection) -> None:
        """Upsert rows given as four column lists (pk, sk, ttl, body), in order: ``ROWS_PER_INSERT`` rows a
        statement, the remainder one a statement.

        Why multi-row statements: at a plan's size the cost is per row, not per byte (bodies 20 % smaller
        changed nothing), and much of it is the driver's: one Python parameter tuple, one bind and one
        step per row. One statement for 100 rows takes ~25 % less CPU for the same rows and the same file
        (1.8M plan rows: 9.3 -> 6.5-7.6 CPU-s). The column lists are interleaved by slice assignment, at C
        speed, with no tuple per row."""
        size = len(columns[0])
        whole = size - size % ROWS_PER_INSERT
        width = len(columns)
        if whole:
            flat: list[Any] = [None] * (width * whole)
            for offset, column in enumerate(columns):
                flat[offset::width] = column[:whole]
            step = width * ROWS_PER_INSERT
            conn.executemany(self._upsert_rows, (flat[i : i + step] for i in range(0, len(flat), step)))
        if whole < size:
            conn.executemany(self._upsert, zip(*(column[whole:] for column in columns), strict=True))

    def query_many(self, pks: Sequence[str], *, key_range: KeyRange | None = None,
                   consistent: bool = False) -> dict[str, list[Item]]:
        """:meth:`query` of many partitions, ``_JSON_CHUNK`` partition keys per statement (a join from
        ``json_each`` probes the key index once per pk): a day's plans of 500k users in seconds, where one
        query per user costs ~30 us each of Python and statement overhead."""
        for pk in pks:
            check_pk(pk)
        found: dict[str, list[Item]] = {pk: [] for pk in pks}
        unique = list(found)
        if len(unique) == 1:  # the plain query: ~19 against ~28 us of CPU here (a lone request's sends)
            return {unique[0]: self.query(unique[0], key_range=key_range)}
        range_sql, range_params = _range_sql(key_range, "t.sk")
        conn = self.store.connection()
        now = self.store.clock.now()
        for start in range(0, len(unique), _JSON_CHUNK):
            payload = orjson.dumps(unique[start : start + _JSON_CHUNK]).decode()
            rows = conn.execute(
                f"SELECT t.pk, t.body FROM json_each(?) AS k CROSS JOIN {self._q} AS t ON t.pk = k.value"
                f"{range_sql} WHERE (t.ttl IS NULL OR t.ttl > ?) ORDER BY t.pk, t.sk",
                (payload, *range_params, now),
            ).fetchall()
            for pk, body in rows:
                found[pk].append(decode_item(body))
        return found

    def query_columns_many(self, pks: Sequence[str], attributes: Sequence[str], *,
                           key_range: KeyRange | None = None, consistent: bool = False) -> dict[str, Columns]:
        """One :meth:`query_columns` per partition: here one indexed statement each beat one ``json_each``
        statement for all of them, as :meth:`query_many` reads (the recommender's contexts of the demo's
        users, 1,000 at a time: 0.36 against 0.43 ms of CPU a user, three interleaved pairs)."""
        check_attributes(attributes)
        return {pk: self.query_columns(pk, attributes, key_range=key_range) for pk in dict.fromkeys(pks)}

    def _current(self, conn: sqlite3.Connection, pk: str, sk: str) -> Item | None:
        row = conn.execute(
            f"SELECT body FROM {self._q} WHERE pk=? AND sk=? AND (ttl IS NULL OR ttl > ?)",
            (pk, sk, self.store.clock.now()),
        ).fetchone()
        return None if row is None else decode_item(row[0])

    def _atomically(self, pk: str, sk: str, condition: Condition | None, change: Any) -> Any:
        conn = self.store.connection()
        with self.store.writing(conn, what=f"SQLite write to {self.name}"):
            current = self._current(conn, pk, sk)
            if condition is not None and not condition.holds_for(current):
                raise ConditionFailedError(f"condition failed on {self.name} {pk}/{sk}")
            return change(conn, current)

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        check_key(item.get("pk"), item.get("sk"))
        body = _encode(item)

        def write(conn: sqlite3.Connection, current: Item | None) -> None:
            conn.execute(self._upsert, (item["pk"], item["sk"], _ttl_of(item), body))

        if condition is None:
            self.batch_put([item])
        else:
            self._atomically(item["pk"], item["sk"], condition, write)

    def update(self, pk: str, sk: str, *, set: Mapping[str, Any], condition: Condition | None = None) -> Item:
        check_key(pk, sk)
        if "pk" in set or "sk" in set:
            raise ValidationError("update cannot change an item's key")

        def write(conn: sqlite3.Connection, current: Item | None) -> Item:
            return self._write_update(conn, pk, sk, current, set)

        result: Item = self._atomically(pk, sk, condition, write)
        return result

    def _write_update(self, conn: sqlite3.Connection, pk: str, sk: str, current: Item | None,
                      changes: Mapping[str, Any]) -> Item:
        new = dict(current) if current is not None else {"pk": pk, "sk": sk}
        new.update(changes)
        conn.execute(self._upsert, (pk, sk, _ttl_of(new), _encode(new)))
        return new

    def update_many(self, updates: Sequence[Update]) -> list[Item | None]:
        for u in updates:
            check_key(u.pk, u.sk)
            if "pk" in u.set or "sk" in u.set:
                raise ValidationError("update cannot change an item's key")
        if not updates:
            return []
        conn = self.store.connection()
        with self.store.writing(conn, what=f"SQLite batch update of {self.name}"):
            if len(updates) <= _SMALL_UPDATE_BATCH:
                return self._update_many_small(conn, updates)
            return self._update_many_bulk(conn, updates)

    def _update_many_small(self, conn: sqlite3.Connection, updates: Sequence[Update]) -> list[Item | None]:
        """``update_many`` of a few updates inside its transaction: a keyed read and an upsert each.

        The delivery worker's outcome group commits are mostly one to four updates (16 senders rarely
        finish together): for those, the bulk path's two ``json_each`` statements cost more than they save
        (one outcome: 60 -> 41 us of CPU, four: 42 -> 32 us each, measured here). An update reads the
        batch's earlier writes, as in the bulk path."""
        results: list[Item | None] = []
        for u in updates:
            current = self._current(conn, u.pk, u.sk)
            if u.condition is not None and not u.condition.holds_for(current):
                results.append(None)
                continue
            results.append(self._write_update(conn, u.pk, u.sk, current, u.set))
        return results

    def _update_many_bulk(self, conn: sqlite3.Connection, updates: Sequence[Update]) -> list[Item | None]:
        """``update_many`` inside its transaction, in two statements whatever the batch size.

        Reading each current row and upserting it one by one cost two statement steps per update, and
        the sqlite3 module hands the GIL back and forth around every step: with 16 delivery threads busy,
        each hand-back waits up to a switch interval, so a 1,000-item claim batch or a group commit of
        outcomes stalled for tens of milliseconds. Here one step reads every current row (packed into one
        JSON array by SQLite), the conditions and merges run in Python, and one ``json_each`` upsert writes
        the changed rows. Same semantics: an update sees the earlier updates of the same batch.
        """
        keys = sorted({(u.pk, u.sk) for u in updates})
        state: dict[tuple[str, str], Item | None] = dict.fromkeys(keys)
        for start in range(0, len(keys), _JSON_CHUNK):
            packed = conn.execute(
                f"SELECT json_group_array(json_array(t.pk, t.sk, t.body)) FROM json_each(?) AS j "
                f"JOIN {self._q} AS t ON t.pk = j.value->>0 AND t.sk = j.value->>1 "
                "WHERE t.ttl IS NULL OR t.ttl > ?",
                (orjson.dumps(keys[start : start + _JSON_CHUNK]), self.store.clock.now()),
            ).fetchone()[0]
            for pk, sk, body in orjson.loads(packed):
                state[(pk, sk)] = decode_item(body)
        results: list[Item | None] = []
        changed: dict[tuple[str, str], Item] = {}
        for u in updates:
            key = (u.pk, u.sk)
            current = state[key]
            if u.condition is not None and not u.condition.holds_for(current):
                results.append(None)
                continue
            new = dict(current) if current is not None else {"pk": u.pk, "sk": u.sk}
            new.update(u.set)
            state[key] = changed[key] = new
            results.append(new)
        if changed:
            rows = [(pk, sk, _ttl_of(item), _encode(item)) for (pk, sk), item in sorted(changed.items())]
            for start in range(0, len(rows), _JSON_CHUNK):
                conn.execute(
                    f"INSERT INTO {self._q} (pk, sk, ttl, body) "
                    "SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?) WHERE true "
                    "ON CONFLICT(pk, sk) DO UPDATE SET ttl=excluded.ttl, body=excluded.body",
                    (orjson.dumps(rows[start : start + _JSON_CHUNK]),),
                )
        return results

    def delete(self, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        check_key(pk, sk)

        def write(conn: sqlite3.Connection, current: Item | None) -> None:
            conn.execute(f"DELETE FROM {self._q} WHERE pk=? AND sk=?", (pk, sk))

        self._atomically(pk, sk, condition, write)
