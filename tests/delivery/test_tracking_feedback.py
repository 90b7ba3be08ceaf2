"""Tracking links through the gateway, and the closed loop: a click moves the user's next plan."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import uvicorn
from starlette.testclient import TestClient

from lambdas import track
from lambdas.gateway import build_app
from notify_core.delivery import DeliveryWorker, ManualClock, Message, SendResult, WorkerOptions
from notify_core.delivery.feedback import campaign_stats, planner_inputs, refresh_fatigue
from notify_core.delivery.synthetic import seed_campaigns, seed_due
from notify_core.delivery.tracking import PIXEL_GIF
from notify_core.events.consumer import EventConsumer
from notify_core.scheduling import plan_users
from notify_core.scheduling.affinity import hour_counts, shrunk_lift
from notify_core.scheduling.models import CAMPAIGNS, CANDIDATES, USERS
from notify_core.scheduling.store import write_plans
from notify_core.security.keyring import ephemeral_keyring
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.delivery.conftest import ScriptedChannel, minute_start


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LocalLog]:
    stream = LocalLog(tmp_path / "log.sqlite", poll_interval=0.002)
    yield stream
    stream.close()


class _Capturing(ScriptedChannel):
    """Delivers everything and keeps the messages (their signed links)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        self.messages.append(message)
        return super().send(message, idempotency_key=idempotency_key)


def _consume(store: SqliteStore, log: LocalLog, tmp_path: Path, clock: ManualClock) -> int:
    consumer = EventConsumer(stream=log, store=store, landing=tmp_path / "landing", group="t", max_batch=100,
                             clock=clock)
    out = consumer.run_once()
    consumer.close()
    return 0 if out is None else out.persisted


def test_click_redirects_to_the_campaign_and_open_returns_a_pixel(store: SqliteStore, log: LocalLog,
                                                                  tmp_path: Path, clock: ManualClock) -> None:
    keys = ephemeral_keyring("tracking", now=datetime.fromtimestamp(clock.now(), UTC))
    [item] = seed_due(store, n=1, start=minute_start(clock.now()))
    channel = _Capturing()
    DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, tracking_keys=keys,
                   options=WorkerOptions(concurrency=1)).run_until_idle()
    [message] = channel.messages
    nid = item["notification_id"]
    assert message.link.startswith(f"http://t/t/{nid}.") and message.link in message.body
    track.use(store=store, stream=log, keys=keys, clock=clock)
    try:
        client = TestClient(build_app())
        click_path = message.link.removeprefix("http://t")
        first = client.get(click_path, follow_redirects=False)
        clock.advance(1.5)  # a second click a moment later
        again = client.get(click_path, follow_redirects=False)
        pixel = client.get(message.open_pixel.removeprefix("http://t"))
        unsigned = client.get(f"/t/{nid}", follow_redirects=False)  # the bare id is no longer a link
        missing = client.get("/t/not-a-notification", follow_redirects=False)
    finally:
        track.use(store=None, stream=None)
    assert first.status_code == 302 and first.headers["location"] == f"https://shop.example.com/c/{item['campaign_id']}"
    assert again.status_code == 302 and again.headers["location"] == first.headers["location"]
    assert pixel.status_code == 200 and pixel.content == PIXEL_GIF and pixel.headers["content-type"] == "image/gif"
    assert unsigned.status_code == 404 and missing.status_code == 404
    assert _consume(store, log, tmp_path, clock) == 2  # one click (the repeat is not a new event) and one open
    types = sorted(e["type"] for e in store.table(tables.USER_EVENTS).query(item["user_id"]))
    assert types == ["notification_click", "notification_open"]
    marker = store.table(tables.NOTIFICATION_INTERACTIONS).get(nid, "click")
    assert marker is not None and marker["repeats"] == 1  # the repeat is recorded as a repeat
    day = datetime.fromtimestamp(clock.now(), UTC).date().isoformat()
    [row] = campaign_stats(store, item["campaign_id"], since_day=day)
    assert (row["sent"], row["opened"], row["clicked"], row["ctr"]) == (1, 1, 1, 1.0)  # unique clicks


def _serve(app: object) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    return server, thread, port


def test_end_to_end_a_click_moves_affinity_and_the_next_plan(store: SqliteStore, log: LocalLog,
                                                             tmp_path: Path, clock: ManualClock) -> None:
    today = datetime.fromtimestamp(clock.now(), UTC).date()
    tomorrow = today + timedelta(days=1)
    seed_campaigns(store, ["c1", "c2"])
    store.table(tables.USERS).put({"pk": "alice", "sk": tables.PROFILE_SK, "user_id": "alice", "first_name": "Alice"})
    users = pl.DataFrame([{"user_id": "alice", "timezone": "UTC", "daily_cap": 1, "quiet_start_hour": None,
                           "quiet_end_hour": None}], schema=USERS)
    camps = pl.DataFrame([{"campaign_id": c, "priority": 3, "cooldown_hours": 0, "daily_budget": None}
                          for c in ("c1", "c2")], schema=CAMPAIGNS)
    cands = pl.DataFrame([{"user_id": "alice", "campaign_id": "c1", "relevance": 0.9},
                          {"user_id": "alice", "campaign_id": "c2", "relevance": 0.8}], schema=CANDIDATES)
    prior = np.full(24, 1 / 24, dtype=np.float32)  # everyone's pattern: flat, so alice's own clicks decide

    def plan(day: date) -> pl.DataFrame:
        state = planner_inputs(store, ["alice"], plan_day=day)
        return plan_users(cands, users, camps, plan_day=day, history=state.history,
                          interactions=state.interactions.select("user_id", "ts", "type"), prior=prior).frame

    # today's plan, written to the Store and delivered by the worker
    first = plan(today)
    write_plans(store, first, user_ids=["alice"], plan_day=today.isoformat())
    send_at = first["send_at"][0].timestamp()
    clock.set(send_at)
    keys = ephemeral_keyring("tracking", now=datetime.fromtimestamp(clock.now(), UTC))
    channel = _Capturing()
    summary = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, tracking_keys=keys,
                             options=WorkerOptions(concurrency=1)).run_until_idle()
    assert summary.delivered == 1
    link_path = channel.messages[0].link.removeprefix("http://t")
    before = plan(tomorrow)

    # the click, ten minutes after the send, over HTTP through the local gateway, then one consumer batch
    clock.advance(600)
    clicked_at = datetime.fromtimestamp(clock.now(), UTC)
    track.use(store=store, stream=log, keys=keys, clock=clock)
    server, thread, port = _serve(build_app())
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}{link_path}", follow_redirects=False)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        track.use(store=None, stream=None)
    assert reply.status_code == 302
    assert _consume(store, log, tmp_path, clock) == 1

    state = planner_inputs(store, ["alice"], plan_day=tomorrow)
    assert state.history["interacted"].to_list() == [True]  # the sent notification now counts as answered
    as_of = datetime.combine(tomorrow, datetime.min.time(), tzinfo=UTC)
    lift = shrunk_lift(hour_counts(state.interactions, users, as_of=as_of, lookback_days=90), prior, strength=20.0)[0]
    assert lift[clicked_at.hour] > 1.3 and lift[clicked_at.hour] == lift.max()  # affinity moved to the click hour
    after = plan(tomorrow)
    hour_before, hour_after = before["send_at"][0].hour, after["send_at"][0].hour
    assert abs(hour_after - clicked_at.hour) % 24 in (0, 1, 23), (hour_before, hour_after, clicked_at.hour)
    assert after["affinity"][0] > before["affinity"][0]
    if abs(hour_before - clicked_at.hour) % 24 not in (0, 1, 23):
        assert hour_after != hour_before
    fatigue = refresh_fatigue(store, ["alice"], now=clicked_at + timedelta(seconds=1))
    assert fatigue["ignored_streak"].to_list() == [0]
