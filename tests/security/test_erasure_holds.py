"""The right to erasure holds after the erasure: on a backed-up Store, through the next pipeline runs, and in
every configured place the user's messages can be written to (audit findings; each test fails on the old code).

* A Store that ``notify backup`` (Litestream) has touched holds ``_litestream_seq``/``_litestream_lock``: the
  erasure must list and sweep only Notify's tables.
* The next run (the source export -> landing -> lake -> Store) must not bring an erased user back: the
  erasure register drops their rows dated at or before the erasure, counts them, and the Store and the lake
  agree afterwards (the sync ledger entries the erasure made stale are gone). A user who buys again later is
  new data and is kept.
* ``notify users delete`` and the Lambda erase the outbox wherever ``NOTIFY_OUTBOX_PATH`` puts it.

New names (``erased_before``, ``erasure_paths``...) are imported inside the tests that need them, so that on
the old code each test fails on its own assertion where it can.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.convergence import Ledger, frame_digest
from notify_core.delivery.channels import Message, OutboxChannel
from notify_core.erasure import erase_user
from notify_core.ingest.batch import DATASETS, IngestReport, ingest_dataset
from notify_core.lake import Lake
from notify_core.schemas import SCHEMAS
from notify_core.settings import NotifySettings, load_settings
from notify_core.sources.demo import prepare_demo_landing
from notify_core.store import tables
from notify_core.store.factory import build_store
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore
from tests.retail_fixture import ROWS, retail_frame, write_retail

ROOT = Path(__file__).resolve().parents[2]
VICTIM, OTHER = "100", "200"  # the fixture's customers: 100 buys in 2011-01 and 2011-02, 200 in 2011-03
ERASED_AT = datetime(2011, 6, 1, 12, 0, tzinfo=UTC)
# Litestream's own tables, as it creates them in the database it replicates (litestream db.go)
LITESTREAM_DDL = ("CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)",
                  "CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER)")


# 1. a backed-up Store --------------------------------------------------------------------------------------
def test_erasure_on_a_store_litestream_has_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path, clock=ManualClock(ERASED_AT))
    try:
        store.table(tables.USERS).batch_put([{"pk": u, "sk": tables.PROFILE_SK, "user_id": u} for u in (VICTIM, OTHER)])
        store.table(tables.DEDUPE).put({"pk": "n1", "sk": tables.DEDUPE_SK, "user_id": OTHER, "ttl": 1.0})  # expired
        with sqlite3.connect(path) as conn:  # what `notify backup` leaves in the file, and a foreign table
            for ddl in LITESTREAM_DDL:
                conn.execute(ddl)
            conn.execute("INSERT INTO _litestream_seq (id, seq) VALUES (1, 7)")
            conn.execute("CREATE TABLE notes (id INTEGER, text TEXT)")  # a valid name, not the Store's layout
        assert store.table_names() == [tables.DEDUPE, tables.USERS]
        report = erase_user(VICTIM, store=store, file_roots=[tmp_path])  # used to raise "no such column: ttl"
        assert report.store_rows == {tables.USERS: 1}
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is None
        assert store.table(tables.USERS).get(OTHER, tables.PROFILE_SK) is not None
    finally:
        store.close()
    with sqlite3.connect(path) as conn:  # the expired item was swept; Litestream's tables are left as they were
        assert conn.execute(f'SELECT count(*) FROM "{tables.DEDUPE}"').fetchone() == (0,)
        assert conn.execute("SELECT id, seq FROM _litestream_seq").fetchall() == [(1, 7)]


# 2. the next pipeline run ----------------------------------------------------------------------------------
def _setup(tmp_path: Path) -> tuple[NotifySettings, Store, Lake]:
    settings = load_settings(data_dir=tmp_path / "data")
    return settings, build_store(settings), Lake(settings.lake_root)


def _ingest(settings: NotifySettings, store: Store, lake: Lake) -> dict[str, IngestReport]:
    return {ds: ingest_dataset(ds, landing=settings.landing, lake=lake, store=store,
                               quarantine=settings.quarantine_root) for ds in DATASETS}


def _user_ids(frame: pl.DataFrame) -> set[str]:
    return {u for u in frame["user_id"].to_list() if u is not None}


def _assert_store_and_lake_agree(store: Store, lake: Lake) -> None:
    """Same users and purchase lines in both, and the ledger holds the digest of every lake partition."""
    users = {str(i["pk"]) for i in store.table(tables.USERS).scan()}
    assert users == _user_ids(lake.read("users"))
    stored = sorted((str(i["pk"]), str(i["order_id"]), str(i["product_id"]))
                    for i in store.table(tables.PURCHASES).scan())
    in_lake = lake.read("purchases").filter(pl.col("user_id").is_not_null())
    assert stored == sorted(in_lake.select("user_id", "order_id", "product_id").iter_rows())
    columns = list(SCHEMAS["purchases"])
    parts = {p: lake.read("purchases", partition=p).select(columns) for p in lake.partitions("purchases")}
    assert Ledger(store, "purchases").recorded() == {p: frame_digest(f) for p, f in parts.items() if f.height}


def test_the_next_run_from_the_unfiltered_landing_does_not_bring_an_erased_user_back(tmp_path: Path) -> None:
    """The audit's run: the source asset rewrites the landing files from the export, the user in them; the
    ingestion drops them (counted as erased) and the Store and the lake agree."""
    source = write_retail(tmp_path / "retail.parquet")
    settings, store, lake = _setup(tmp_path)
    try:
        prepare_demo_landing(source=source, landing=settings.landing, seed=1)
        _ingest(settings, store, lake)
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is not None
        erase_user(VICTIM, store=store, file_roots=[settings.data_dir])
        assert _user_ids(lake.read("purchases")) == {OTHER}
        written = prepare_demo_landing(source=source, landing=settings.landing, seed=1)  # the scheduled re-run
        assert "purchases" in written.files_written  # the export still holds the user
        reports = _ingest(settings, store, lake)
        assert _user_ids(lake.read("users")) == {OTHER} and _user_ids(lake.read("purchases")) == {OTHER}
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is None
        assert list(store.table(tables.PURCHASES).query(VICTIM)) == []
        assert reports["users"].as_metadata()["rows_erased"] == 1
        assert reports["purchases"].as_metadata()["rows_erased"] == 4  # 1001 x2, 1002, C1003
        assert reports["products"].rows_erased == 0
        _assert_store_and_lake_agree(store, lake)
        again = _ingest(settings, store, lake)  # converged: nothing more to write
        assert all(r.rows_changed == 0 and r.store.written == 0 for r in again.values())
    finally:
        store.close()


def test_erased_rows_are_dropped_before_quarantine_and_a_returning_user_is_kept(tmp_path: Path) -> None:
    """Erased at ERASED_AT (the injected clock): the user's old lines go (a bad one too: not quarantined), a
    line dated after the erasure is new data and lands; the stale ledger entries went with the erasure."""
    source = write_retail(tmp_path / "retail.parquet")
    settings, store, lake = _setup(tmp_path)
    try:
        prepare_demo_landing(source=source, landing=settings.landing, seed=1)
        _ingest(settings, store, lake)
        assert set(Ledger(store, "purchases").recorded()) == {"month=2011-01", "month=2011-02", "month=2011-03"}
        report = erase_user(VICTIM, store=store, file_roots=[settings.data_dir], clock=ManualClock(ERASED_AT))
        assert report.erased_at == ERASED_AT.isoformat()
        # the tables the erasure changed are compared again on the next run (users: 1 entry, purchases: 3 months)
        assert report.ledger_entries_cleared == 4
        assert Ledger(store, "purchases").recorded() == {} and Ledger(store, "users").recorded() == {}
        assert Ledger(store, "products").recorded() != {}
        (settings.landing / "purchases" / "drop.csv").write_text(
            "order_id,user_id,product_id,quantity,unit_price,ts,country,is_return\n"
            f"o9,{VICTIM},85123A,1,1e308,2011-01-20T09:00:00,GB,false\n"  # erased and bad: dropped, not quarantined
            f"o10,{VICTIM},85123A,1,2.5,2011-09-01T09:00:00,GB,false\n"  # after the erasure: new data, kept
            f"o11,{OTHER},85123A,1,1e308,2011-03-20T09:00:00,FR,false\n")  # someone else's bad row: quarantined
        prepare_demo_landing(source=source, landing=settings.landing, seed=1)
        reports = _ingest(settings, store, lake)
        assert reports["purchases"].rows_erased == 5 and reports["users"].rows_erased == 1
        assert [b.key["order_id"] for b in reports["purchases"].bad_rows] == ["o11"]
        quarantined = pl.concat([pl.read_parquet(p) for p in settings.quarantine_root.rglob("*.parquet")])
        assert quarantined["order_id"].to_list() == ["o11"]
        assert lake.read("purchases").filter(pl.col("user_id") == VICTIM)["order_id"].to_list() == ["o10"]
        assert [i["order_id"] for i in store.table(tables.PURCHASES).query(VICTIM)] == ["o10"]
        _assert_store_and_lake_agree(store, lake)
    finally:
        store.close()


def test_the_demo_source_keeps_an_erased_user_out_of_the_landing_files_until_they_buy_again(tmp_path: Path) -> None:
    """Sources -> landing with the register: the rewritten landing files hold no row of the erased user
    (counted as dropped "erased"); once the export shows a purchase after the erasure, that purchase and a
    profile signed up again at it land, and nothing older."""
    from notify_core.erasure_register import erased_before

    source = write_retail(tmp_path / "retail.parquet")
    settings, store, lake = _setup(tmp_path)

    def run() -> tuple[dict[str, int], dict[str, IngestReport]]:
        result = prepare_demo_landing(source=source, landing=settings.landing, seed=1, erased=erased_before(store))
        return result.dropped, _ingest(settings, store, lake)

    def landed(dataset: str) -> pl.DataFrame:
        return pl.read_parquet(settings.landing / dataset / "online_retail.parquet")

    try:
        dropped, _ = run()
        assert dropped["erased"] == 0 and VICTIM in _user_ids(landed("users"))
        erase_user(VICTIM, store=store, file_roots=[settings.data_dir], clock=ManualClock(ERASED_AT))
        assert erased_before(store).erased_at(VICTIM) == ERASED_AT and erased_before(store).erased_at(OTHER) is None
        dropped, reports = run()
        assert dropped["erased"] == 5  # 4 purchase lines and the profile
        assert _user_ids(landed("users")) == {OTHER} and _user_ids(landed("purchases")) == {OTHER}
        assert all(r.rows_erased == 0 for r in reports.values())  # nothing left for the ingestion to drop
        assert _user_ids(lake.read("users")) == {OTHER} and _user_ids(lake.read("purchases")) == {OTHER}
        _assert_store_and_lake_agree(store, lake)
        # the user comes back and buys again after the erasure
        back = pl.concat([retail_frame(), pl.DataFrame(
            [("1010", ROWS[0][1], "WHITE HANGING HEART T-LIGHT HOLDER", 2, "2011-09-01 10:00:00", 2.55, 100.0,
              "United Kingdom")], schema=retail_frame().schema, orient="row")])
        back.write_parquet(source)
        dropped, _ = run()
        assert dropped["erased"] == 4  # the old lines only
        assert landed("purchases").filter(pl.col("user_id") == VICTIM)["order_id"].to_list() == ["1010"]
        [profile] = landed("users").filter(pl.col("user_id") == VICTIM).to_dicts()
        assert profile["signup_date"] >= date(2011, 9, 1)
        assert [i["order_id"] for i in store.table(tables.PURCHASES).query(VICTIM)] == ["1010"]
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is not None
        _assert_store_and_lake_agree(store, lake)
    finally:
        store.close()


def test_a_landing_file_of_erased_rows_only_is_counted_not_failed(tmp_path: Path) -> None:
    settings, store, lake = _setup(tmp_path)
    try:
        (settings.landing / "users").mkdir(parents=True)
        (settings.landing / "users" / "u.csv").write_text(
            f"user_id,country,timezone,signup_date,daily_cap\n{VICTIM},GB,Europe/London,2010-05-01,3\n")
        erase_user(VICTIM, store=store, clock=ManualClock(ERASED_AT))
        report = ingest_dataset("users", landing=settings.landing, lake=lake, store=store,
                                quarantine=settings.quarantine_root)
        assert (report.rows_read, report.rows_erased, report.rows_valid, report.file_errors) == (1, 1, 0, {})
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is None
    finally:
        store.close()


def test_the_register_keeps_no_user_id_and_only_moves_forward(tmp_path: Path) -> None:
    from notify_core.erasure_register import erased_before, pseudonym, restore_register

    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        erase_user("user-xyz", store=store, clock=ManualClock(ERASED_AT))
        erase_user("user-xyz", store=store, clock=ManualClock(datetime(2011, 1, 1, tzinfo=UTC)))  # a stale clock
        [item] = list(store.table(tables.ERASURES).scan())
        assert item["pk"] == pseudonym("user-xyz") and "user-xyz" not in json.dumps(item)
        register = erased_before(store)
        assert register.erased_at("user-xyz") == ERASED_AT and len(register) == 1
        assert register.suppresses("user-xyz", datetime(2011, 6, 1, 12, 0, tzinfo=UTC))  # at: erased
        assert not register.suppresses("user-xyz", datetime(2011, 6, 1, 12, 1, tzinfo=UTC))  # after: new data
        assert register.suppresses("user-xyz", None) and not register.suppresses("someone", None)
        restored = SqliteStore(tmp_path / "restored.sqlite")  # a Store restored from before the erasure
        try:
            assert restore_register(restored, register) == 1 and restore_register(restored, register) == 0
            assert erased_before(restored).entries == register.entries
        finally:
            restored.close()
    finally:
        store.close()
    assert b"user-xyz" not in (tmp_path / "store.sqlite").read_bytes()


# 3. the outbox outside the data directory ------------------------------------------------------------------
def _outbox_with(path: Path, *users: str) -> None:
    channel = OutboxChannel(path, clock=ManualClock(ERASED_AT))
    for user in users:
        channel.send(Message(notification_id=f"n-{user}", user_id=user, campaign_id="c1", title="Hi", body="Hello",
                             link="http://t/c", open_pixel="http://t/o", send_at="2031-01-01T00:00:00Z"),
                     idempotency_key=f"k-{user}")
    channel.close()


def _seed_users(data: Path) -> None:
    store = SqliteStore(data / "store.sqlite")
    store.table(tables.USERS).batch_put([{"pk": u, "sk": tables.PROFILE_SK, "user_id": u} for u in ("victim", "other")])
    store.close()


def test_users_delete_erases_the_outbox_outside_the_data_dir(tmp_path: Path) -> None:
    data, outbox = tmp_path / "data", tmp_path / "spool" / "messages.out"  # another folder, another suffix
    _seed_users(data)
    _outbox_with(outbox, "victim", "other")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}
    env |= {"NOTIFY_ENV": "local", "NOTIFY_DATA_DIR": str(data), "NOTIFY_OUTBOX_PATH": str(outbox)}
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", "users", "delete", "victim"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["file_rows"] == {str(outbox): 1}
    text = outbox.read_text()
    assert "victim" not in text and '"other"' in text


def test_the_erase_lambda_erases_the_outbox_outside_the_data_dir(tmp_path: Path) -> None:
    from lambdas import erase_user as erase_lambda
    from lambdas import runtime
    from tests.api.test_edge import rest_v1_event

    data, outbox = tmp_path / "data", tmp_path / "spool" / "outbox.jsonl"
    _seed_users(data)
    _outbox_with(outbox, "victim", "other")
    settings = load_settings(data_dir=data, outbox_path=outbox)
    store = SqliteStore(data / "store.sqlite")
    runtime.configure(settings, store=store, clock=ManualClock(ERASED_AT))
    runtime.use_auth(None, insecure=True)
    erase_lambda.use(store=None)  # built from the runtime's settings, as at a cold start
    try:
        reply = erase_lambda.handler(rest_v1_event("/v1/users/victim", token="", method="DELETE"), None)
        assert reply["statusCode"] == 200, reply
        assert json.loads(reply["body"])["file_rows"] == {str(outbox): 1}
    finally:
        erase_lambda.use(store=None)
        runtime.use_auth(None)
        runtime.configure(None)
        store.close()
    text = outbox.read_text()
    assert "victim" not in text and '"other"' in text


def test_erasure_paths_is_the_one_list_of_places(tmp_path: Path) -> None:
    from notify_core.erasure import erasure_paths

    data, landing, outbox = tmp_path / "data", tmp_path / "drop", tmp_path / "spool" / "outbox.jsonl"
    configured = load_settings(data_dir=data, landing_dir=landing, outbox_path=outbox)
    assert erasure_paths(configured) == (data, landing, outbox)
    assert erasure_paths(load_settings(data_dir=data)) == (data,)  # landing and outbox inside it: walked once


def test_notify_ingest_after_an_erasure_keeps_the_user_out_of_the_lake_and_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Dagster ingest job (`notify ingest`) on landing files that still hold the erased user, as the
    demo source asset writes them from the export: the ingestion assets read the register from the Store."""
    from typer.testing import CliRunner

    from notify_cli.main import app

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    source = write_retail(tmp_path / "retail.parquet")
    prepare_demo_landing(source=source, landing=settings.landing, seed=1)
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", "--data-dir", str(data)])
    assert first.exit_code == 0, first.output
    store = build_store(settings)
    try:
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is not None
        erase_user(VICTIM, store=store, file_roots=[data])
    finally:
        store.close()
    prepare_demo_landing(source=source, landing=settings.landing, seed=1)  # the export rewrites the user back
    second = runner.invoke(app, ["ingest", "--data-dir", str(data)])
    assert second.exit_code == 0, second.output
    lake, store = Lake(settings.lake_root), build_store(settings)
    try:
        assert _user_ids(lake.read("users")) == {OTHER} and _user_ids(lake.read("purchases")) == {OTHER}
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is None
        _assert_store_and_lake_agree(store, lake)
    finally:
        store.close()


def test_the_dagster_source_asset_keeps_an_erased_user_out_of_the_landing_files(tmp_path: Path) -> None:
    """The pipeline's own source step (``online_retail_landing``, what ``notify run`` and the sensors start)
    reads the register: after an erasure its next run rewrites the landing files without the user, and says
    so in its metadata; the ingestion after it has nothing left to drop."""
    import dagster as dg

    from notify_assets.definitions import assets_for, build_definitions

    settings = load_settings(data_dir=tmp_path / "data", source_data=write_retail(tmp_path / "retail.parquet"))
    defs = build_definitions(settings)
    by = {a.key.to_user_string(): a for a in assets_for(settings)[0] if len(a.keys) == 1}
    steps = [by[name] for name in ("online_retail_landing", *DATASETS)]

    def landed(dataset: str) -> set[str]:
        return _user_ids(pl.read_parquet(settings.landing / dataset / "online_retail.parquet"))

    with dg.instance_for_test() as instance:
        assert dg.materialize(steps, resources=defs.resources, instance=instance).success
        assert VICTIM in landed("users") and VICTIM in landed("purchases")
        store = build_store(settings)
        try:
            erase_user(VICTIM, store=store, file_roots=[settings.data_dir], clock=ManualClock(ERASED_AT))
        finally:
            store.close()
        assert dg.materialize(steps, resources=defs.resources, instance=instance).success
        assert landed("users") == {OTHER} and landed("purchases") == {OTHER}
        source = instance.fetch_materializations(dg.AssetKey("online_retail_landing"), limit=1).records[0]
        assert source.asset_materialization is not None
        assert source.asset_materialization.metadata["dropped: erased"].value == 5  # 4 purchase lines, the profile
        ingested = instance.fetch_materializations(dg.AssetKey("purchases"), limit=1).records[0].asset_materialization
        assert ingested is not None and ingested.metadata["rows_erased"].value == 0


# 4. a restore from before an erasure ---------------------------------------------------------------------
def test_a_restore_from_before_an_erasure_erases_the_user_again(tmp_path: Path) -> None:
    """``notify restore --at`` a time before an erasure brings back a Store, lake files and a register from
    before it. The restore reads the newest backup's register (and, with ``--force``, the present Store's),
    writes it into the restored Store and erases again every registered user the restored data holds, at
    their own erasure time; the other users are untouched."""
    import time as wall

    from notify_core.backup import BackupService, BackupTarget, plan_backup
    from notify_core.erasure_register import erased_before

    settings = load_settings(data_dir=tmp_path / "data")
    store = SqliteStore(settings.sqlite_path)
    store.table(tables.USERS).batch_put([{"pk": u, "sk": tables.PROFILE_SK, "user_id": u} for u in (VICTIM, OTHER)])
    store.table(tables.PURCHASES).batch_put([{"pk": u, "sk": f"2011-01-01T00:00:00#o{u}#p1", "order_id": f"o{u}"}
                                             for u in (VICTIM, OTHER)])
    lake_file = settings.data_dir / "lake" / "users" / "part-0.parquet"
    lake_file.parent.mkdir(parents=True)
    pl.DataFrame({"user_id": [VICTIM, OTHER], "country": ["GB", "FR"]}).write_parquet(lake_file)
    target = tmp_path / "backup"

    def service(data: NotifySettings) -> BackupService:
        return BackupService(plan_backup(data, BackupTarget.parse(str(target))), clock=ManualClock(ERASED_AT))

    service(settings).once()
    wall.sleep(1.1)
    before_erasure = datetime.now(UTC)
    wall.sleep(1.1)
    erase_user(VICTIM, store=store, file_roots=[settings.data_dir], clock=ManualClock(ERASED_AT))
    store.close()
    service(settings).once()

    def check(data: NotifySettings, *, reapplied: int) -> None:
        restored = SqliteStore(data.sqlite_path)
        try:
            assert {str(i["pk"]) for i in restored.table(tables.USERS).scan()} == {OTHER}
            assert {str(i["pk"]) for i in restored.table(tables.PURCHASES).scan()} == {OTHER}
            assert erased_before(restored).erased_at(VICTIM) == ERASED_AT  # the erasure's own time, not now
        finally:
            restored.close()
        assert _user_ids(pl.read_parquet(data.data_dir / "lake" / "users" / "part-0.parquet")) == {OTHER}
        assert report.erasures_reapplied == reapplied

    # into an empty data directory, as of before the erasure: the newest backup's register applies
    earlier = load_settings(data_dir=tmp_path / "earlier")
    report = service(earlier).restore(at=before_erasure)
    assert report.databases["store"] == "restored"
    check(earlier, reapplied=1)
    assert report.register_entries == 1
    # over the present Store (--force), as of before the erasure: its register applies too
    report = service(settings).restore(at=before_erasure, force=True)
    check(settings, reapplied=1)
    # the newest backup already honours it: nothing to erase again
    latest = load_settings(data_dir=tmp_path / "latest")
    report = service(latest).restore()
    check(latest, reapplied=0)


# 5. the stream: Kafka keeps an erased user's records for the topic's retention ---------------------------
@pytest.mark.parametrize("decode_process", [False, True], ids=["in-process", "decode-process"])
def test_the_consumer_leaves_out_an_erased_users_records_produced_before_the_erasure(
    tmp_path: Path, decode_process: bool
) -> None:
    """An erasure cannot delete a user's records from a Kafka topic (the stream log here keeps them, as Kafka
    would: ``erase_user`` is given no stream). A consumer that reads them later (a group reset, a replay of an
    uncommitted batch, events still in flight) must not write them back: the records of a registered user
    produced at or before the erasure are counted as ``erased`` and written nowhere, not even as a dead
    letter; the positions still move past them; records produced after the erasure are new data."""
    from notify_core.events import CLICKSTREAM, capture_events, dlq_topic
    from notify_core.events.consumer import EventConsumer
    from notify_core.stream.local_log import LocalLog
    from notify_core.stream.port import Message
    from tests.events.helpers import click, events_clock, order

    victim, other = "u1", "u2"  # the helpers' users (u{i % 13})
    produced = ManualClock(ERASED_AT - timedelta(minutes=5))  # the records' produce time (the broker's clock)
    log = LocalLog(tmp_path / "log.sqlite", clock=produced)
    store = SqliteStore(tmp_path / "store.sqlite")
    old = [click(1), click(14), order(1), click(2), click(15)]  # u1, u1, u1's order, u2, u2
    assert capture_events(json.dumps(old), stream=log, clock=events_clock()).accepted == 5
    log.produce_batch([Message(CLICKSTREAM, victim.encode(), b"{not json")])  # would be a dead letter
    erase_user(victim, store=store, clock=ManualClock(ERASED_AT))
    produced.advance(timedelta(minutes=10).total_seconds())  # the user comes back after the erasure
    assert capture_events(json.dumps([click(27)]), stream=log, clock=events_clock()).accepted == 1  # u1 again
    consumer = EventConsumer(stream=log, store=store, landing=tmp_path / "landing", clock=produced,
                             decode_process=decode_process)
    try:
        totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
        assert consumer.lag() == 0  # the positions moved past every record
    finally:
        consumer.close()
    try:
        rows = [(str(i["pk"]), str(i["sk"])) for i in store.table(tables.USER_EVENTS).scan()]
        assert sorted(pk for pk, _ in rows) == [victim, other, other]  # the victim's click after the erasure only
        assert [sk for pk, sk in rows if pk == victim][0].startswith("2024-03-01T10:00:27")
        assert list(store.table(tables.PURCHASES).scan()) == [] and list(store.table(tables.EVENTS).scan()) == []
        assert not list((tmp_path / "landing").glob("*.parquet"))
    finally:
        store.close()
    assert (totals.records, totals.persisted, totals.erased, totals.dead_lettered) == (7, 3, 4, 0)
    reader = log.consumer(group="check", topics=[dlq_topic(CLICKSTREAM)])
    assert reader.poll_batch(timeout=0.3) == []  # the erased user's bad record is not kept as a dead letter
    reader.close()
    log.close()


@pytest.mark.parametrize("crash_in", ["files", "store"])
def test_an_erasure_that_dies_half_way_is_not_undone_by_the_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str) -> None:
    """The erasure used to clear the Store first and the files after. Killed in between, it left the lake
    holding the user, and the next run's convergence copied the user's rows from the lake back into the
    Store (measured on the demo: 309 purchase rows of 5 erased users came back). The files go first now:
    killed in either step, the next run brings back nothing the erasure had removed, and the erasure run
    again completes, with the Store and the lake agreeing."""
    import notify_core.erasure as erasure

    source = write_retail(tmp_path / "retail.parquet")
    settings, store, lake = _setup(tmp_path)

    def held() -> int:
        return len(store.table(tables.PURCHASES).query(VICTIM)) + len(
            [1 for _ in [store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK)] if _ is not None])

    try:
        prepare_demo_landing(source=source, landing=settings.landing, seed=1)
        _ingest(settings, store, lake)
        step = {"files": "erase_from_files", "store": "_erase_store"}[crash_in]
        real = getattr(erasure, step)

        def killed(*args: Any, **kwargs: Any) -> Any:
            raise SystemExit(f"killed in {step}")

        monkeypatch.setattr(erasure, step, killed)
        with pytest.raises(SystemExit):
            erase_user(VICTIM, store=store, file_roots=[settings.data_dir])
        monkeypatch.setattr(erasure, step, real)
        left = held()
        _ingest(settings, store, lake)  # the next scheduled run
        assert held() <= left  # nothing the erasure removed comes back
        erase_user(VICTIM, store=store, file_roots=[settings.data_dir])  # the erasure run again
        _ingest(settings, store, lake)
        assert held() == 0
        assert _user_ids(lake.read("users")) == {OTHER} and _user_ids(lake.read("purchases")) == {OTHER}
        _assert_store_and_lake_agree(store, lake)
    finally:
        store.close()


def test_an_erasure_while_an_ingestion_is_under_way_is_not_undone(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasure lands between the ingestion's plan (it read the lake with the user in it) and its commit:
    the run writes the user's rows back into the Store and the lake, then queues the user for the sweep
    again, and the sweep erases them. On the old code the user stayed in the lake, queued nowhere."""
    from notify_core import erasure_queue
    from notify_core.erasure import sweep_erasures
    from notify_core.ingest import batch

    source = write_retail(tmp_path / "retail.parquet")
    settings, store, lake = _setup(tmp_path)
    try:
        prepare_demo_landing(source=source, landing=settings.landing, seed=1)
        _ingest(settings, store, lake)
        extra = lake.read("users").filter(pl.col("user_id") == OTHER).with_columns(user_id=pl.lit("300"))
        extra.write_parquet(settings.landing / "users" / "late-signup.parquet")  # the next run has a change
        real_converge = batch.converge

        def erased_meanwhile(*args: Any, **kwargs: Any) -> Any:
            erase_user(VICTIM, store=store, file_roots=[settings.data_dir])  # `notify users delete`, elsewhere
            return real_converge(*args, **kwargs)

        monkeypatch.setattr(batch, "converge", erased_meanwhile)
        report = ingest_dataset("users", landing=settings.landing, lake=lake, store=store,
                                quarantine=settings.quarantine_root)
        monkeypatch.setattr(batch, "converge", real_converge)
        assert VICTIM in _user_ids(lake.read("users"))  # what the run wrote back, before the sweep
        sweep_erasures(store, file_roots=[settings.data_dir])  # the erasure_sweep job, on the queue
        assert _user_ids(lake.read("users")) == {OTHER, "300"}
        assert store.table(tables.USERS).get(VICTIM, tables.PROFILE_SK) is None
        assert erasure_queue.queued_erasures(store) == {}
        assert report.erasures_requeued == 1
        again = ingest_dataset("users", landing=settings.landing, lake=lake, store=store,
                               quarantine=settings.quarantine_root)
        assert again.erasures_requeued == 0 and VICTIM not in _user_ids(lake.read("users"))
    finally:
        store.close()


def test_the_register_drops_an_erased_users_rows_up_to_and_at_the_erasure_instant() -> None:
    """ErasureRegister.drop_erased: an erased user's row dated before or exactly at the erasure is refused (it
    is data the erasure covered), one dated after it is new data and kept, as is every other user's row."""
    from notify_core.erasure_register import ErasureRegister, pseudonym

    erased_at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    register = ErasureRegister({pseudonym("gone"): erased_at})
    frame = pl.DataFrame({
        "user_id": ["gone", "gone", "gone", "kept"],
        "ts": [erased_at - timedelta(days=1), erased_at, erased_at + timedelta(microseconds=1), erased_at],
    })
    kept, dropped = register.drop_erased(frame, time_column="ts")
    assert dropped == 2
    assert kept.rows() == [("gone", erased_at + timedelta(microseconds=1)), ("kept", erased_at)]
