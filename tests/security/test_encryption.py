"""Personal fields at rest: AES-256-GCM under wrapped per-purpose data keys; rotation re-wraps; KMS adapter."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from notify_core.clock import ManualClock
from notify_core.delivery.channels import Message, OutboxChannel, read_outbox
from notify_core.security.crypto import (
    MASTER_FILE,
    SEALED_PREFIX,
    DecryptionError,
    LocalMasterKey,
    build_sealer,
)
from notify_core.security.key_documents import FileKeyDocuments
from notify_core.store import tables
from notify_core.store.sealed import SealedStore
from notify_core.store.sqlite import SqliteStore

EMAIL = "ada.lovelace@example.org"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_seal_open_and_what_does_not_open(tmp_path: Path) -> None:
    sealer = build_sealer(tmp_path / "secrets")
    sealed = sealer.seal(EMAIL, purpose="users", field="email")
    assert sealed.startswith(SEALED_PREFIX) and EMAIL not in sealed
    assert sealed != sealer.seal(EMAIL, purpose="users", field="email")  # fresh nonce each time
    assert sealer.open(sealed, purpose="users", field="email") == EMAIL
    with pytest.raises(DecryptionError):  # moved to another field
        sealer.open(sealed, purpose="users", field="phone")
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(DecryptionError):
        sealer.open(tampered, purpose="users", field="email")
    assert sealer.open("plain text from before", purpose="users", field="email") == "plain text from before"
    for name in ("master.keys.json", "data.keys.json"):
        assert _mode(tmp_path / "secrets" / name) == 0o600
    assert _mode(tmp_path / "secrets") == 0o700
    wrapped = json.loads((tmp_path / "secrets" / "data.keys.json").read_text())
    assert set(wrapped["purposes"]) == {"users"}  # one data key per purpose, stored wrapped only


def test_the_store_holds_only_ciphertext_for_personal_fields(tmp_path: Path) -> None:
    raw = SqliteStore(tmp_path / "store.sqlite")
    store = SealedStore(raw, build_sealer(tmp_path / "secrets"))
    try:
        users = store.table(tables.USERS)
        users.put({"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "email": EMAIL, "first_name": "Ada",
                   "timezone": "UTC"})
        users.batch_put([{"pk": "u2", "sk": tables.PROFILE_SK, "user_id": "u2", "phone": "+44 20 7946 0000"}])
        users.update("u1", tables.PROFILE_SK, set={"last_name": "Lovelace"})
        got = users.get("u1", tables.PROFILE_SK)
        assert got is not None and (got["email"], got["first_name"], got["last_name"]) == (EMAIL, "Ada", "Lovelace")
        assert [r["phone"] for r in users.query("u2")] == ["+44 20 7946 0000"]
        assert users.query_columns("u2", ("phone", "user_id")) == {"phone": ["+44 20 7946 0000"], "user_id": ["u2"]}
        assert users.query_columns("u1", ("timezone",)) == {"timezone": ["UTC"]}  # nothing personal: the raw read
        assert users.query_columns_many(["u2", "u1", "u9"], ("phone", "user_id")) == {
            "u2": {"phone": ["+44 20 7946 0000"], "user_id": ["u2"]}, "u1": {"phone": [None], "user_id": ["u1"]},
            "u9": {"phone": [], "user_id": []}}
        assert users.query_columns_many(["u1"], ("timezone",)) == {"u1": {"timezone": ["UTC"]}}
        stored = raw.table(tables.USERS).get("u1", tables.PROFILE_SK)
        assert stored is not None and stored["timezone"] == "UTC"
        assert all(str(stored[f]).startswith(SEALED_PREFIX) for f in ("email", "first_name", "last_name"))
        assert store.table(tables.PURCHASES) is raw.table(tables.PURCHASES)  # other tables: no wrapper, no cost
    finally:
        store.close()
    raw_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("store.sqlite*"))
    for secret in (EMAIL, "Lovelace", "+44 20 7946 0000"):
        assert secret.encode() not in raw_bytes


def test_rotation_rewraps_every_data_key_and_retires_the_old_master(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    sealer = build_sealer(secrets_dir)
    old_values = {p: sealer.seal(EMAIL, purpose=p, field="email") for p in ("users", "outbox")}
    old_master = LocalMasterKey(secrets_dir / MASTER_FILE).active_version
    report = build_sealer(secrets_dir).rotate(new_data_keys=True)
    assert report.rewrapped == 2 and report.retired_master_versions == [old_master] and len(report.new_data_keys) == 2
    master_doc = json.loads((secrets_dir / "master.keys.json").read_text())
    assert list(master_doc["keys"]) == [report.master_version]  # the old master key is gone from disk
    fresh = build_sealer(secrets_dir)
    for purpose, value in old_values.items():
        assert fresh.open(value, purpose=purpose, field="email") == EMAIL  # old data still opens
    new_value = fresh.seal(EMAIL, purpose="users", field="email")
    assert new_value.split(":")[2] in report.new_data_keys  # new writes use the new data key


def test_a_rotation_killed_before_it_saves_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir = tmp_path / "secrets"
    value = build_sealer(secrets_dir).seal(EMAIL, purpose="users", field="email")

    def crash(self: FileKeyDocuments, name: str, body: object, *, replaces: str | None) -> bool:
        raise KeyboardInterrupt("killed mid-rotation")

    interrupted = build_sealer(secrets_dir)
    monkeypatch.setattr(FileKeyDocuments, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        interrupted.rotate()
    monkeypatch.undo()
    # the master file gained a version, the data keys are still wrapped by the old one, which was kept
    assert build_sealer(secrets_dir).open(value, purpose="users", field="email") == EMAIL
    build_sealer(secrets_dir).rotate()  # and the next rotation completes
    assert build_sealer(secrets_dir).open(value, purpose="users", field="email") == EMAIL


def test_the_kms_master_key_wraps_with_the_purpose_as_context(tmp_path: Path) -> None:
    with mock_aws():
        kms = boto3.client("kms", region_name="eu-west-1")
        key_id = kms.create_key(Description="notify test")["KeyMetadata"]["KeyId"]
        sealer = build_sealer(tmp_path / "secrets", kms_key_id=key_id, kms_client=kms)
        sealed = sealer.seal(EMAIL, purpose="users", field="email")
        assert build_sealer(tmp_path / "secrets", kms_key_id=key_id, kms_client=kms).open(
            sealed, purpose="users", field="email") == EMAIL
        assert not (tmp_path / "secrets" / "master.keys.json").exists()  # no local master key in KMS mode
        doc = json.loads((tmp_path / "secrets" / "data.keys.json").read_text())
        assert next(iter(doc["purposes"]["users"]["keys"].values()))["master"] == f"kms:{key_id}"
        assert sealer.rotate().rewrapped == 1


def test_the_outbox_seals_message_bodies(tmp_path: Path) -> None:
    sealer = build_sealer(tmp_path / "secrets")
    out = tmp_path / "outbox" / "n.jsonl"
    channel = OutboxChannel(out, sealer=sealer, clock=ManualClock(datetime(2031, 1, 1, 10, tzinfo=UTC)))
    msg = Message(notification_id="n1", user_id="u1", campaign_id="c1", title="Spring", body="Ada, new in: l",
                  link="l", open_pixel="p", send_at="2031-01-01T10:00:00Z")
    assert channel.send(msg, idempotency_key="n1").ok
    channel.close()
    assert b"Ada" not in out.read_bytes()
    assert read_outbox(out, sealer=sealer)[0]["body"] == "Ada, new in: l"
    assert _mode(out) == 0o600 and _mode(out.parent) == 0o700
