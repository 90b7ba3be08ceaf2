"""The consumer's order files leave the landing folder once ingestion has landed them in the lake.

``notify consume`` writes each batch's order lines as ``landing/purchases/stream-<hash>.parquet``. Before
session 40 nothing removed them: at one file per batch with orders they piled up by the thousand a day, every
purchases ingestion read all of them again and the landing sensor stat-ed all of them every 5 s, so each run
took longer than the last. Now each ingestion retires the ones it landed, and records a fingerprint without
them, so the sensor sees the folder as ingested; a file that lands after a run still starts the next one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import dagster as dg
import polars as pl

from notify_assets.definitions import build_definitions
from notify_core.events import capture_events
from notify_core.events.consumer import EventConsumer
from notify_core.lake import Lake
from notify_core.settings import NotifySettings, load_settings
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_resources import resources_for
from notify_sensors.landing import INGEST_JOB, landing_sensor
from tests.events.helpers import events_clock, order

ROUNDS = 4
ORDERS = 6  # a round's orders, two lines each


def _consume(settings: NotifySettings, tmp_path: Path, first: int) -> None:
    log = LocalLog(tmp_path / "stream.sqlite")
    store = SqliteStore(tmp_path / "events.sqlite")
    try:
        orders = [order(i) for i in range(first, first + ORDERS)]
        assert capture_events(json.dumps(orders), stream=log, clock=events_clock()).accepted == ORDERS
        consumer = EventConsumer(stream=log, store=store, landing=settings.landing / "purchases", poll_timeout=0.1,
                                 clock=events_clock())
        consumer.run(stop=threading.Event(), max_records=ORDERS, idle_exit=5)
        consumer.close()
    finally:
        store.close()
        log.close()


def _requests(instance: dg.DagsterInstance, settings: NotifySettings) -> list[dg.RunRequest]:
    with dg.build_sensor_context(instance=instance, resources=resources_for(settings)) as context:
        return list(landing_sensor(context).run_requests or [])


def test_ingested_stream_files_are_retired_and_the_folder_stays_ingested(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    defs = build_definitions(settings)
    purchases = settings.landing / "purchases"
    purchases.mkdir(parents=True)
    operator_file = purchases / "export.csv"  # a file someone dropped: theirs, never retired
    operator_file.write_text("order_id,user_id,product_id,quantity,unit_price,ts,country,is_return\n"
                             "x1,u1,p1,1,2.0,2024-03-01T09:00:00Z,United Kingdom,false\n")
    with dg.instance_for_test() as instance:
        for round_ in range(ROUNDS):
            _consume(settings, tmp_path, first=round_ * ORDERS)
            assert list(purchases.glob("stream-*.parquet"))
            [request] = _requests(instance, settings)
            assert request.asset_selection == [dg.AssetKey("purchases")]
            result = defs.resolve_job_def(INGEST_JOB).execute_in_process(
                instance=instance, asset_selection=request.asset_selection, tags=request.tags)
            assert result.success
            # landed and retired: only the operator's file is left, and the sensor has nothing to ask for
            assert sorted(p.name for p in purchases.iterdir()) == ["export.csv"]
            assert _requests(instance, settings) == []
        lake = Lake(settings.lake_root).read("purchases")
        assert lake.filter(pl.col("order_id").str.starts_with("o")).height == 2 * ORDERS * ROUNDS  # nothing lost
        assert operator_file.exists()
        # a later batch starts the next run, as before
        _consume(settings, tmp_path, first=ROUNDS * ORDERS)
        assert len(_requests(instance, settings)) == 1


def test_a_file_snapshot_taken_while_ingestion_retires_a_file_holds_its_rows_somewhere(tmp_path: Path) -> None:
    """The backup reads the landing folder before the lake: a file retired between the two reads has its rows
    in the lake by then. Read the other way round (the order before session 40), the snapshot held the lake
    from before the commit and the landing folder from after the retirement: the orders in neither."""
    from notify_core.backup.files import FileBackup
    from notify_core.backup.service import FOLDERS
    from notify_core.backup.target import FolderBlobs

    data = tmp_path / "data"
    stream_file = data / "landing" / "purchases" / "stream-abc.parquet"
    lake_file = data / "lake" / "purchases" / "month=2024-03.parquet"
    stream_file.parent.mkdir(parents=True)
    lake_file.parent.mkdir(parents=True)
    stream_file.write_bytes(b"the batch's order lines")
    lake_file.write_bytes(b"the lake before the commit")

    class IngestingMeanwhile(FileBackup):
        """Ingestion commits the lake and retires the file while the snapshot is between two folders."""

        done = False

        def _digest(self, path: Path, rel: str) -> str:
            if not self.done and rel.startswith(f"{self.folders[1]}/"):  # the first folder read, not the second
                self.done = True
                lake_file.write_bytes(b"the lake with the batch's order lines")
                stream_file.unlink()
            return super()._digest(path, rel)

    backup = IngestingMeanwhile(FolderBlobs(tmp_path / "backup"), root=data, folders=list(FOLDERS),
                                clock=events_clock())
    backup.snapshot()
    restored = tmp_path / "restored"
    FileBackup(FolderBlobs(tmp_path / "backup"), root=restored, folders=[], clock=events_clock()).restore(restored)
    in_landing = (restored / "landing" / "purchases" / "stream-abc.parquet").exists()
    in_lake = (restored / "lake" / "purchases" / "month=2024-03.parquet").read_bytes() == (
        b"the lake with the batch's order lines")
    assert in_landing or in_lake
