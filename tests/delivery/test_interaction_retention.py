"""First open, click and unsubscribe markers live as long as the links they answer can resolve, then go.

A marker is only read through ``tracking.lookup``, which needs the notification's ``deliveries`` row (30 days,
the log's retention). Before session 40 the markers carried no TTL: one row per first open, click and
unsubscribe stayed in ``notification_interactions`` for good, long after any link of theirs could resolve.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from notify_core.clock import ManualClock, utcnow
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import lookup, sign_token, track
from notify_core.errors import NotFoundError
from notify_core.preferences import OPT_OUT_EVENT, opt_out_from_link
from notify_core.security.keyring import ephemeral_keyring
from notify_core.slo import LOG_RETENTION_DAYS
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.delivery.conftest import ScriptedChannel, minute_start

DAY = 86400.0


def _markers_in_file(store: SqliteStore) -> int:
    conn = sqlite3.connect(store.path)
    try:
        return int(conn.execute(f'SELECT count(*) FROM "{tables.NOTIFICATION_INTERACTIONS}"').fetchone()[0])
    finally:
        conn.close()


def test_markers_outlive_every_link_that_resolves_and_then_are_swept(store: SqliteStore, clock: ManualClock,
                                                                     tmp_path: Path) -> None:
    keys = ephemeral_keyring("tracking", now=utcnow(clock))
    log = LocalLog(tmp_path / "log.sqlite", clock=clock)
    [item] = seed_due(store, n=1, start=minute_start(clock.now()))
    DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock,
                   options=WorkerOptions(concurrency=1)).run_until_idle()
    nid = str(item["notification_id"])
    click = sign_token(keys, nid, kind="click")
    clock.advance(3 * DAY)  # opened and clicked a few days later
    assert track(store, log, token=sign_token(keys, nid, kind="open"), kind="open", keys=keys, clock=clock).first
    assert track(store, log, token=click, kind="click", keys=keys, clock=clock).first
    ref = lookup(store, nid, now=utcnow(clock))
    assert opt_out_from_link(store, user_id=ref.user_id, campaign_id=ref.campaign_id, notification_id=nid,
                             day=ref.day, now=utcnow(clock)).first
    # the last day the link resolves: the click is still a repeat, not a second first click
    clock.advance((LOG_RETENTION_DAYS - 3) * DAY - 60)
    store.sweep_expired()
    assert not track(store, log, token=click, kind="click", keys=keys, clock=clock).first
    assert store.table(tables.NOTIFICATION_INTERACTIONS).get(nid, "click")["repeats"] == 1
    # once the deliveries row has gone, no link of it resolves; its markers go with the next sweep
    clock.advance(4 * DAY)
    with pytest.raises(NotFoundError):
        lookup(store, nid, now=utcnow(clock))
    assert store.sweep_expired() > 0
    assert _markers_in_file(store) == 0
    assert store.table(tables.NOTIFICATION_INTERACTIONS).get(nid, OPT_OUT_EVENT) is None
    log.close()
