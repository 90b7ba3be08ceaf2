"""Right to erasure in aws: the lake, landing and quarantine are S3 objects in a versioned bucket.

Against a real S3 server (SeaweedFS, versioning on, as the template's bucket): the objects are written by
Notify's own writers (the lake's merge and derived tables, the landing area's push), then the user is
erased through :func:`notify_core.erasure.erase_user` with :func:`erasure_objects`' areas. Every stored
version of every object is read back with the SDK, not through Notify's code, and must not hold the user;
the other user's rows stay as they were. Before, ``erase_user`` walked local files only, and a rewrite alone
would have left the old copy as a noncurrent version.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.erasure import ObjectArea, erase_user, erasure_objects, erasure_replicas
from notify_core.lake import lake_for
from notify_core.landing import build_landing_area
from notify_core.s3_objects import ObjectVersion
from notify_core.schemas import PURCHASES, USERS
from notify_core.settings import NotifySettings, load_settings
from notify_core.store.sqlite import SqliteStore
from tests.servers import _s3_client

ERASED, KEPT = "u-erased", "u-kept"
WHEN = datetime(2031, 1, 2, 12, tzinfo=UTC)


def _users(*ids: str) -> pl.DataFrame:
    rows = [{"user_id": u, "country": "UK", "timezone": "Europe/London", "signup_date": date(2030, 1, 1),
             "daily_cap": 5, "quiet_start_hour": 22, "quiet_end_hour": 7, "channels": ["push"],
             "opted_out_categories": []} for u in ids]
    return pl.DataFrame(rows, schema=USERS)


def _purchases(n: int, *, price: float = 2.5) -> pl.DataFrame:
    rows = [{"order_id": f"o{i}", "user_id": (ERASED, KEPT)[i // 2 % 2], "product_id": f"p{i % 3}", "quantity": 1,
             "unit_price": price, "ts": datetime(2030, 11 + i % 2, 3, tzinfo=UTC), "country": "UK",
             "is_return": False} for i in range(n)]
    return pl.DataFrame(rows, schema=PURCHASES)


@dataclass(frozen=True)
class Aws:
    settings: NotifySettings
    client: Any  # the SDK's own S3 client: what the tests read back with
    bucket: str
    versioning: str  # "on", "off" (never), "later" (turned on after the first writes)


@pytest.fixture
def aws(s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
        ) -> Iterator[Aws]:
    """A bucket holding what a run in aws leaves under the prefix; versioned (as the template's) unless the
    test asks for ``"off"`` (never versioned) or ``"later"`` (turned on after the first writes) indirectly."""
    versioning = getattr(request, "param", "on")
    bucket = f"erase-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    client: Any = _s3_client(s3_server.endpoint)
    if versioning == "on":
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(data_dir=tmp_path / "data", env="aws", s3_bucket=bucket, s3_prefix="notify",
                             s3_endpoint_url=s3_server.endpoint, aws_region="us-east-1", delivery_channel="outbox",
                             master_key_file=tmp_path / "master.keys.json")
    _write_everything(settings)
    if versioning == "later":  # the objects so far are "null" versions; the next merge makes them noncurrent
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        lake_for(settings).merge("purchases", _purchases(6, price=4.0))
    yield Aws(settings, client, bucket, versioning)


def _write_everything(settings: NotifySettings) -> None:
    """What a run in aws leaves under the prefix, written by Notify's own writers; the second merge and
    the second derived table rewrite objects, so the bucket keeps their first versions as noncurrent."""
    lake = lake_for(settings)
    lake.merge("users", _users(ERASED, KEPT))
    lake.merge("purchases", _purchases(6))
    lake.merge("purchases", _purchases(6, price=3.0))
    vectors = pl.DataFrame({"id": [ERASED, KEPT], "vector": [[0.1, 0.2], [0.3, 0.4]]})
    lake.write_table("embeddings_user", vectors)
    lake.write_table("embeddings_user", vectors.with_columns(pl.col("vector").list.eval(pl.element() * 2)))
    landing = settings.landing / "purchases"
    landing.mkdir(parents=True)
    _purchases(4).write_csv(landing / "drop.csv")
    (settings.quarantine_root / "purchases").mkdir(parents=True)  # bad rows as they arrived, with reasons
    pl.DataFrame({"user_id": [ERASED, KEPT], "unit_price": ["-1", "x"], "reason": ["negative", "not a number"]}
                 ).write_parquet(settings.quarantine_root / "purchases" / "drop.0123abcd.parquet")
    area = build_landing_area(settings)
    area.push()
    area.push(quarantine=True)


def _rows_of(data: bytes, key: str, user: str) -> int:
    """Rows of ``user`` in one object's bytes, read with polars and the standard library only."""
    frame = pl.read_parquet(io.BytesIO(data)) if key.endswith(".parquet") else pl.read_csv(io.BytesIO(data))
    column = "id" if "id" in frame.columns and "user_id" not in frame.columns else "user_id"
    return int((frame[column].cast(pl.String) == user).sum())


def _versions(client: Any, bucket: str) -> list[dict[str, Any]]:
    """Every stored version of every object in the bucket, as the SDK lists them."""
    return [v for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket)
            for v in page.get("Versions", [])]


def _census(client: Any, bucket: str, user: str) -> dict[tuple[str, str], int]:
    """``{(key, version id): rows of user}`` over every stored version of every data object."""
    out: dict[tuple[str, str], int] = {}
    for v in _versions(client, bucket):
        key, vid = v["Key"], v["VersionId"]
        if key.endswith((".parquet", ".csv")):
            body = client.get_object(Bucket=bucket, Key=key, VersionId=vid)["Body"].read()
            out[(key, vid)] = _rows_of(body, key, user)
    return out


def test_an_erasure_removes_the_user_from_every_version_of_every_object(aws: Aws, tmp_path: Path) -> None:
    settings, client, bucket = aws.settings, aws.client, aws.bucket
    client.put_object(Bucket=bucket, Key="notify/artefacts/index.bin", Body=b"not data " + ERASED.encode())
    before = _census(client, bucket, ERASED)
    kept_before = _census(client, bucket, KEPT)
    latest_before = _latest_ids(client, bucket)
    holding = {k for k, n in before.items() if n}
    # the writers left the user in the lake (users, purchases' two months, vectors), landing and quarantine,
    # and in the noncurrent versions of the rewritten ones
    assert len({key for key, _ in holding}) == 6 and len(holding) > len({key for key, _ in holding})
    lake_kept = lake_for(settings).read("purchases").filter(pl.col("user_id") == KEPT).sort("order_id")

    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        report = erase_user(ERASED, store=store, object_areas=erasure_objects(settings), clock=ManualClock(WHEN))
        after = _census(client, bucket, ERASED)
        assert sum(after.values()) == 0, {k: n for k, n in after.items() if n}
        assert report.object_versions_deleted == len(holding)
        removed = {url.removeprefix(f"s3://{bucket}/"): n for url, n in report.file_rows.items()}
        assert removed == {key: before[(key, vid)] for key, vid in latest_before.items() if before[(key, vid)]}
        # the other user's rows are all still in the latest versions; the artefact is untouched
        assert lake_for(settings).read("purchases").filter(pl.col("user_id") == KEPT).sort("order_id").equals(
            lake_kept)
        kept_after = _census(client, bucket, KEPT)
        assert {key: kept_after[(key, vid)] for key, vid in _latest_ids(client, bucket).items()} == {
            key: kept_before[(key, vid)] for key, vid in latest_before.items()}
        body = client.get_object(Bucket=bucket, Key="notify/artefacts/index.bin")["Body"].read()
        assert body == b"not data " + ERASED.encode()

        # a second erasure finds nothing, rewrites nothing and deletes nothing
        versions = _version_ids(client, bucket)
        again = erase_user(ERASED, store=store, object_areas=erasure_objects(settings), clock=ManualClock(WHEN))
        assert again.total == 0 and again.object_versions_deleted == 0
        assert _version_ids(client, bucket) == versions
    finally:
        store.close()


class _DiesOnDelete:
    """The real area, but the process "dies" (raises) at the first version delete: after the rewrite of
    the latest copy, before the old one is gone."""

    def __init__(self, inner: ObjectArea) -> None:
        self.inner = inner

    def versions(self, prefix: str) -> list[ObjectVersion]:
        return list(self.inner.versions(prefix))

    def get_bytes(self, name: str, *, version_id: str | None = None) -> bytes | None:
        return self.inner.get_bytes(name, version_id=version_id)

    def put_bytes(self, name: str, data: bytes) -> str:
        return self.inner.put_bytes(name, data)

    def delete_version(self, name: str, version_id: str) -> None:
        raise KeyboardInterrupt("killed between the rewrite and the delete")

    def url(self, name: str = "") -> str:
        return self.inner.url(name)


def test_an_erasure_killed_between_rewrite_and_delete_is_finished_by_the_next(aws: Aws, tmp_path: Path) -> None:
    settings, client, bucket = aws.settings, aws.client, aws.bucket
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        (area,) = erasure_objects(settings)
        with pytest.raises(KeyboardInterrupt):
            erase_user(ERASED, store=store, object_areas=(_DiesOnDelete(area),), clock=ManualClock(WHEN))
        assert sum(_census(client, bucket, ERASED).values()) > 0  # the old copy is still there
        report = erase_user(ERASED, store=store, object_areas=erasure_objects(settings), clock=ManualClock(WHEN))
        assert report.object_versions_deleted > 0
        assert sum(_census(client, bucket, ERASED).values()) == 0
        assert len(lake_for(settings).read("users")) == 1
    finally:
        store.close()


@pytest.mark.parametrize("aws", ["off", "later"], indirect=True)
def test_buckets_never_versioned_or_versioned_after_the_first_writes(aws: Aws, tmp_path: Path) -> None:
    """Never versioned: the rewrite replaces each object in place, and nothing may be deleted after it (the
    object itself would go). Versioned later: the first copies are "null" versions, deleted like any other."""
    settings, client, bucket = aws.settings, aws.client, aws.bucket
    keys = set(_latest_ids(client, bucket))
    before = _census(client, bucket, ERASED)
    null_holding = [key for (key, vid), n in before.items() if n and vid == "null"]
    assert null_holding  # both: copies written while versioning was off hold the user
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        report = erase_user(ERASED, store=store, object_areas=erasure_objects(settings), clock=ManualClock(WHEN))
    finally:
        store.close()
    assert sum(_census(client, bucket, ERASED).values()) == 0
    assert set(_latest_ids(client, bucket)) == keys  # every object is still there
    assert len(lake_for(settings).read("users")) == 1 and lake_for(settings).read("purchases").height == 2
    if aws.versioning == "off":
        assert report.object_versions_deleted == 0  # replaced in place
        assert {vid for _, vid in _version_ids(client, bucket)} == {"null"}
    else:
        assert report.object_versions_deleted == sum(1 for n in before.values() if n)


def _replicate(client: Any, source: str, replica: str, *, latest_only: bool = False) -> None:
    """What S3 replication does: each version of the source written to the replica, oldest first, as a
    new version there (never a version delete). SeaweedFS does not replicate, so the test plays it."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for v in _versions(client, source):
        by_key.setdefault(v["Key"], []).append(v)
    for key, versions in by_key.items():
        for v in sorted(versions, key=lambda v: (v["IsLatest"], v["LastModified"])):
            if latest_only and not v["IsLatest"]:
                continue
            body = client.get_object(Bucket=source, Key=key, VersionId=v["VersionId"])["Body"].read()
            client.put_object(Bucket=replica, Key=key, Body=body)


def test_the_replica_bucket_loses_every_version_that_held_the_user(aws: Aws, s3_server: Any,
                                                                    tmp_path: Path) -> None:
    """S3 replication copies every new version to the replica bucket in the other region, never a version
    delete: before, every copy of the user stayed there (until that bucket's own lifecycle rule, if any).
    The erasure now deletes each replica version that holds the user and writes nothing there; killed in
    the middle of that walk, the next erasure finishes it; the primary's rewrite, replicated afterwards,
    leaves the replica's latest copies equal to the primary's."""
    client, bucket = aws.client, aws.bucket
    replica = f"replica-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(replica)
    client.put_bucket_versioning(Bucket=replica, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=bucket, Key="notify/landing/purchases/kept-only.csv",  # a copy without the user
                      Body=_purchases(4).filter(pl.col("user_id") == KEPT).write_csv().encode())
    _replicate(client, bucket, replica)
    held = {k for k, n in _census(client, replica, ERASED).items() if n}
    kept = {k: n for k, n in _census(client, replica, KEPT).items() if k not in held}
    assert len(held) >= 6 and kept  # the replica holds the user in the same objects and versions
    settings = aws.settings.model_copy(update={"s3_replica_bucket": replica})
    (replica_area,) = erasure_replicas(settings)
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        with pytest.raises(KeyboardInterrupt):  # dies at the first replica delete, the primary done
            erase_user(ERASED, store=store, object_areas=erasure_objects(settings),
                       replica_areas=(_DiesOnDelete(replica_area),), clock=ManualClock(WHEN))
        assert sum(_census(client, bucket, ERASED).values()) == 0
        assert {k for k, n in _census(client, replica, ERASED).items() if n} == held
        report = erase_user(ERASED, store=store, object_areas=erasure_objects(settings),
                            replica_areas=erasure_replicas(settings), clock=ManualClock(WHEN))
        assert report.replica_versions_deleted == len(held) and report.object_versions_deleted == 0
        assert sum(_census(client, replica, ERASED).values()) == 0
        # nothing written there, and the versions that never held the user are all still there
        assert {k: n for k, n in _census(client, replica, KEPT).items()} == kept
        _replicate(client, bucket, replica, latest_only=True)  # the rewrite arrives after the erasure
        assert sum(_census(client, replica, ERASED).values()) == 0
        for key, vid in _latest_ids(client, replica).items():
            ours = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert client.get_object(Bucket=replica, Key=key, VersionId=vid)["Body"].read() == ours, key
        again = erase_user(ERASED, store=store, object_areas=erasure_objects(settings),
                           replica_areas=erasure_replicas(settings), clock=ManualClock(WHEN))
        assert again.replica_versions_deleted == 0 and again.total == 0
    finally:
        store.close()


def test_the_local_default_has_no_object_areas(tmp_path: Path) -> None:
    assert erasure_objects(load_settings(data_dir=tmp_path)) == ()
    assert erasure_replicas(load_settings(data_dir=tmp_path, s3_replica_bucket="elsewhere")) == ()


def _version_ids(client: Any, bucket: str) -> set[tuple[str, str]]:
    return {(v["Key"], v["VersionId"]) for v in _versions(client, bucket)}


def _latest_ids(client: Any, bucket: str) -> dict[str, str]:
    """``{key: its latest version id}`` of every data object."""
    return {v["Key"]: v["VersionId"] for v in _versions(client, bucket)
            if v["IsLatest"] and v["Key"].endswith((".parquet", ".csv"))}


@pytest.mark.dynamodb
def test_notify_users_delete_in_aws_erases_the_objects(aws: Aws, s3_server: Any, dynamodb_endpoint: str) -> None:
    """The operator's command, as run in aws (DynamoDB Local for the Store, the S3 server for the objects and
    their replica, named by ``NOTIFY_S3_REPLICA_BUCKET`` as the template sets it)."""
    settings, client, bucket = aws.settings, aws.client, aws.bucket
    replica = f"replica-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(replica)
    client.put_bucket_versioning(Bucket=replica, VersioningConfiguration={"Status": "Enabled"})
    _replicate(client, bucket, replica)
    held = sum(1 for n in _census(client, replica, ERASED).values() if n)
    env = {**os.environ, "NOTIFY_ENV": "aws", "NOTIFY_S3_BUCKET": bucket, "NOTIFY_S3_PREFIX": "notify",
           "NOTIFY_S3_ENDPOINT_URL": str(settings.s3_endpoint_url), "NOTIFY_AWS_REGION": "us-east-1",
           "NOTIFY_S3_REPLICA_BUCKET": replica, "NOTIFY_S3_REPLICA_REGION": "us-east-1",
           "NOTIFY_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint, "NOTIFY_TABLE_PREFIX": f"er{uuid.uuid4().hex[:8]}_",
           "NOTIFY_STREAM_BACKEND": "local", "NOTIFY_DELIVERY_CHANNEL": "outbox",
           "NOTIFY_MASTER_KEY_FILE": str(settings.data_dir.parent / "master.keys.json")}
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", "users", "delete", ERASED, "--data-dir",
                           str(settings.data_dir)], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["object_versions_deleted"] > 0 and report["replica_versions_deleted"] == held > 0
    assert any(url.startswith(f"s3://{bucket}/notify/lake/") for url in report["file_rows"])
    assert sum(_census(client, bucket, ERASED).values()) == 0
    assert sum(_census(client, replica, ERASED).values()) == 0
