"""What only the DynamoDB adapter has: table provisioning, error translation, the value mapping.

The behaviour both adapters share lives in test_store_contract.py; these cover the DynamoDB-specific
surface that the contract cannot see.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import boto3
import pytest

from notify_core.errors import BackendError, ValidationError
from notify_core.store.dynamodb import DynamoStore, deserialize, serialize

REGION = "eu-west-1"


def _session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION)


@pytest.fixture
def prefix() -> str:
    return f"adapter_{uuid.uuid4().hex[:12]}_"


@pytest.fixture
def dynamo(dynamodb_endpoint: str, prefix: str) -> Iterator[DynamoStore]:
    store = DynamoStore(region=REGION, endpoint_url=dynamodb_endpoint, table_prefix=prefix, session=_session())
    yield store
    for name in store.client.list_tables(ExclusiveStartTableName=prefix, Limit=100)["TableNames"]:
        if name.startswith(prefix):
            store.client.delete_table(TableName=name)
    store.close()


@pytest.mark.dynamodb
def test_tables_are_created_on_demand_with_ttl(dynamo: DynamoStore, prefix: str) -> None:
    table = dynamo.table("users")
    assert table.full_name == f"{prefix}users"
    description = dynamo.client.describe_table(TableName=f"{prefix}users")["Table"]
    assert description["TableStatus"] == "ACTIVE"
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in description["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    ttl = dynamo.client.describe_time_to_live(TableName=f"{prefix}users")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    # A second store (another process) finds the table instead of failing to create it.
    table.put({"pk": "u1", "sk": "profile"})
    other = DynamoStore(region=REGION, endpoint_url=dynamo.endpoint_url, table_prefix=prefix, session=_session())
    assert other.table("users").get("u1", "profile") == {"pk": "u1", "sk": "profile"}
    other.close()


@pytest.mark.dynamodb
def test_missing_table_without_create_tables_is_a_clear_backend_error(dynamodb_endpoint: str, prefix: str) -> None:
    store = DynamoStore(
        region=REGION, endpoint_url=dynamodb_endpoint, table_prefix=prefix, create_tables=False, session=_session()
    )
    table = store.table("users")  # no round trip yet
    with pytest.raises(BackendError, match=f"{prefix}users does not exist"):
        table.get("u1", "profile")
    store.close()


def test_invalid_table_names_and_prefixes_are_rejected() -> None:
    with pytest.raises(ValidationError):
        DynamoStore(region=REGION, endpoint_url="http://127.0.0.1:9", table_prefix="bad prefix/", session=_session())
    store = DynamoStore(region=REGION, endpoint_url="http://127.0.0.1:9", create_tables=False, session=_session())
    for name in ("", "Users", "1users", "users-x"):
        with pytest.raises(ValidationError):
            store.table(name)
    short = DynamoStore(region=REGION, endpoint_url="http://127.0.0.1:9", table_prefix="", session=_session())
    with pytest.raises(ValidationError):
        short.table("ab")  # DynamoDB's minimum is 3 characters
    short.close()
    store.close()


def test_value_mapping() -> None:
    assert serialize(0.1) == {"N": "0.1"}  # the shortest repr, not 0.1000000000000000055511151231257827
    assert serialize(True) == {"BOOL": True} and serialize(1) == {"N": "1"}
    assert serialize(b"\x00") == {"B": b"\x00"}
    assert serialize((1, "a")) == {"L": [{"N": "1"}, {"S": "a"}]}
    assert serialize({"a": None}) == {"M": {"a": {"NULL": True}}}
    assert serialize(Decimal("1.50")) == {"N": "1.50"}
    assert deserialize({"N": "1.50"}) == 1.5 and isinstance(deserialize({"N": "1.50"}), float)
    assert deserialize({"N": "2.0"}) == 2 and isinstance(deserialize({"N": "2.0"}), int)
    assert deserialize({"N": "1E+2"}) == 100 and isinstance(deserialize({"N": "1E+2"}), int)
    assert deserialize({"N": "123456789012345678901234567890"}) == 123456789012345678901234567890
    assert deserialize({"SS": ["a"]}) == ["a"]
