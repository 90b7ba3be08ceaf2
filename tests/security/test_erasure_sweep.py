"""Erasures bounded in time: what the deadline leaves is queued, and one sweep finishes every queued erasure.

At the spec's 10M users an erasure walks tables of hundreds of millions of items, every file and every object
version: far past an HTTP request (and the erase function's 30 s). The route works for its budget, answers
202 and leaves the user in the erasure queue; the sweep finishes all queued users in one pass. The invariant
checked: after the sweep, the Store and the files equal those of the same erasures run to the end one by one
(the old way), nobody's else's data is touched, and the queue is empty.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.channels import OutboxChannel
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import sign_token, track
from notify_core.erasure import belongs_to, erase_user, sweep_erasures
from notify_core.erasure_queue import has_queued_erasures, queue_erasure, queued_erasures
from notify_core.erasure_register import pseudonym
from notify_core.events.capture import capture_events
from notify_core.events.consumer import EventConsumer
from notify_core.features import refresh_features
from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.security import audit
from notify_core.security.crypto import build_sealer
from notify_core.security.keyring import ephemeral_keyring
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_core.store.factory import build_store
from notify_core.store.port import Store
from notify_core.stream.local_log import LocalLog

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
USERS = [f"victim-{i:07d}" for i in range(4)]
ERASED, KEPT = USERS[:3], USERS[3]
_NOT_KEYED = {n for n, rule in tables.USER_ITEMS.items() if rule not in (tables.UserKey.PK, tables.UserKey.VECTOR_PK)}


class _Data:
    """A data directory where every user is everywhere: Store tables, lake, landing, quarantine, vectors,
    outbox, logs and the stream log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings: NotifySettings = load_settings(data_dir=root, clock_start=NOW, clock_frozen=True)
        self.store: Store = build_store(self.settings)
        self.log = LocalLog(self.settings.local_log_path)

    def fill(self) -> None:
        settings, store, log = self.settings, self.store, self.log
        lake = Lake(settings.lake_root)
        landing = settings.landing
        for name in ("users", "products", "purchases"):
            (landing / name).mkdir(parents=True, exist_ok=True)
        (landing / "users" / "u.csv").write_text("user_id,country,timezone,signup_date,daily_cap\n" + "".join(
            f"{u},GB,Europe/London,2010-05-0{i + 1},3\n" for i, u in enumerate(USERS)))
        (landing / "products" / "p.csv").write_text(
            "product_id,description,category,unit_price\np1,RED MUG,kitchen,2.5\n")
        (landing / "purchases" / "o.csv").write_text(
            "order_id,user_id,product_id,quantity,unit_price,ts,country,is_return\n" + "".join(
                f"o{i},{u},p1,{i + 1},2.5,2011-01-1{i}T09:00:00,GB,false\n" for i, u in enumerate(USERS))
            + f"oq,{USERS[0]},p1,1,1e308,2011-03-10T09:00:00,GB,false\n")  # quarantined with the user's id
        for dataset in ("users", "products", "purchases"):
            ingest_dataset(dataset, landing=landing, lake=lake, store=store, quarantine=settings.quarantine_root)
        refresh_features(lake, store)
        store.table(tables.EMBEDDINGS).batch_put(
            {"pk": f"user#{u}", "sk": tables.VECTOR_SK, "vector": np.ones(4, np.float32).tobytes(), "dim": 4}
            for u in USERS)
        lake.write_table("embeddings_user", pl.DataFrame({"id": USERS, "content_hash": list("abcd")}))
        clock = ManualClock(NOW)
        events = [{"type": "click", "user_id": u, "ts": NOW.isoformat(), "product_id": "p1"} for u in USERS]
        assert capture_events(json.dumps(events), stream=log, clock=clock).accepted == len(USERS)
        consumer = EventConsumer(stream=log, store=store, landing=landing, group="g", max_batch=100, clock=clock)
        consumer.run_once()
        consumer.close()
        due = seed_due(store, n=len(USERS), start=NOW, user_prefix="victim-", with_plans=True, with_users=False)
        keys = ephemeral_keyring("tracking", now=NOW)
        channel = OutboxChannel(settings.outbox, sealer=build_sealer(settings.secrets_dir), clock=clock)
        DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, tracking_keys=keys,
                       options=WorkerOptions(concurrency=1)).run_until_idle()
        channel.close()
        for item in due:  # every user clicks: tracking markers, user events and stream records
            track(store, log, token=sign_token(keys, item["notification_id"], kind="click"), kind="click",
                  keys=keys, clock=clock)
        (self.root / "logs").mkdir(exist_ok=True)
        (self.root / "logs" / "notify.jsonl").write_text(
            "".join(json.dumps({"msg": "request", "user_id": u}) + "\n" for u in USERS))

    def erase(self, user_id: str, **options: Any) -> Any:
        return erase_user(user_id, store=self.store, file_roots=[self.root], stream_log=self.log,
                          clock=ManualClock(NOW), **options)

    def sweep(self, **options: Any) -> Any:
        return sweep_erasures(self.store, file_roots=[self.root], stream_log=self.log, **options)

    def holds(self, user_id: str) -> int:
        """Rows, files and stream records that still name ``user_id`` (every table, file and topic read)."""
        found = sum(1 for name in self.store.table_names() for item in self.store.table(name).scan()  # type: ignore[attr-defined]
                    if belongs_to(item, user_id, rule=tables.USER_ITEMS.get(name, tables.UserKey.ATTRIBUTE))
                    or user_id in json.dumps(item, default=str))
        for path in (p for p in self.root.rglob("*") if p.is_file() and "stream" not in p.parts):
            data = path.read_bytes()
            if path.suffix == ".parquet":
                found += sum(1 for col in pl.read_parquet(path).select(pl.col(pl.String)).iter_columns()
                             if user_id in col.to_list())
            elif user_id.encode() in data:
                found += 1
        return found + _stream_count(self.log, user_id)

    def state(self) -> dict[str, Any]:
        """What a clean run and a swept run must agree on: every Store item (the audit trail aside: its
        entries differ by design) and every data file's rows."""
        items = {name: sorted(json.dumps(i, sort_keys=True, default=str) for i in self.store.table(name).scan())
                 for name in self.store.table_names() if name != tables.AUDIT_LOG}  # type: ignore[attr-defined]
        files: dict[str, Any] = {}
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            rel = str(path.relative_to(self.root))
            if path.suffix == ".parquet":
                frame = pl.read_parquet(path)
                files[rel] = sorted(json.dumps(r, sort_keys=True, default=str) for r in frame.to_dicts())
            elif path.suffix in (".csv", ".jsonl"):
                files[rel] = sorted(path.read_text().splitlines())
            elif path == self.settings.outbox:  # sealed lines (each directory has its own keys): how many
                files[rel] = len(path.read_bytes().splitlines())
        return {"store": items, "files": files}

    def close(self) -> None:
        self.log.close()
        self.store.close()


def _stream_count(log: LocalLog, user_id: str) -> int:
    conn = log._conn()  # the log's own file: how many records are keyed by the user, every topic
    topics = [int(t) for (t,) in conn.execute("SELECT id FROM topics").fetchall()]
    return sum(conn.execute(f"SELECT COUNT(*) FROM log_{t} WHERE key=?", (user_id.encode(),)).fetchone()[0]
               for t in topics)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[_Data, _Data]]:
    """The same data twice: one erased the old way (each erasure to the end), one by deadline + sweep."""
    first = _Data(tmp_path / "clean")
    first.fill()
    first.close()
    shutil.copytree(first.root, tmp_path / "swept")  # the same bytes: ids and keys drawn once
    pair = (_Data(tmp_path / "clean"), _Data(tmp_path / "swept"))
    yield pair
    for data in pair:
        data.close()


def _comparable(state: dict[str, Any], root: Path) -> dict[str, Any]:
    """``state`` with the data directory's own path taken out of the file names it records."""
    return json.loads(json.dumps(state).replace(str(root), "<root>"))


def test_erasures_out_of_time_are_queued_and_one_sweep_leaves_what_running_each_to_the_end_leaves(
        two: tuple[_Data, _Data]) -> None:
    clean, swept = two
    for user in ERASED:
        assert swept.holds(user) > 10  # the user really is everywhere first
        done = clean.erase(user)
        assert not done.pending and done.total > 0 and clean.holds(user) == 0
    assert not has_queued_erasures(clean.store)  # an erasure that finishes takes itself out of the queue

    for user in ERASED:  # the route's way, with its budget already spent: register, queue, answer 202
        begun = swept.erase(user, deadline=time.monotonic())
        assert begun.pending and swept.holds(user) > 0
    assert sorted(queued_erasures(swept.store)) == ERASED
    # the register holds them from the first answer: no ingest, replay or restore brings them back meanwhile
    registered = {str(i["pk"]) for i in swept.store.table(tables.ERASURES).scan()}
    assert registered == {pseudonym(u) for u in ERASED}

    report = swept.sweep()
    assert (report.users_queued, report.users_finished) == (3, 3) and report.total > 0
    assert [swept.holds(u) for u in ERASED] == [0, 0, 0]
    assert swept.holds(KEPT) == clean.holds(KEPT) > 10  # nobody else's data is touched
    assert not has_queued_erasures(swept.store)
    assert _comparable(swept.state(), swept.root) == _comparable(clean.state(), clean.root)
    again = swept.sweep()
    assert (again.users_queued, again.total) == (0, 0)


class _Counting:
    """A Store whose tables count their scans (the sweep's cost is walks of the tables not keyed by user)."""

    def __init__(self, inner: Store) -> None:
        self._inner, self.scans = inner, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def table(self, name: str) -> Any:
        inner, scans = self._inner.table(name), self.scans

        class Table:
            def __getattr__(self, attr: str) -> Any:
                return getattr(inner, attr)

            def scan(self, **kw: Any) -> Any:
                scans[name] += 1
                return inner.scan(**kw)

        return Table()


def test_the_sweep_walks_each_table_not_keyed_by_user_once_however_many_users_wait(tmp_path: Path) -> None:
    data = _Data(tmp_path / "d")
    try:
        data.fill()
        for user in ERASED:
            assert data.erase(user, deadline=time.monotonic()).pending
        counting = _Counting(data.store)
        report = sweep_erasures(counting, file_roots=[data.root], stream_log=data.log)  # type: ignore[arg-type]
        assert report.users_finished == 3
        walked = {n: c for n, c in counting.scans.items() if n in tables.USER_ITEMS}
        not_keyed = {n for n, rule in tables.USER_ITEMS.items() if n in data.store.table_names()  # type: ignore[attr-defined]
                     and rule not in (tables.UserKey.PK, tables.UserKey.VECTOR_PK)}
        assert len(not_keyed) >= 6  # schedules, events, dedupe, deliveries, retries, markers: in this file
        assert walked == dict.fromkeys(not_keyed, 1)  # one walk each for the three users; none of the others
        assert [data.holds(u) for u in ERASED] == [0, 0, 0]
    finally:
        data.close()


class _DiesAfter(_Counting):
    """A Store whose process is killed at its ``n``-th delete (rows deleted before it stay deleted)."""

    def __init__(self, inner: Store, *, n: int) -> None:
        super().__init__(inner)
        self.left = n

    def table(self, name: str) -> Any:
        inner, owner = self._inner.table(name), self

        class Table:
            def __getattr__(self, attr: str) -> Any:
                return getattr(inner, attr)

            def delete(self, pk: str, sk: str, **kw: Any) -> None:
                owner.left -= 1
                if owner.left < 0:
                    raise SystemExit("killed in the Store walk")
                inner.delete(pk, sk, **kw)

        return Table()


@pytest.mark.parametrize("crash_in", ["erase_from_files", "erase_from_objects", "_erase_store", "dequeue"])
def test_a_sweep_killed_anywhere_is_finished_by_the_next_with_the_same_result(
        two: tuple[_Data, _Data], monkeypatch: pytest.MonkeyPatch, crash_in: str) -> None:
    """Killed before the files, before the objects, half-way through the Store (some rows deleted), or after
    everything but the queue's entries: the next sweep finishes, and the result is the clean run's."""
    import notify_core.erasure as erasure

    clean, swept = two
    for user in ERASED:
        clean.erase(user)
        swept.erase(user, deadline=time.monotonic())
    real = getattr(erasure, crash_in)

    def killed(*args: Any, **kwargs: Any) -> Any:
        if crash_in == "_erase_store":
            return real(_DiesAfter(args[0], n=5), *args[1:], **kwargs)
        raise SystemExit(f"killed in {crash_in}")

    monkeypatch.setattr(erasure, crash_in, killed)
    with pytest.raises(SystemExit):
        swept.sweep()
    monkeypatch.setattr(erasure, crash_in, real)
    assert sorted(queued_erasures(swept.store)) == ERASED  # nothing was finished, so nothing left the queue
    report = swept.sweep()
    assert report.users_finished == 3 and not has_queued_erasures(swept.store)
    assert _comparable(swept.state(), swept.root) == _comparable(clean.state(), clean.root)


def test_an_erasure_repeated_during_a_sweep_stays_queued_for_the_next(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A user erased again while a sweep runs (new data may have come in since the first erasure) keeps their
    entry: the sweep takes out only the entries it read."""
    import notify_core.erasure as erasure

    data = _Data(tmp_path / "d")
    try:
        data.fill()
        data.erase(ERASED[0], deadline=time.monotonic())
        real = erasure.erase_from_files

        def erased_again_meanwhile(*args: Any, **kwargs: Any) -> Any:
            queue_erasure(data.store, ERASED[0], erased_at=datetime(2026, 3, 3, tzinfo=UTC))
            return real(*args, **kwargs)

        monkeypatch.setattr(erasure, "erase_from_files", erased_again_meanwhile)
        assert data.sweep().users_finished == 0
        monkeypatch.setattr(erasure, "erase_from_files", real)
        assert list(queued_erasures(data.store)) == [ERASED[0]]
        assert data.sweep().users_finished == 1 and not has_queued_erasures(data.store)
    finally:
        data.close()


def test_the_sensor_starts_the_sweep_job_which_finishes_the_queue_and_leaves_no_id_in_dagster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unattended: the sensor sees the queue and asks for one sweep run; a failed run is asked again only
    after the backoff; the run finishes every queued erasure, and Dagster's run storage (which cannot forget
    one user) holds counts, never an id."""
    import dagster as dg

    import notify_core.erasure as erasure
    from notify_assets.erasure_sweep import erasure_sweep
    from notify_resources import resources_for
    from notify_sensors import erasure as sensor_module
    from notify_sensors.erasure import erasure_sweep_sensor

    data = _Data(tmp_path / "d")
    data.fill()
    for user in ERASED:
        data.erase(user, deadline=time.monotonic())
    resources = resources_for(data.settings)
    home = tmp_path / "dagster"
    home.mkdir()
    try:
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            def tick() -> dg.SensorResult:
                with dg.build_sensor_context(instance=instance, resources=resources) as context:
                    return erasure_sweep_sensor(context)

            assert len(tick().run_requests) == 1
            real = erasure.sweep_erasures

            def refused(*args: Any, **kwargs: Any) -> Any:
                raise OSError("the Store refused the write")

            monkeypatch.setattr("notify_assets.erasure_sweep.sweep_erasures", refused)
            failed = erasure_sweep.execute_in_process(instance=instance, resources=resources, raise_on_error=False)
            assert not failed.success
            waiting = tick()
            assert not waiting.run_requests and "1 unsuccessful sweep run(s)" in str(waiting.skip_reason)
            ended = instance.get_run_records(dg.RunsFilter(job_name="erasure_sweep"))[0].end_time or 0.0
            monkeypatch.setattr(sensor_module, "time", SimpleNamespace(time=lambda: ended + 61))  # the sensor's only
            assert len(tick().run_requests) == 1  # asked again once the minute's backoff is over
            monkeypatch.setattr("notify_assets.erasure_sweep.sweep_erasures", real)

            assert erasure_sweep.execute_in_process(instance=instance, resources=resources).success
            assert not has_queued_erasures(data.store) and [data.holds(u) for u in ERASED] == [0, 0, 0]
            assert "no erasure waits" in str(tick().skip_reason)
            swept = [e for e in audit.entries(data.store) if e.action == "user.erasure_sweep"]
            assert [(e.actor, e.target) for e in swept] == [("dagster", "3 users")]
    finally:
        data.close()
    held = sorted(str(p) for p in home.rglob("*") if p.is_file() and any(u.encode() in p.read_bytes() for u in USERS))
    assert held == []
    assert any(b"erasure sweep: 3 of 3" in p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_a_restore_that_brings_back_many_erased_users_erases_them_in_one_walk(tmp_path: Path) -> None:
    """A Store restored from before several erasures holds those users again: ``reapply_register`` erased
    them one by one (a walk of every table each); now it queues them and sweeps once."""
    from notify_core.erasure import reapply_register
    from notify_core.erasure_register import ErasureRegister

    data = _Data(tmp_path / "d")
    try:
        data.fill()
        register = ErasureRegister({pseudonym(u): NOW for u in ERASED})  # the newer register, from elsewhere
        counting = _Counting(data.store)
        again = reapply_register(counting, register, file_roots=[data.root], stream_log=data.log)  # type: ignore[arg-type]
        assert again == sorted(ERASED)
        walked = {n: c for n, c in counting.scans.items() if n in _NOT_KEYED}
        assert set(walked.values()) == {1}, walked
        assert [data.holds(u) for u in ERASED] == [0, 0, 0] and data.holds(KEPT) > 10
        assert not has_queued_erasures(data.store)
    finally:
        data.close()


def test_a_run_requeues_only_the_users_erased_since_it_read_the_register(tmp_path: Path) -> None:
    """requeue_erased_since: a user erased before the run read the register had their rows kept out by it,
    so only one erased after that read (or erased again after it) is queued for the sweep again."""
    from datetime import timedelta

    from notify_core.erasure_queue import queued_erasures, requeue_erased_since
    from notify_core.erasure_register import erased_before, register_erasure
    from notify_core.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(NOW))
    try:
        register_erasure(store, "old", erased_at=NOW - timedelta(days=3))
        register_erasure(store, "again", erased_at=NOW - timedelta(days=3))
        register = erased_before(store)  # the run reads it, then writes rows of its users
        register_erasure(store, "new", erased_at=NOW)
        register_erasure(store, "again", erased_at=NOW)
        assert sorted(requeue_erased_since(store, register, ["old", "new", "again", "never"])) == ["again", "new"]
        assert sorted(queued_erasures(store)) == ["again", "new"]
    finally:
        store.close()
