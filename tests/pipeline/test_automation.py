"""The automation conditions, evaluated the way the daemon does (quick: no daemon, no run; what each
asset last did is reported to a test instance, with the data version its run would record)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import pytest

from notify_assets.definitions import build_definitions
from notify_core.settings import load_settings

# The tests' own "now" (the daemon's evaluation time): the plan's partitions and "today" follow it.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

UPSTREAM = ("online_retail_landing", "users", "products", "campaigns", "purchases")
CHAIN = ("user_features", "product_features", "user_product", "product_embeddings", "purchase_embeddings",
         "user_embeddings", "campaign_embeddings", "campaign_index", "delivery_run")


class Tick:
    """Evaluates every automation condition once per call, carrying the cursor like the sensor does."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance, self.cursor = defs, instance, None

    def __call__(self, at: datetime | None = None) -> dict[str, set[str | None]]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                   evaluation_time=at or NOW)
        self.cursor = result.cursor
        keys = [dg.AssetKey(k) for k in (*UPSTREAM, *CHAIN, "notification_plan")]
        return {k.to_user_string(): result.get_requested_partitions(k) for k in keys if result.get_num_requested(k)}


def _landed(instance: dg.DagsterInstance, asset: str, version: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset, partition=partition, tags={"dagster/data_version": version}))


@pytest.fixture
def up_to_date(tmp_path: Path):
    defs = build_definitions(load_settings(data_dir=tmp_path / "data",
                                           plan_start_date=NOW.date() - timedelta(days=3)))
    day = NOW.date()
    with dg.instance_for_test() as instance:
        for asset in (*UPSTREAM, *CHAIN):
            _landed(instance, asset, "v1")
        for d in (day, day + timedelta(days=1)):
            _landed(instance, "notification_plan", "v1", d.isoformat())
        yield Tick(defs, instance), instance, day


def test_an_up_to_date_instance_requests_nothing(up_to_date) -> None:
    tick, _, _ = up_to_date
    assert tick() == {}  # the first evaluation: nothing (a daemon start launches no run)
    assert tick() == {}


def test_new_orders_flow_to_the_features_embeddings_and_then_the_plan_of_today_and_tomorrow(up_to_date) -> None:
    tick, instance, day = up_to_date
    tick()
    _landed(instance, "purchases", "v1")  # re-ingested, nothing changed: same data version
    assert tick() == {}
    _landed(instance, "purchases", "v2")
    assert set(tick()) == {"user_features", "product_features", "user_product", "purchase_embeddings",
                           "user_embeddings"}  # one run; products, campaigns and the plan wait
    for asset in ("user_features", "product_features", "user_product", "purchase_embeddings"):
        _landed(instance, asset, "v2")
    assert tick() == {}  # user_embeddings is in progress in the same run: the plan waits for it
    _landed(instance, "user_embeddings", "v2")
    assert tick() == {"notification_plan": {day.isoformat(), (day + timedelta(days=1)).isoformat()}}
    assert tick() == {}  # requested once: no duplicate re-plan


def test_a_campaign_change_rebuilds_the_index_then_replans(up_to_date) -> None:
    tick, instance, day = up_to_date
    tick()
    _landed(instance, "campaigns", "v2")
    assert set(tick()) == {"campaign_embeddings", "campaign_index"}
    _landed(instance, "campaign_embeddings", "v2")
    _landed(instance, "campaign_index", "v2")
    assert set(tick()["notification_plan"]) == {day.isoformat(), (day + timedelta(days=1)).isoformat()}


def test_an_unchanged_upstream_skips_every_step(up_to_date) -> None:
    tick, instance, _ = up_to_date
    tick()
    for asset in ("users", "products", "campaigns", "purchases"):
        _landed(instance, asset, "v1")
    assert tick() == {}


def test_at_midnight_utc_the_day_after_tomorrow_is_planned_ahead(up_to_date) -> None:
    """A new partition appears at 00:00 UTC (the new "tomorrow") and is planned at once: a day ahead of
    every time zone's local day (UTC+14 starts its day at 10:00 UTC the day before)."""
    tick, _, day = up_to_date
    tick(datetime.combine(day, time(23, 58), UTC))
    assert tick(datetime.combine(day, time(23, 59), UTC)) == {}
    after = tick(datetime.combine(day + timedelta(days=1), time(0, 1), UTC))
    assert after == {"notification_plan": {(day + timedelta(days=2)).isoformat()}}


def test_freshness_checks_read_the_event_log(tmp_path: Path) -> None:
    """"Today's plan exists" and "the index is not older than its campaigns", as the UI shows them."""
    from notify_assets.automation import plan_partitions
    from notify_assets.recommendation import index_not_older_than_campaigns
    from notify_assets.scheduling import build_plan_asset, plan_exists_check
    from notify_core.clock import ManualClock
    from notify_resources.resources import NotifyResource

    now = NOW  # the check's "today" is the resource's clock
    day = now.date()
    plan_check = plan_exists_check(build_plan_asset(plan_partitions(day - timedelta(days=3),
                                                                    clock=ManualClock(now))))
    notify = NotifyResource(data_dir=str(tmp_path), clock_start=now.isoformat())
    with dg.instance_for_test() as instance:
        def run(check: dg.AssetChecksDefinition) -> dg.AssetCheckResult:
            context = dg.build_asset_check_context(instance=instance)
            if check is plan_check:
                return check(context, notify=notify)  # type: ignore[no-any-return]
            return check(context)  # type: ignore[no-any-return]

        assert not run(plan_check).passed
        _landed(instance, "notification_plan", "v1", day.isoformat())
        result = run(plan_check)
        assert result.passed and result.metadata["missing"].value == (day + timedelta(days=1)).isoformat()

        assert not run(index_not_older_than_campaigns).passed  # never built
        _landed(instance, "campaign_embeddings", "v1")
        _landed(instance, "campaign_index", "v1")
        assert run(index_not_older_than_campaigns).passed
        _landed(instance, "campaign_embeddings", "v1")  # re-materialised, unchanged: still fresh
        assert run(index_not_older_than_campaigns).passed
        _landed(instance, "campaign_embeddings", "v2")  # campaigns changed after the index was built
        assert not run(index_not_older_than_campaigns).passed


def test_orders_from_the_stream_reach_the_chain(tmp_path: Path) -> None:
    """``notify consume`` writes each batch's order lines as a landing file; the landing sensor asks for a
    purchases ingestion of it; the ingestion records a new data version, which the chain above follows."""
    import json
    import threading

    from notify_core.events import capture_events
    from notify_core.events.consumer import EventConsumer
    from notify_core.store.sqlite import SqliteStore
    from notify_core.stream.local_log import LocalLog
    from notify_resources import resources_for
    from notify_sensors.landing import INGEST_JOB, landing_sensor
    from tests.events.helpers import events_clock, order

    settings = load_settings(data_dir=tmp_path / "data")
    defs = build_definitions(settings)
    log = LocalLog(tmp_path / "stream.sqlite")
    store = SqliteStore(tmp_path / "events.sqlite")
    try:
        assert capture_events(json.dumps([order(i) for i in range(6)]), stream=log, clock=events_clock()).accepted == 6
        consumer = EventConsumer(stream=log, store=store, landing=settings.landing / "purchases", poll_timeout=0.1,
                                 clock=events_clock())
        consumer.run(stop=threading.Event(), max_records=6, idle_exit=5)
        consumer.close()
    finally:
        store.close()
        log.close()
    assert list((settings.landing / "purchases").glob("stream-*.parquet"))
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources_for(settings)) as context:
            tick = landing_sensor(context)
        [request] = tick.run_requests
        assert request.asset_selection == [dg.AssetKey("purchases")]  # only the dataset that landed
        result = defs.resolve_job_def(INGEST_JOB).execute_in_process(
            instance=instance, asset_selection=request.asset_selection, tags=request.tags)
        assert result.success
        [mat] = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey("purchases")]
        assert mat.metadata["lake_inserted"].value == 12 and mat.tags["dagster/data_version"]
        with dg.build_sensor_context(instance=instance, resources=resources_for(settings)) as context:
            assert not landing_sensor(context).run_requests  # ingested as it is: nothing more to do
