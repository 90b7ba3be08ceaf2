"""A re-plan counts the notifications the delivery worker holds (claimed, or waiting for a retry) as sent.

The worker claims a schedule item (``pending -> claimed``) and records its outcome there; the user's
``plans`` item says ``sent`` only once the worker's derived rows are flushed (a delivered outcome; a retry
writes none). The planner read "already sent today" from the ``plans`` items alone, so a re-plan in that
window (a notification in flight, retrying after a 5xx, or held by a worker killed before its flush)
planned the user's full cap again: the worker then delivered the in-flight one as well, 6 in a day where
the product promises at most 5. Both backends: SQLite and a real DynamoDB Local.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from notify_core.clock import ManualClock
from notify_core.lifecycle import CANCELLED, CLAIMED, PENDING, RETRY_SCHEDULED, SENT
from notify_core.scheduling.service import plan_and_store
from notify_core.store import tables
from notify_core.store.dynamodb import DynamoStore
from notify_core.store.port import Condition, Item, Store
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import campaigns, candidates, users
from tests.servers import without_wall_clock_expiry

# Today noon by the real calendar, planning tomorrow: DynamoDB Local sweeps expired items by the machine's
# own clock, so the items' TTLs (days after their send time) must lie ahead of it, not of a fixed date.
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
DAY = (NOW + timedelta(days=1)).date()

USERS = users([("u1", "UTC", 5, None, None)])
CAMPS = campaigns([(f"c{j}", 1 + j % 3, 0, None) for j in range(10)])
CANDS = candidates([("u1", f"c{j}", 0.9 - j * 0.05) for j in range(10)])


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = ManualClock(NOW)
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
        yield store
        store.close()
        return
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    prefix = f"inflight_{uuid.uuid4().hex[:12]}_"
    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-1")
    dynamo = without_wall_clock_expiry(DynamoStore(region="eu-west-1", endpoint_url=endpoint, table_prefix=prefix,
                                                   session=session, clock=clock))
    yield dynamo
    for name in dynamo.client.list_tables(ExclusiveStartTableName=prefix, Limit=100)["TableNames"]:
        if name.startswith(prefix):
            dynamo.client.delete_table(TableName=name)
    dynamo.close()


def _plan(store: Store, now: datetime | None) -> None:
    plan_and_store(store, users=USERS, campaigns=CAMPS, candidates=CANDS, plan_day=DAY, now=now,
                   pipeline=False, writer_process=False)


def _schedules(store: Store) -> list[Item]:
    return [i for i in store.table(tables.SCHEDULES).scan() if i.get("user_id") == "u1"]


@pytest.mark.parametrize("held", [CLAIMED, RETRY_SCHEDULED, SENT])
def test_a_replan_while_a_notification_is_in_flight_keeps_the_daily_cap(backend: Store, held: str) -> None:
    _plan(backend, None)  # the day's plan, made the day before
    planned = sorted(_schedules(backend), key=lambda i: str(i["send_at"]))
    assert len(planned) == 5
    first = planned[0]
    # The delivery worker claims the first notification when it is due (the claim's write, as
    # Claims.claim_batch makes it); a 5xx may then move it to retry_scheduled. Its plans item still
    # says pending: no outcome has been flushed (or, ``sent``, the worker committed the outcome and was killed
    # before its flush: the minute-close repair writes the plans item later).
    due = datetime.fromisoformat(str(first["send_at"]).replace("Z", "+00:00"))
    fields: dict[str, object] = {"status": CLAIMED, "claim_token": "t1", "lease_until": due.timestamp() + 60,
                                 "attempt": 1, "worker": "w1"}
    backend.table(tables.SCHEDULES).update(first["pk"], first["sk"], set=fields,
                                           condition=Condition.matches(status=PENDING))
    if held == RETRY_SCHEDULED:
        backend.table(tables.SCHEDULES).update(first["pk"], first["sk"], set={
            "status": RETRY_SCHEDULED, "next_attempt_at": due.timestamp() + 5}, condition=Condition.matches(
                claim_token="t1"))
    elif held == SENT:  # delivered and committed; its derived rows still queued for the worker's flush
        backend.table(tables.SCHEDULES).update(first["pk"], first["sk"], set={
            "status": SENT, "delivered_at": first["send_at"]}, condition=Condition.matches(claim_token="t1"))

    _plan(backend, due + timedelta(minutes=1))  # a re-plan a minute later (new embeddings, say)

    live = [i for i in _schedules(backend) if i["status"] != CANCELLED]
    assert first["notification_id"] in {i["notification_id"] for i in live}  # the worker's, left alone
    assert len(live) <= 5, f"{len(live)} notifications for the day: {sorted(i['status'] for i in live)}"
