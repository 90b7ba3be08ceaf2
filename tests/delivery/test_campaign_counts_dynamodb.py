"""Campaign counters on DynamoDB when a round of ``update_many`` fails part-way (a real DynamoDB Local).

DynamoDB applies a round of counter writes item by item, so a round the service refuses in its middle
(throttling after botocore's own retries, a 5xx) has already added the rows before the refused one. The
caller keeps what :class:`CountsNotAddedError` names and adds it at its next flush: those rows must not be
named, or their increments are added twice (``sent`` over-counted for good).

The fault: DynamoDB Local never throttles, so the client is made to fail its third write with the
``ThrottlingException`` the service answers (a botocore ``before-call`` hook on the real client; the
writes before and after it reach the real server).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from notify_core.delivery.feedback import add_campaign_counts
from notify_core.errors import CountsNotAddedError
from notify_core.store import tables
from notify_core.store.dynamodb import DynamoStore
from tests.servers import scratch_dynamo_store

REGION = "eu-west-1"
DAY = "2026-12-03"


@pytest.fixture
def dynamo(dynamodb_endpoint: str) -> Iterator[DynamoStore]:
    with scratch_dynamo_store(dynamodb_endpoint, name="cnt", region=REGION) as store:
        yield store


def _fail_the_nth_write(store: DynamoStore, n: int) -> None:
    """The ``n``-th PutItem/UpdateItem from now answers ThrottlingException (once); the others go through."""
    calls = 0

    def hook(**_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate of requests exceeds"}},
                              "UpdateItem")

    for operation in ("PutItem", "UpdateItem"):
        store.client.meta.events.register(f"before-call.dynamodb.{operation}", hook, unique_id=f"fail-{operation}")


def _stop_failing(store: DynamoStore) -> None:
    for operation in ("PutItem", "UpdateItem"):
        store.client.meta.events.unregister(f"before-call.dynamodb.{operation}", unique_id=f"fail-{operation}")


def _sent(store: DynamoStore) -> dict[str, int]:
    return {str(r["pk"]): int(r["sent"]) for r in store.table(tables.CAMPAIGN_STATS).scan()}


@pytest.mark.dynamodb
@pytest.mark.parametrize("rows_exist", [False, True], ids=["new-rows", "existing-rows"])
def test_counts_a_round_added_before_dynamodb_refused_it_are_not_added_again(
        dynamo: DynamoStore, rows_exist: bool) -> None:
    campaigns = [f"c{i}" for i in range(5)]
    if rows_exist:
        add_campaign_counts(dynamo, {(c, DAY): 10 for c in campaigns})
    counts = {(c, DAY): i + 1 for i, c in enumerate(campaigns)}

    _fail_the_nth_write(dynamo, 3)  # the round's first two rows are added, the third is refused
    try:
        with pytest.raises(CountsNotAddedError) as refused:
            add_campaign_counts(dynamo, counts)
    finally:
        _stop_failing(dynamo)
    # What the delivery worker's flush does with the error: keep ``remaining``, add it at the next flush.
    add_campaign_counts(dynamo, refused.value.remaining)

    base = 10 if rows_exist else 0
    assert _sent(dynamo) == {c: base + n for (c, _), n in counts.items()}
    # exactly the rows not yet added were named: the refused one and those after it
    assert set(refused.value.remaining) == {(c, DAY) for c in campaigns[2:]}
