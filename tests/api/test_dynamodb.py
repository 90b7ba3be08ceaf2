"""Keys and the audit chain on DynamoDB Local (the same code as on SQLite: only the Store port)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from notify_core.clock import ManualClock
from notify_core.errors import UnauthorizedError
from notify_core.security import audit
from notify_core.security.keys import KeyRing
from notify_core.store import tables
from notify_core.store.dynamodb import DynamoStore


@pytest.fixture
def dynamo(dynamodb_endpoint: str) -> Iterator[DynamoStore]:
    prefix = f"sec_{uuid.uuid4().hex[:12]}_"
    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-1")
    store = DynamoStore(region="eu-west-1", endpoint_url=dynamodb_endpoint, table_prefix=prefix, session=session)
    yield store
    for name in store.client.list_tables(ExclusiveStartTableName=prefix, Limit=100)["TableNames"]:
        if name.startswith(prefix):
            store.client.delete_table(TableName=name)
    store.close()


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
