"""A DynamoDB point-in-time restore must not bring erased users back.

PITR restores tables into NEW tables as they were at a moment before some erasures: the users erased since
are back in them, and so is a register without their entries, so the next ingest would take them in again.
``notify users reapply-erasures --register-from-prefix OLD`` copies the newer register entries into the
restored tables (the ones ``NOTIFY_TABLE_PREFIX`` names) and erases those users again, each at its own time.
Here, against DynamoDB Local: the "restore" is a copy of every table taken before the erasure, item for item
under another prefix (what PITR produces); the command runs as the operator would run it, in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.erasure import belongs_to, erase_user
from notify_core.erasure_register import ErasureRegister, erased_before
from notify_core.errors import NotifyError
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_core.store.adapter import build_adapter
from notify_core.store.dynamodb import DynamoStore
from notify_core.store.factory import build_store

pytestmark = pytest.mark.dynamodb

ERASED, KEPT = "u-pitr-erased", "u-pitr-kept"


def _settings(tmp_path: Path, *, endpoint: str, s3: str, prefix: str, bucket: str) -> NotifySettings:
    return load_settings(data_dir=tmp_path / "data", env="aws", aws_region="eu-west-1", table_prefix=prefix,
                         dynamodb_endpoint_url=endpoint, s3_bucket=bucket, s3_endpoint_url=s3,
                         stream_backend="local", delivery_channel="outbox",
                         master_key_file=tmp_path / "master.keys.json")


def _seed(settings: NotifySettings) -> None:
    """Two users with a profile (sealed personal fields), purchases, events and a schedule item."""
    store = build_store(settings)  # sealed, as the app writes them
    try:
        for user in (ERASED, KEPT):
            store.table(tables.USERS).put({"pk": user, "sk": tables.PROFILE_SK, "user_id": user,
                                           "email": f"{user}@example.com", "timezone": "Europe/London"})
            store.table(tables.PURCHASES).batch_put([{"pk": user, "sk": f"2031-01-0{i}#o{i}", "order_id": f"o{i}",
                                                      "user_id": user} for i in range(1, 4)])
            store.table(tables.USER_EVENTS).put({"pk": user, "sk": "2031-01-02T10:00:00#e1", "user_id": user})
            store.table(tables.DELIVERIES).put({"pk": f"n-{user}", "sk": "log", "user_id": user,
                                                "at": datetime(2031, 1, 2, tzinfo=UTC).isoformat()})
    finally:
        store.close()


def _copy_every_table(source: NotifySettings, target: NotifySettings) -> None:
    """What a point-in-time restore gives: every table's items as they are now, under the target's prefix."""
    src = DynamoStore(region=source.aws_region, endpoint_url=source.dynamodb_endpoint_url,
                      table_prefix=source.table_prefix, create_tables=False)
    dst = build_adapter(target)
    try:
        for name in tables.ALL_TABLES:
            try:
                items = list(src.table(name).scan())
            except NotifyError:  # never created: nothing to restore
                continue
            dst.table(name).batch_put(items)
    finally:
        src.close()
        dst.close()


def _items_of(settings: NotifySettings, user: str) -> dict[str, int]:
    store = build_adapter(settings)
    try:
        return {name: n for name, rule in tables.USER_ITEMS.items()
                if (n := sum(1 for i in store.table(name).scan() if belongs_to(i, user, rule=rule)))}
    finally:
        store.close()


def _cli(settings: NotifySettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NOTIFY_ENV": "aws", "NOTIFY_TABLE_PREFIX": settings.table_prefix,
           "NOTIFY_AWS_REGION": settings.aws_region,
           "NOTIFY_DYNAMODB_ENDPOINT_URL": str(settings.dynamodb_endpoint_url),
           "NOTIFY_S3_BUCKET": str(settings.s3_bucket), "NOTIFY_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
           "NOTIFY_STREAM_BACKEND": "local", "NOTIFY_DELIVERY_CHANNEL": "outbox",
           "NOTIFY_MASTER_KEY_FILE": str(settings.master_key_file),
           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    return subprocess.run([sys.executable, "-m", "notify_cli.main", "users", "reapply-erasures", *args,
                           "--data-dir", str(settings.data_dir)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_point_in_time_restore_does_not_bring_an_erased_user_back(tmp_path: Path, dynamodb_endpoint: str,
                                                                     s3_server: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"pitr-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    tag = uuid.uuid4().hex[:8]
    live = _settings(tmp_path, endpoint=dynamodb_endpoint, s3=s3_server.endpoint, prefix=f"live{tag}_",
                     bucket=bucket)
    restored = _settings(tmp_path, endpoint=dynamodb_endpoint, s3=s3_server.endpoint, prefix=f"pitr{tag}_",
                         bucket=bucket)
    _seed(live)
    _copy_every_table(live, restored)  # the restore point: before the erasure
    kept_before = _items_of(restored, KEPT)
    when = ManualClock(1_924_000_000)
    store = build_store(live)
    try:
        erase_user(ERASED, store=store, clock=when)
    finally:
        store.close()
    assert not _items_of(live, ERASED)
    # the restored tables are from before it: the user is back, and their register entry is not there
    assert _items_of(restored, ERASED) == {tables.USERS: 1, tables.PURCHASES: 3, tables.USER_EVENTS: 1,
                                           tables.DELIVERIES: 1}
    restored_store = build_adapter(restored)
    try:
        assert erased_before(restored_store).erased_at(ERASED) is None
    finally:
        restored_store.close()

    # a prefix with no tables is refused, not read as "nobody was erased", and creates nothing
    wrong = _cli(restored, "--register-from-prefix", f"nosuch{tag}_")
    assert wrong.returncode == 2 and "--register-from-prefix" in wrong.stderr, wrong.stdout + wrong.stderr

    done = _cli(restored, "--register-from-prefix", live.table_prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"register_entries": 1, "users_erased_again": 1}
    assert ERASED not in done.stdout + done.stderr  # counts only: the id erased again is printed nowhere
    assert not _items_of(restored, ERASED)
    assert _items_of(restored, KEPT) == kept_before
    restored_store = build_adapter(restored)
    try:
        register = erased_before(restored_store)
        assert register.erased_at(ERASED) == _register(live).erased_at(ERASED)  # its own time, not the restore's
        assert register.erased_at(KEPT) is None
        audited = [i for i in restored_store.table(tables.AUDIT_LOG).scan()
                   if i.get("action") == "user.reapply_erasures"]
        assert len(audited) == 1 and ERASED not in json.dumps(audited)
    finally:
        restored_store.close()

    again = _cli(restored, "--register-from-prefix", live.table_prefix)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["users_erased_again"] == 0


def _register(settings: NotifySettings) -> ErasureRegister:
    store = build_adapter(settings)
    try:
        return erased_before(store)
    finally:
        store.close()


def test_the_restored_tables_themselves_or_the_local_default_are_refused(tmp_path: Path) -> None:
    """Refused before any connection: the local default (``notify restore`` re-applies the register itself),
    and the restored tables' own prefix (their register is the old one). A setting missing is one line on
    stderr and exit 2, for ``users delete`` too (it was a traceback and exit 1)."""
    def run(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "notify_cli.main", "users",
                               *(command or ("reapply-erasures", "--register-from-prefix", "notify_")),
                               "--data-dir", str(tmp_path / "data")],
                              env={**os.environ, "COLUMNS": "300", **env}, capture_output=True, text=True,
                              timeout=120, check=False)

    local = run({"NOTIFY_ENV": "local"})
    assert local.returncode == 2 and "notify restore" in local.stderr, local.stdout + local.stderr
    aws = {"NOTIFY_ENV": "aws", "NOTIFY_S3_BUCKET": "b", "NOTIFY_TABLE_PREFIX": "notify_",
           "NOTIFY_DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:9"}
    for command in ((), ("delete", "u-1")):  # the sns channel without its topic: one line, not a traceback
        unset = run(aws, *command)
        assert unset.returncode == 2 and "error: the sns channel needs" in unset.stderr, unset.stdout + unset.stderr
        assert "Traceback" not in unset.stderr and "╭" not in unset.stderr
    same = run({**aws, "NOTIFY_DELIVERY_CHANNEL": "outbox"})
    assert same.returncode == 2 and "restored tables themselves" in same.stderr, same.stdout + same.stderr
