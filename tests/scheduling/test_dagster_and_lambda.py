"""The asset (materialised on a small lake fixture), the stage job the CLI runs, the re-plan sensor, and the
generate_schedule Lambda with real event shapes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.embeddings.store import CAMPAIGN, USER, persist, save_state, vector_series
from notify_core.lake import Lake
from notify_core.repositories import save_frame
from notify_core.schemas import CAMPAIGNS, USERS
from notify_core.settings import NotifySettings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore

# The tests' own "now": midday before the planned day, so the whole day lies ahead. Every date below is
# built from it, and the Store, the asset, the sensor and the Lambda all read this clock, not the calendar.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = (NOW + timedelta(days=1)).date()
DIM = 8


def _clock() -> ManualClock:
    return ManualClock(NOW)


def _seed(data_dir: Path) -> None:
    """Users, campaigns and their vectors in the lake and the Store, as the upstream assets leave them."""
    rng = np.random.default_rng(3)
    lake = Lake(data_dir / "lake")
    zones = ["Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
    users = pl.DataFrame({
        "user_id": [f"u{i}" for i in range(12)], "country": ["GB"] * 12, "timezone": [zones[i % 4] for i in range(12)],
        "signup_date": [date(2011, 1, 1)] * 12, "daily_cap": [i % 6 for i in range(12)],
        "quiet_start_hour": [22] * 12, "quiet_end_hour": [8] * 12, "channels": [["push"]] * 12,
        "opted_out_categories": [["toys"] if i == 1 else [] for i in range(12)],
    }, schema=USERS)
    camps = pl.DataFrame({
        "campaign_id": [f"c{j}" for j in range(6)], "name": ["n"] * 6, "text": ["t"] * 6,
        "category": ["toys", "home", "home", "garden", "garden", "home"], "product_ids": [[]] * 6,
        "priority": [1, 2, 3, 4, 5, 3], "start_date": [DAY - timedelta(days=30)] * 6,
        "end_date": [DAY + timedelta(days=30)] * 6,
        "target_countries": [[]] * 6, "cooldown_hours": [24] * 6, "daily_budget": [None, None, 3, None, None, None],
        "url": ["u"] * 6, "template": ["t"] * 6, "status": ["active"] * 5 + ["paused"],
    }, schema=CAMPAIGNS)
    lake.merge("users", users)
    lake.merge("campaigns", camps)
    store = SqliteStore(data_dir / "store.sqlite")
    save_frame(store, tables.USERS, users)
    save_frame(store, tables.CAMPAIGNS, camps)
    now = NOW - timedelta(days=22)
    for kind, ids in ((USER, users["user_id"].to_list()), (CAMPAIGN, camps["campaign_id"].to_list())):
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        state = pl.DataFrame({"id": ids, "content_hash": ids, "model": ["test"] * len(ids),
                              "updated_at": [now] * len(ids)}).with_columns(vector_series(vectors))
        save_state(lake, kind, state)
        persist(store, kind, state)
    store.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    _seed(tmp_path)
    return tmp_path


def _stored(data_dir: Path) -> list[dict]:
    store = SqliteStore(data_dir / "store.sqlite", clock=_clock())
    try:
        return list(store.table(tables.PLANS).scan())
    finally:
        store.close()


def test_asset_materialises_and_replans_idempotently(data_dir: Path,
                                                     dagster_instance: dg.DagsterInstance) -> None:
    from notify_assets.automation import plan_partitions
    from notify_assets.scheduling import build_plan_asset
    from notify_resources.resources import NotifyResource

    notification_plan = build_plan_asset(plan_partitions(DAY))

    resources = {"notify": NotifyResource(data_dir=str(data_dir), clock_start=NOW.isoformat())}
    instance = dagster_instance
    first = dg.materialize([notification_plan], partition_key=DAY.isoformat(), resources=resources, instance=instance)
    assert first.success
    meta = first.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    planned = meta["notifications_planned"].value
    assert planned > 0 and meta["capacity_violations"].value == 0 and meta["candidate_source"].value
    checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
    assert all(e.passed for e in checks.values()) and "reaches_users" in checks
    reach = checks["reaches_users"].metadata
    assert reach["users_reachable"].value >= reach["users_with_notifications"].value > 0
    items = _stored(data_dir)
    assert len(items) == planned
    assert not any(i["campaign_id"] == "c5" for i in items)  # paused
    assert not any(i["user_id"] == "u1" and i["campaign_id"] == "c0" for i in items)  # opted out of toys
    assert sum(1 for i in items if i["campaign_id"] == "c2") <= 3  # budget
    second = dg.materialize([notification_plan], partition_key=DAY.isoformat(), resources=resources, instance=instance)
    meta2 = second.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta2["store_inserted"].value == 0 and meta2["unchanged"].value == planned and meta2["cancelled"].value == 0


def test_an_automated_replan_after_user_vectors_changed_plans_only_those_users(
        data_dir: Path, dagster_instance: dg.DagsterInstance) -> None:
    """user_embeddings records the users it changed (a Store set; its id and size in the metadata); the
    automation's re-plan of a day already planned plans just them, with the others' minute loads and budget
    use counted; a campaign change, a set whose users were all erased since, or ids in the metadata (runs
    before the sets) re-plan everyone."""
    from notify_assets.automation import (
        AUTOMATED_RUN_TAG,
        CHANGED_USERS,
        CHANGED_USERS_SET,
        REPLAN_UPDATES_MAX,
        plan_partitions,
    )
    from notify_assets.scheduling import build_plan_asset
    from notify_core.erasure import erase_user
    from notify_core.scheduling.replan_users import record_changed_users
    from notify_resources.resources import NotifyResource

    plan = build_plan_asset(plan_partitions(DAY))
    resources = {"notify": NotifyResource(data_dir=str(data_dir), clock_start=NOW.isoformat())}
    instance = dagster_instance
    automated = {AUTOMATED_RUN_TAG: "true"}
    store = SqliteStore(data_dir / "store.sqlite", clock=_clock())

    def replan(**tags: str) -> dict:
        result = dg.materialize([plan], partition_key=DAY.isoformat(), resources=resources, instance=instance,
                                tags=tags)
        assert result.success
        return {k: v.value for k, v in
                result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata.items()}

    def vectors_changed(*users: str) -> None:
        instance.report_runless_asset_event(dg.AssetMaterialization("user_embeddings", metadata={
            CHANGED_USERS: len(users), CHANGED_USERS_SET: record_changed_users(store, users, now=NOW)}))

    assert replan(**automated)["users_replanned"] == "all"  # the day was never planned
    before = {(i["pk"], i["sk"]): i["send_at"] for i in _stored(data_dir) if i["pk"] != "u3"}
    vectors_changed("u3")
    assert replan()["users_replanned"] == "all"  # by hand (notify run, the UI): the whole day
    vectors_changed("u3")
    vectors_changed()  # an update that changed nobody
    meta = replan(**automated)
    assert meta["users_replanned"] == 1 and meta["users_planned"] == 1
    items = _stored(data_dir)
    assert {(i["pk"], i["sk"]): i["send_at"] for i in items if i["pk"] != "u3"} == before  # the others untouched
    live = [i for i in items if i.get("status") != "cancelled"]
    assert sum(1 for i in live if i["campaign_id"] == "c2") <= 3  # the budget counts the others' use

    vectors_changed("u3", "u2")
    erase_user("u2", store=store, clock=_clock())  # its set item goes with it: the re-plan is u3's alone
    assert replan(**automated)["users_replanned"] == 1
    vectors_changed("u2")  # u2 is gone again below: a set of nobody left cannot say who changed
    store.table(tables.REPLAN_USERS).delete(*next(
        (str(i["pk"]), str(i["sk"])) for i in store.table(tables.REPLAN_USERS).scan() if i["user_id"] == "u2"))
    assert replan(**automated)["users_replanned"] == "all"
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "user_embeddings", metadata={CHANGED_USERS: dg.MetadataValue.json(["u3"])}))  # the ids themselves
    assert replan(**automated)["users_replanned"] == "all"

    vectors_changed("u1")  # then more updates than the re-plan reads (the newest first): u1's would be missed
    for _ in range(REPLAN_UPDATES_MAX):
        vectors_changed("u3")
    assert replan(**automated)["users_replanned"] == "all"

    instance.report_runless_asset_event(dg.AssetMaterialization("campaign_embeddings",
                                                                tags={"dagster/data_version": "v2"}))
    vectors_changed("u3")
    assert replan(**automated)["users_replanned"] == "all"  # the campaigns changed: everyone
    store.close()


def test_plan_partitions_and_notify_run_follow_the_injected_clock(data_dir: Path) -> None:
    """NOTIFY_CLOCK_START, not the calendar, decides today's partition and the plan's last one (tomorrow)."""
    from notify_assets.definitions import MAIN_JOB, build_definitions
    from notify_assets.scheduling import PLAN_ASSET, today_partition

    settings = NotifySettings(data_dir=data_dir, clock_start=NOW)
    assert today_partition(settings.clock()) == NOW.date().isoformat()
    defs = build_definitions(settings)
    keys = defs.resolve_assets_def(PLAN_ASSET).partitions_def.get_partition_keys()
    assert keys[0] == NOW.date().isoformat()  # the deployment's first day, by the clock
    assert keys[-1] == DAY.isoformat()  # tomorrow, planned ahead
    assert defs.resolve_job_def(MAIN_JOB).partitions_def.get_partition_keys() == keys


def test_lambda_direct_and_http(data_dir: Path) -> None:
    from lambdas import generate_schedule

    store = SqliteStore(data_dir / "store.sqlite", clock=_clock())
    generate_schedule.use_store(store, clock=_clock())
    try:
        reply = generate_schedule.handler({"user_ids": ["u2", "u3", "nobody"], "plan_day": DAY.isoformat()}, None)
        assert reply["statusCode"] == 200 and reply["users_planned"] == 2 and reply["notifications_planned"] > 0
        from tests import auth

        event = {"version": "2.0", "routeKey": "POST /v1/schedules", "rawPath": "/v1/schedules",
                 "headers": {"content-type": "application/json", **auth.headers()},
                 "requestContext": {"requestId": "r1", "stage": "$default",
                                    "http": {"method": "POST", "path": "/v1/schedules", "sourceIp": "203.0.113.9"}},
                 "body": json.dumps({"user_ids": ["u2", "u3"], "plan_day": DAY.isoformat()})}
        http = generate_schedule.handler(event, None)
        body = json.loads(http["body"])
        assert http["statusCode"] == 200 and body["store_inserted"] == 0 and body["unchanged"] > 0
        for bad in ({"user_ids": []}, {"user_ids": ["a"], "plan_day": "24/11/2026"}, [1, 2]):
            assert generate_schedule.handler(bad, None)["statusCode"] == 400
        bad_http = generate_schedule.handler({**event, "body": "{not json"}, None)
        assert bad_http["statusCode"] == 400
    finally:
        generate_schedule.use_store(None)
        store.close()


def test_the_asset_ranks_the_recommenders_candidates_in_worker_processes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With an index published, the asset plans from the recommender; with NOTIFY_PLAN_CANDIDATE_WORKERS=2 it
    ranks in two spawned processes that open the deployment's own (sealed) Store from the settings, and it
    stores the day the one-process run stores."""
    import shutil

    from notify_assets.automation import plan_partitions
    from notify_assets.scheduling import build_plan_asset
    from notify_core.recommend.artefacts import LocalArtefactStore
    from notify_core.recommend.build import build_campaign_index
    from notify_core.recommend.index import publish
    from notify_core.scheduling import candidate_pool
    from notify_resources.resources import NotifyResource

    one = tmp_path / "one"
    _seed(one)
    built = build_campaign_index(Lake(one / "lake"), LocalArtefactStore(one / "artefacts"), now=NOW, min_recall=0.0)
    publish(LocalArtefactStore(one / "artefacts"), built.saved.version)
    pooled = tmp_path / "pooled"
    shutil.copytree(one, pooled)
    monkeypatch.setattr(candidate_pool, "POOL_MIN_USERS", 0)  # 12 users: start the workers all the same
    started: list[int] = []
    call = candidate_pool.CandidatePool.__call__

    def counted(self: candidate_pool.CandidatePool, user_ids: list[str]) -> pl.DataFrame:
        started.append(self.workers)
        return call(self, user_ids)

    monkeypatch.setattr(candidate_pool.CandidatePool, "__call__", counted)
    days = []
    for folder, workers in ((one, "1"), (pooled, "2")):
        monkeypatch.setenv("NOTIFY_PLAN_CANDIDATE_WORKERS", workers)
        resources = {"notify": NotifyResource(data_dir=str(folder), clock_start=NOW.isoformat())}
        result = dg.materialize([build_plan_asset(plan_partitions(DAY))], partition_key=DAY.isoformat(),
                                resources=resources)
        assert result.success
        meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
        assert meta["candidate_source"].value == "recommender" and meta["notifications_planned"].value > 0
        days.append(sorted(((i["pk"], i["sk"]), i) for i in _stored(folder)))
    assert started == [2]  # the one-process run started no pool; the other asked its two workers once
    assert days[0] and days[0] == days[1]
