"""Keys and the audit chain on DynamoDB Local (the same code as on SQLite: only the Store port)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from notify_core.clock import ManualClock
from notify_core.errors import UnauthorizedError
from notify_core.security import audit
from notify_core.security.keys import KeyRing
from notify_core.store import tables
from notify_core.store.dynamodb import DynamoStore
from tests.servers import scratch_dynamo_store


@pytest.fixture
def dynamo(dynamodb_endpoint: str) -> Iterator[DynamoStore]:
    with scratch_dynamo_store(dynamodb_endpoint, name="sec") as store:
        yield store


@pytest.mark.dynamodb
def test_keys_and_audit_chain_on_dynamodb(dynamo: DynamoStore) -> None:
    clock = ManualClock(1_900_000_000)
    ring = KeyRing(dynamo, pepper=b"p" * 32, clock=clock)
    key, token = ring.create(name="app", scopes=["events:write"], actor="t", source="t")
    assert ring.authorize(token, "events:write").key_id == key.key_id
    new, new_token = ring.rotate(key.key_id, overlap_s=60, actor="t", source="t")
    clock.advance(61)
    with pytest.raises(UnauthorizedError):
        ring.authenticate(token)
    ring.revoke(new.key_id, actor="t", source="t")
    with pytest.raises(UnauthorizedError):
        ring.authenticate(new_token)
    report = audit.verify(dynamo)
    assert report.ok and report.entries == 3
    assert [e.action for e in audit.entries(dynamo)] == ["key.create", "key.rotate", "key.revoke"]
    dynamo.table(tables.AUDIT_LOG).delete(audit.LOG_PK, "000000000002")
    assert not audit.verify(dynamo).ok


def test_keys_and_audit_chain_on_moto() -> None:
    """The same walk on moto (a quick unit check of the value mapping; the test above is the real one)."""
    from moto import mock_aws

    with mock_aws():
        session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="eu-west-1")
        store = DynamoStore(region="eu-west-1", table_prefix="moto_", session=session)
        try:
            clock = ManualClock(1_900_000_000)
            ring = KeyRing(store, pepper=b"p" * 32, clock=clock)
            key, token = ring.create(name="app", scopes=["events:write"], actor="t", source="t")
            assert ring.authorize(token, "events:write").expires_at == key.expires_at
            ring.revoke(key.key_id, actor="t", source="t")
            with pytest.raises(UnauthorizedError):
                ring.authenticate(token)
            audit.record(store, clock=clock, action="campaign.update", actor="k", source="ip",
                         before={"daily_budget": 1.5, "ids": ["a"]}, after={"daily_budget": 2, "x": None})
            assert audit.verify(store).ok and audit.verify(store).entries == 3
        finally:
            store.close()


@pytest.mark.dynamodb
def test_preferences_opt_out_history_and_stats_on_dynamodb(dynamo: DynamoStore) -> None:
    """Issue 19's Store paths on DynamoDB Local: the conditional profile update, the opt-out marker and its
    ``counted`` flag, the opt_out event, the counters, and the history's partition queries."""
    from datetime import UTC, date, datetime

    from notify_core.campaigns.stats import daily_stats
    from notify_core.errors import NotFoundError
    from notify_core.history import user_history
    from notify_core.preferences import Preferences, get_preferences, opt_out_from_link, put_preferences

    now = datetime(2030, 3, 1, 12, tzinfo=UTC)
    dynamo.table(tables.USERS).put({"pk": "u", "sk": tables.PROFILE_SK, "user_id": "u", "country": "GB"})
    dynamo.table(tables.CAMPAIGNS).put({"pk": "c", "sk": tables.CAMPAIGN_SK, "campaign_id": "c", "category": "toys"})
    dynamo.table(tables.PLANS).put({"pk": "u", "sk": tables.plan_sk("2030-03-01", "n1"), "notification_id": "n1",
                                    "campaign_id": "c", "plan_day": "2030-03-01", "send_at": "2030-03-01T09:00:00Z",
                                    "status": "sent"})
    put_preferences(dynamo, "u", Preferences(daily_cap=2, timezone="Europe/London"), now=now)
    assert get_preferences(dynamo, "u").daily_cap == 2
    with pytest.raises(NotFoundError):
        put_preferences(dynamo, "ghost", Preferences(), now=now)
    assert dynamo.table(tables.USERS).get("ghost", tables.PROFILE_SK) is None
    for _ in range(2):  # the second is a repeat: no new event, no new count
        out = opt_out_from_link(dynamo, user_id="u", campaign_id="c", notification_id="n1", day="2030-03-01",
                                now=now)
    assert out.after.opted_out_categories == ["toys"] and not out.first
    assert [e["type"] for e in dynamo.table(tables.USER_EVENTS).query("u")] == ["opt_out"]
    days, total = daily_stats(dynamo, "c", since=date(2030, 3, 1), until=date(2030, 3, 1), today=date(2030, 3, 1))
    assert total.opt_outs == 1 and days[0].day == "2030-03-01"
    (entry,) = user_history(dynamo, "u").items
    assert entry.status == "opted_out" and entry.notification_id == "n1"
