"""Every instance of an aws deployment holds the same keys (notify_core/security/vault.py).

In aws each Lambda function and pod has a disk of its own. Before the key documents moved to the Store, each
instance minted its own data key and signing rings under its ``/tmp/notify``: a user written by one function
raised ``DecryptionError("unknown data key")`` in another, and every tracking link signed by the delivery
worker was "invalid" in the tracking function, so no click fed back. Here two instances are two data
directories on one DynamoDB Local, sharing only the master key file (the template shares the stack's KMS key).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.channels import WEBHOOK_PURPOSE, webhook_keys
from notify_core.delivery.tracking import TRACKING_PURPOSE, sign_token, verify_token
from notify_core.delivery.worker import build_worker
from notify_core.errors import ConfigurationError, InvalidTokenError
from notify_core.security.key_documents import FileKeyDocuments
from notify_core.security.vault import build_vault
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_core.store.adapter import build_adapter
from notify_core.store.factory import build_store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EMAIL = "ada@example.com"


@pytest.fixture
def instances(dynamodb_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``make(name)``: the settings of one more instance of the same deployment (its own data directory)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    prefix = f"keys{uuid.uuid4().hex[:8]}_"

    def make(name: str) -> NotifySettings:
        return load_settings(env="aws", data_dir=tmp_path / name, dynamodb_endpoint_url=dynamodb_endpoint,
                             table_prefix=prefix, aws_region="us-east-1", s3_bucket="unused",
                             delivery_channel="outbox", stream_backend="local",
                             public_base_url="https://notify.example.com",
                             master_key_file=tmp_path / "shared" / "master.keys.json")
    return make


@pytest.mark.dynamodb
def test_a_user_sealed_by_one_instance_opens_in_another(instances: Any) -> None:
    writer, reader = instances("profile-function"), instances("delivery-function")
    a, b = build_store(writer), build_store(reader)
    try:
        a.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "email": EMAIL})
        raw = build_adapter(reader).table(tables.USERS).get("u1", tables.PROFILE_SK)
        assert raw is not None and raw["email"].startswith("enc:v1:")  # sealed at rest
        got = b.table(tables.USERS).get("u1", tables.PROFILE_SK)
        assert got is not None and got["email"] == EMAIL
        b.table(tables.USERS).put({"pk": "u2", "sk": tables.PROFILE_SK, "email": "b@example.com"})
        got = a.table(tables.USERS).get("u2", tables.PROFILE_SK)
        assert got is not None and got["email"] == "b@example.com"
    finally:
        a.close()
        b.close()
    for settings in (writer, reader):  # nothing minted per instance on its own disk
        assert not list(settings.secrets_dir.glob("*.keys.json"))


@pytest.mark.dynamodb
def test_a_link_signed_by_the_delivery_worker_verifies_in_the_tracking_function(instances: Any) -> None:
    from lambdas import runtime, track

    worker_side, tracking_side = instances("worker-pod"), instances("track-function")
    store = build_store(worker_side)
    clock = ManualClock(NOW)
    try:
        links = build_worker(worker_side, store, clock=clock).links
        token = links.click("n-1").rsplit("/", 1)[1]
        runtime.configure(tracking_side, clock=clock)
        track.use(store=None, stream=None)  # the function's own cold start: its Store, its vault
        try:
            keys = track._deps.get().keys
            assert verify_token(keys, token, kind="click", now=NOW) == "n-1"
            with pytest.raises(InvalidTokenError):  # and still only our keys verify
                verify_token(keys, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), kind="click", now=NOW)
        finally:
            track.use(store=None, stream=None)
            runtime.configure(None)
    finally:
        store.close()


@pytest.mark.dynamodb
def test_webhook_receivers_see_one_signing_key_whichever_instance_sent(instances: Any) -> None:
    clock = ManualClock(NOW)
    first = webhook_keys(instances("deliver-a"), clock=clock)()
    second = webhook_keys(instances("deliver-b"), clock=clock)()
    assert first == second and len(first) == 1


@pytest.mark.dynamodb
def test_the_store_holds_no_ring_or_data_key_in_the_clear(instances: Any) -> None:
    settings = instances("any")
    clock = ManualClock(NOW)
    vault = build_vault(settings)
    secrets = [k.secret for purpose in (TRACKING_PURPOSE, WEBHOOK_PURPOSE)
               for k in vault.ring(purpose, clock=clock).keys]
    sealer = vault.sealer()
    sealer.seal(EMAIL, purpose="users", field="email")
    data_keys = [sealer.master.unwrap(w, context="users")
                 for w in json.loads(_document(settings, "data.keys"))["purposes"]["users"]["keys"].values()]
    stored = "".join(_document(settings, name) for name in ("data.keys", "tracking.keys", "webhook.keys"))
    assert len(secrets) == 2 and len(data_keys) == 1
    for secret in secrets + data_keys:
        assert base64.b64encode(secret).decode() not in stored and secret.hex() not in stored
    assert '"wrapped"' in stored and '"secret"' not in stored


def _document(settings: NotifySettings, name: str) -> str:
    item = build_adapter(settings).table(tables.KEY_DOCUMENTS).get(name, tables.KEY_DOCUMENT_SK, consistent=True)
    assert item is not None
    return str(item["body"])


@pytest.mark.dynamodb
def test_instances_minting_the_first_keys_at_once_agree_on_one(instances: Any) -> None:
    """Eight cold starts at the same moment each find no key. The document's compare-and-set lets one mint
    win; a loser that kept its own key would seal values nobody else can open."""
    count = 8
    start = threading.Barrier(count)
    sealed: list[str] = [""] * count
    active: list[str] = [""] * count
    failures: list[BaseException] = []

    def cold_start(i: int) -> None:
        try:
            settings = instances(f"cold-{i}")
            start.wait(timeout=60)
            vault = build_vault(settings)
            sealed[i] = vault.sealer().seal(f"user{i}@example.com", purpose="users", field="email")
            active[i] = vault.ring(TRACKING_PURPOSE, clock=ManualClock(NOW)).active_kid
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=cold_start, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(set(active)) == 1
    assert len({value.split(":")[2] for value in sealed}) == 1  # one data key
    later = build_vault(instances("later")).sealer()
    assert [later.open(v, purpose="users", field="email") for v in sealed] == [
        f"user{i}@example.com" for i in range(count)]


@pytest.mark.dynamodb
@pytest.mark.parametrize("document", ["data.keys", "tracking.keys"])
def test_the_instance_that_loses_the_mint_takes_the_winners_key(instances: Any, document: str) -> None:
    """The same race, one interleaving forced: the loser reads "no key", the winner mints and uses its key,
    then the loser saves. Without the compare-and-set the loser's key replaces the winner's."""
    from notify_core.security.vault import KeyVault
    from notify_core.store.key_documents import StoreKeyDocuments

    winner, loser = build_vault(instances("winner")), build_vault(instances("loser"))
    clock = ManualClock(NOW)
    used: list[str] = []

    def winner_mints() -> None:
        if document == "data.keys":
            used.append(winner.sealer().seal(EMAIL, purpose="users", field="email"))
        else:
            used.append(sign_token(winner.ring(TRACKING_PURPOSE, clock=clock), "n-1", kind="click"))

    class Interleaved(StoreKeyDocuments):
        def read(self, name: str) -> Any:
            found = super().read(name)
            if found is None and name == document and not used:
                winner_mints()  # between the loser's read and its save
            return found

    assert isinstance(loser.documents, StoreKeyDocuments)
    late = KeyVault(Interleaved(build_adapter(instances("loser"))), loser.master, wrap_rings=True)
    if document == "data.keys":
        mine = late.sealer().seal("late@example.com", purpose="users", field="email")
        fresh = build_vault(instances("reader")).sealer()
        assert fresh.open(used[0], purpose="users", field="email") == EMAIL
        assert fresh.open(mine, purpose="users", field="email") == "late@example.com"
    else:
        ring = late.ring(TRACKING_PURPOSE, clock=clock)
        assert verify_token(ring, used[0], kind="click", now=NOW) == "n-1"
        assert build_vault(instances("reader")).ring(TRACKING_PURPOSE, clock=clock).active_kid == ring.active_kid


@pytest.mark.dynamodb
def test_a_rotation_run_anywhere_reaches_every_warm_instance(instances: Any) -> None:
    clock = ManualClock(NOW)
    warm = build_vault(instances("warm-track")).live_ring(TRACKING_PURPOSE, clock=clock, check_s=5.0)
    old_token = sign_token(warm, "n-old", kind="click")
    rotated = build_vault(instances("operator")).rotate_ring(TRACKING_PURPOSE, clock=clock,
                                                             overlap=timedelta(days=2))
    new_token = sign_token(rotated, "n-new", kind="click")
    assert warm.active.kid != rotated.active_kid  # not re-read before check_s
    clock.advance(5.0)
    assert warm.active.kid == rotated.active_kid
    assert verify_token(warm, new_token, kind="click", now=NOW) == "n-new"
    assert verify_token(warm, old_token, kind="click", now=NOW) == "n-old"  # in its overlap


def test_aws_without_a_shared_master_key_is_refused(tmp_path: Path) -> None:
    settings = load_settings(env="aws", data_dir=tmp_path, s3_bucket="b", aws_region="us-east-1",
                             dynamodb_endpoint_url="http://127.0.0.1:9", delivery_channel="outbox")
    with pytest.raises(ConfigurationError, match="NOTIFY_KMS_KEY_ID"):
        build_vault(settings)
    with pytest.raises(ConfigurationError, match="NOTIFY_MASTER_KEY_FILE"):
        build_store(settings)
    assert not (tmp_path / "secrets").exists()  # nothing minted on the instance's disk


def test_file_documents_are_compare_and_set(tmp_path: Path) -> None:
    one, two = FileKeyDocuments(tmp_path), FileKeyDocuments(tmp_path)
    assert one.save("x.keys", {"v": 1}, replaces=None)
    assert not two.save("x.keys", {"v": 2}, replaces=None)  # it exists now
    first = one.read("x.keys")
    assert first is not None and first.body == {"v": 1}
    assert two.save("x.keys", {"v": 3}, replaces=first.tag)
    assert not one.save("x.keys", {"v": 4}, replaces=first.tag)  # stale: someone wrote since
    now = two.read("x.keys")
    assert now is not None and now.body == {"v": 3}
    assert (tmp_path / "x.keys.json").stat().st_mode & 0o777 == 0o600


def test_the_kms_master_key_wraps_the_rings_in_a_shared_store(tmp_path: Path) -> None:
    """The same through KMS (moto: no KMS server runs offline), on a Store both vaults read."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from notify_core.security.crypto import KmsMasterKey
    from notify_core.security.vault import KeyVault
    from notify_core.store.key_documents import StoreKeyDocuments
    from notify_core.store.sqlite import SqliteStore

    with moto.mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        store = SqliteStore(tmp_path / "store.sqlite")
        try:
            vaults = [KeyVault(StoreKeyDocuments(store), KmsMasterKey(key_id, region="us-east-1", client=kms),
                               wrap_rings=True) for _ in range(2)]
            clock = ManualClock(NOW)
            token = sign_token(vaults[0].ring(TRACKING_PURPOSE, clock=clock), "n-1", kind="click")
            assert verify_token(vaults[1].ring(TRACKING_PURPOSE, clock=clock), token, kind="click", now=NOW) == "n-1"
            body = store.table(tables.KEY_DOCUMENTS).get("tracking.keys", tables.KEY_DOCUMENT_SK)
            assert body is not None and f"kms:{key_id}" in str(body["body"])
        finally:
            store.close()


def test_processes_starting_at_once_on_a_fresh_folder_keep_one_master_key(tmp_path: Path) -> None:
    """``notify serve`` and ``notify worker`` started together on a new data directory: each found no master
    key file and wrote its own, and the data keys one of them wrapped were lost with its master."""
    from notify_core.security.crypto import MASTER_FILE, LocalMasterKey

    count = 8
    start = threading.Barrier(count)
    versions: list[str] = []
    failures: list[BaseException] = []

    def begin() -> None:
        try:
            start.wait(timeout=60)
            versions.append(LocalMasterKey(tmp_path / MASTER_FILE).active_version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=begin) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(versions) == count and len(set(versions)) == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name != MASTER_FILE]  # no temp file left behind


@pytest.mark.dynamodb
def test_the_authorizer_and_the_capture_work_where_no_key_can_be_reached(instances: Any) -> None:
    """Least privilege, by behaviour: the API-key authorizer and the event capture read ``api_keys`` alone
    (their roles have no key documents and no direct KMS use), so an instance with no master key at all
    authorizes keys and accepts events, while a function that opens personal fields refuses to start."""
    from lambdas import authorizer, capture_events, runtime
    from notify_core.security.keys import KeyRing
    from notify_core.stream.local_log import LocalLog
    from tests import auth
    from tests.events.helpers import api_event, click

    pepper = "p" * 48
    settings = instances("authorizer-function").model_copy(update={"master_key_file": None,
                                                                     "api_key_pepper": pepper})
    with pytest.raises(ConfigurationError, match="NOTIFY_MASTER_KEY_FILE"):
        build_store(settings)  # no master: nothing here can seal or open a personal field
    keys = KeyRing(build_adapter(settings), pepper=pepper.encode(), clock=ManualClock(NOW))
    _, writer = keys.create(name="app", scopes=["events:write"], actor="test", source="pytest")
    log = LocalLog(settings.data_dir / "log.sqlite")
    runtime.configure(settings, clock=ManualClock(NOW))
    runtime.use_auth(None)  # the function's own cold start: its key check from its settings
    capture_events.use_stream(log)
    try:
        def v2(token: str) -> dict[str, Any]:
            return {"version": "2.0", "rawPath": "/v1/events", "headers": {"x-api-key": token},
                    "requestContext": {"http": {"method": "POST", "path": "/v1/events"}}}

        assert authorizer.handler(v2(writer), None)["isAuthorized"] is True
        assert authorizer.handler(v2(writer[:-2] + "xx"), None)["isAuthorized"] is False
        event = api_event([click(1)])
        event["headers"] = {**event["headers"], "x-api-key": writer}
        reply = capture_events.handler(event, None)
        assert reply["statusCode"] == 202, reply
        assert sum(log.end_offsets("notify_clickstream").values()) == 1
    finally:
        capture_events.use_stream(None)
        runtime.configure(None)
        auth.reinstall()
        log.close()
    assert not list(settings.secrets_dir.glob("*.keys.json"))  # and nothing minted on the instance's disk
