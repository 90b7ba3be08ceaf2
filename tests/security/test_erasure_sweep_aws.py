"""The erasure sweep in aws: DynamoDB tables and the versioned bucket, `notify users sweep-erasures` killed -9
and run again, as an operator (or the Dagster job) would.

Against DynamoDB Local and SeaweedFS (versioning on, as the template's bucket). Two users' erasures ran out of
their time (the route's 202): registered and queued, nothing else done. A first sweep process is killed -9 at
some point of its work; the second finishes. Checked with the SDK and the adapter, not the sweep's own code:
no item of the erased users in any table, no stored version of any object holding them, the other user's
items and rows as they were, the queue empty, and the output counts only.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.erasure import erase_user, erasure_objects
from notify_core.erasure_queue import queued_erasures
from notify_core.security import audit
from notify_core.settings import NotifySettings
from notify_core.store import tables
from notify_core.store.adapter import build_adapter
from notify_core.store.factory import build_store
from tests.security.test_erasure_pitr import _items_of, _settings
from tests.servers import _s3_client

pytestmark = pytest.mark.dynamodb

USERS = ("u-sweep-a", "u-sweep-b", "u-sweep-kept")
ERASED, KEPT = USERS[:2], USERS[2]
FILLER = 150  # log objects naming an erased user, after the lake's file in key order


def _seed(settings: NotifySettings) -> None:
    store = build_store(settings)
    try:
        for user in USERS:
            store.table(tables.USERS).put({"pk": user, "sk": tables.PROFILE_SK, "user_id": user,
                                           "email": f"{user}@example.com"})
            store.table(tables.PURCHASES).put({"pk": user, "sk": "2031-01-01#o1", "user_id": user})
            store.table(tables.SCHEDULES).put({"pk": "2031-01-02T10:00#00", "sk": tables.schedule_sk(user, f"n-{user}"),
                                               "user_id": user, "notification_id": f"n-{user}"})
            store.table(tables.DELIVERIES).put({"pk": f"n-{user}", "sk": "attempt#1", "user_id": user})
            store.table(tables.NOTIFICATION_INTERACTIONS).put({"pk": f"n-{user}", "sk": "click"})
    finally:
        store.close()
    [area] = erasure_objects(settings)
    frame = pl.DataFrame({"user_id": list(USERS), "country": ["UK"] * 3})
    for rows in (frame.head(2), frame):  # two versions of the lake's users file, both holding the erased users
        buffer = io.BytesIO()
        rows.write_parquet(buffer)
        area.put_bytes("lake/users/part-0.parquet", buffer.getvalue())
    area.put_bytes("logs/notify.jsonl", "".join(json.dumps({"user_id": u}) + "\n" for u in USERS).encode())
    for i in range(FILLER):  # work after the lake's file (keys in order): the first sweep is killed in it
        area.put_bytes(f"logs/z-{i:04d}.jsonl", json.dumps({"user_id": ERASED[i % 2]}).encode() + b"\n")


def _queued(settings: NotifySettings) -> list[str]:
    adapter = build_adapter(settings)
    try:
        return list(queued_erasures(adapter))
    finally:
        adapter.close()


def _versions_holding(settings: NotifySettings, user: str) -> list[str]:
    client: Any = _s3_client(str(settings.s3_endpoint_url))
    held = []
    listing = client.list_object_versions(Bucket=settings.s3_bucket, Prefix=settings.s3_prefix)
    for version in listing.get("Versions", []):
        body = client.get_object(Bucket=settings.s3_bucket, Key=version["Key"],
                                 VersionId=version["VersionId"])["Body"].read()
        frame = pl.read_parquet(io.BytesIO(body)) if version["Key"].endswith(".parquet") else None
        if (frame is not None and user in frame["user_id"].to_list()) or (frame is None and user.encode() in body):
            held.append(f"{version['Key']}@{version['VersionId']}")
    return held


def test_a_sweep_killed_9_is_finished_by_the_next_on_dynamodb_and_s3(
        tmp_path: Path, dynamodb_endpoint: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"sweep-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    _s3_client(s3_server.endpoint).put_bucket_versioning(Bucket=bucket,
                                                          VersioningConfiguration={"Status": "Enabled"})
    settings = _settings(tmp_path, endpoint=dynamodb_endpoint, s3=s3_server.endpoint,
                         prefix=f"sweep{uuid.uuid4().hex[:8]}_", bucket=bucket)
    _seed(settings)
    kept_before = _items_of(settings, KEPT)
    store = build_store(settings)
    try:
        for user in ERASED:  # the route's budget already spent: registered and queued, nothing else done
            assert erase_user(user, store=store, object_areas=erasure_objects(settings),
                              deadline=time.monotonic()).pending
        assert sorted(queued_erasures(store)) == list(ERASED)
    finally:
        store.close()
    assert all(_items_of(settings, u) and _versions_holding(settings, u) for u in ERASED)

    env = {**os.environ, "NOTIFY_ENV": "aws", "NOTIFY_TABLE_PREFIX": settings.table_prefix,
           "NOTIFY_AWS_REGION": settings.aws_region, "NOTIFY_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
           "NOTIFY_S3_BUCKET": bucket, "NOTIFY_S3_ENDPOINT_URL": s3_server.endpoint,
           "NOTIFY_STREAM_BACKEND": "local", "NOTIFY_DELIVERY_CHANNEL": "outbox",
           "NOTIFY_MASTER_KEY_FILE": str(settings.master_key_file)}
    command = [sys.executable, "-m", "notify_cli.main", "users", "sweep-erasures", "--data-dir",
               str(settings.data_dir)]
    client: Any = _s3_client(s3_server.endpoint)

    def lake_versions() -> set[str]:
        listing = client.list_object_versions(Bucket=bucket, Prefix=f"{settings.s3_prefix}lake/users/")
        return {v["VersionId"] for v in listing.get("Versions", [])}

    before = lake_versions()
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and lake_versions() == before:
        time.sleep(0.02)  # until it has rewritten the lake's file: then it is in the log objects
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL  # killed mid-way, not finished
    assert lake_versions() != before and sorted(_queued(settings)) == list(ERASED)

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["users_queued"] == 2 and report["users_finished"] == 2
    assert not any(u in done.stdout + done.stderr for u in USERS)  # counts only
    for user in ERASED:
        assert _items_of(settings, user) == {} and _versions_holding(settings, user) == []
    assert _items_of(settings, KEPT) == kept_before and _versions_holding(settings, KEPT)
    assert _queued(settings) == []
    adapter = build_adapter(settings)
    try:
        markers = {str(i["pk"]) for i in adapter.table(tables.NOTIFICATION_INTERACTIONS).scan()}
        assert markers == {f"n-{KEPT}"}  # the erased users' tracking markers went with their deliveries
        [swept] = [e for e in audit.entries(adapter) if e.action == "user.erasure_sweep"]  # the killed run: none
        assert swept.target == "2 users" and swept.source == "cli" and audit.verify(adapter).ok
    finally:
        adapter.close()
