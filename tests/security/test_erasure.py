"""Right to erasure: after ``erase_user`` nothing with the user's id remains in any Store table, lake file,
landing/quarantine file, vector, the outbox, the logs or the stream log (every table and file scanned)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.channels import OutboxChannel
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import sign_token, track
from notify_core.erasure import belongs_to, erase_user
from notify_core.erasure_register import pseudonym
from notify_core.events.capture import capture_events
from notify_core.events.consumer import EventConsumer
from notify_core.features import refresh_features
from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.security.crypto import build_sealer
from notify_core.security.keyring import ephemeral_keyring
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.factory import build_store
from notify_core.stream.local_log import LocalLog

VICTIM, OTHER = "victim-0000000", "victim-0000001"


def _landing(root: Path) -> None:
    (root / "users").mkdir(parents=True)
    (root / "products").mkdir()
    (root / "purchases").mkdir()
    (root / "users" / "u.csv").write_text(
        "user_id,country,timezone,signup_date,daily_cap\n"
        f"{VICTIM},GB,Europe/London,2010-05-01,3\n{OTHER},FR,Europe/Paris,2010-06-01,2\n")
    (root / "products" / "p.csv").write_text("product_id,description,category,unit_price\np1,RED MUG,kitchen,2.5\n")
    (root / "purchases" / "o.csv").write_text(
        "order_id,user_id,product_id,quantity,unit_price,ts,country,is_return\n"
        f"o1,{VICTIM},p1,2,2.5,2011-01-10T09:00:00,GB,false\n"
        f"o2,{OTHER},p1,1,2.5,2011-02-10T09:00:00,FR,false\n"
        f"o3,{VICTIM},p1,1,1e308,2011-03-10T09:00:00,GB,false\n")  # quarantined: keeps the victim's id there


def _string_cells(frame: pl.DataFrame) -> list[str]:
    cells: list[str] = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            cells += [v for v in frame[name].to_list() if v is not None]
        elif isinstance(dtype, pl.List):
            cells += [str(v) for v in frame[name].to_list()]
    return cells


def _remaining(data_dir: Path, store: Any, user_id: str) -> list[str]:
    found: list[str] = []
    for name in store.table_names():
        for item in store.table(name).scan():
            rule = tables.USER_ITEMS.get(name, tables.UserKey.ATTRIBUTE)
            if belongs_to(item, user_id, rule=rule) or user_id in json.dumps(item, default=str):
                found.append(f"store {name}: {item.get('pk')}/{item.get('sk')}")
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            if any(user_id in cell for cell in _string_cells(pl.read_parquet(path))):
                found.append(f"parquet {path}")
        elif user_id.encode() in path.read_bytes():
            found.append(f"file {path}")
    return found


def test_erase_user_leaves_nothing_anywhere(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    store = build_store(settings)
    log = LocalLog(settings.local_log_path)
    lake = Lake(settings.lake_root)
    try:
        # batch: users, products, purchases -> lake, Store, quarantine; features
        _landing(settings.landing)
        for dataset in ("users", "products", "purchases"):
            ingest_dataset(dataset, landing=settings.landing, lake=lake, store=store,
                           quarantine=settings.quarantine_root)
        refresh_features(lake, store)
        # vectors: the Store's embeddings table and the lake's user vector table
        store.table(tables.EMBEDDINGS).batch_put(
            {"pk": f"user#{u}", "sk": tables.VECTOR_SK, "vector": np.ones(4, np.float32).tobytes(), "dim": 4}
            for u in (VICTIM, OTHER))
        lake.write_table("embeddings_user", pl.DataFrame({"id": [VICTIM, OTHER], "content_hash": ["a", "b"]}))
        # events: an order and a click through capture -> stream -> consumer (user_events, ledger, landing)
        now = datetime.now(UTC).replace(microsecond=0)
        order = {"type": "order", "user_id": VICTIM, "ts": now.isoformat(), "order_id": "o9",
                 "items": [{"product_id": "p1", "quantity": 1, "unit_price": 2.5}]}
        click = {"type": "click", "user_id": VICTIM, "ts": now.isoformat(), "product_id": "p1"}
        assert capture_events(json.dumps([order, click]), stream=log, clock=ManualClock(now)).accepted == 2
        consumer = EventConsumer(stream=log, store=store, landing=settings.landing, group="g", max_batch=100,
                                 clock=ManualClock(now))
        consumer.run_once()
        consumer.close()
        # delivery: both users get a notification through the sealed outbox; the victim clicks it
        clock = ManualClock(now)
        [item, _] = seed_due(store, n=2, start=now, user_prefix="victim-", with_plans=True)
        keys = ephemeral_keyring("tracking", now=now)
        channel = OutboxChannel(settings.outbox, sealer=build_sealer(settings.secrets_dir), clock=clock)
        DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, tracking_keys=keys,
                       options=WorkerOptions(concurrency=1)).run_until_idle()
        channel.close()
        track(store, log, token=sign_token(keys, item["notification_id"], kind="click"), kind="click", keys=keys,
              clock=clock)
        (data / "logs").mkdir(exist_ok=True)
        (data / "logs" / "notify.jsonl").write_text(
            "".join(json.dumps({"msg": "request", "user_id": u}) + "\n" for u in (VICTIM, OTHER)))

        before = _remaining(data, store, VICTIM)
        assert len(before) > 15, before  # the user really is everywhere first
        kinds = " ".join(before)
        for where in ("store users", "store purchases", "store user_events", "store embeddings", "store schedules",
                      "store plans", "store deliveries", "store dedupe", "lake/users", "lake/purchases",
                      "embeddings_user", "quarantine", "landing", "outbox", "logs", "stream"):
            assert where in kinds, where

        audit: list[tuple[str, dict[str, Any]]] = []
        report = erase_user(VICTIM, store=store, file_roots=[data], stream_log=log,
                            audit=lambda action, entry: audit.append((action, dict(entry))))
        assert _remaining(data, store, VICTIM) == []
        assert report.total > 0 and report.stream_messages == 3  # order, click, notification_click
        assert audit == [("user.delete", {"actor": "cli", "target": pseudonym(VICTIM), "rows_removed": report.total,
                                      "pending": False})]
        # the other user is untouched, and a second run finds nothing
        assert _remaining(data, store, OTHER) != []
        assert store.table(tables.USERS).get(OTHER, tables.PROFILE_SK) is not None
        assert erase_user(VICTIM, store=store, file_roots=[data], stream_log=log).total == 0
        # re-ingesting the landing folder does not bring the victim back
        for dataset in ("users", "purchases"):
            ingest_dataset(dataset, landing=settings.landing, lake=lake, store=store,
                           quarantine=settings.quarantine_root, full_store_sync=True)
        assert _remaining(data, store, VICTIM) == []
    finally:
        log.close()
        store.close()


def test_erasure_on_dynamodb_reaches_every_user_table_without_listing_tables(dynamodb_endpoint: str) -> None:
    """On DynamoDB the erasure scans the tables of ``USER_ITEMS`` (one the code never opened in this process
    included) and never calls ``ListTables``: that action covers every table of the account, no role has it,
    and the erase function's calls were refused by IAM on AWS. The botocore hook stands in for IAM here."""
    import uuid

    import boto3

    from notify_core.erasure import erase_from_store
    from notify_core.errors import NotifyError
    from notify_core.store.dynamodb import DynamoStore

    prefix = f"erase{uuid.uuid4().hex[:8]}_"
    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-1")
    writer = DynamoStore(region="eu-west-1", endpoint_url=dynamodb_endpoint, table_prefix=prefix, session=session)
    writer.table(tables.USERS).put({"pk": VICTIM, "sk": tables.PROFILE_SK, "user_id": VICTIM})
    writer.table(tables.DEDUPE).put({"pk": "n1", "sk": tables.DEDUPE_SK, "user_id": VICTIM})
    writer.table(tables.EMBEDDINGS).put({"pk": f"user#{VICTIM}", "sk": tables.VECTOR_SK})
    writer.table(tables.USERS).put({"pk": OTHER, "sk": tables.PROFILE_SK, "user_id": OTHER})
    writer.table(tables.PRODUCTS).put({"pk": VICTIM, "sk": tables.PRODUCT_SK})  # a stock code equal to the id
    for name in tables.ALL_TABLES:  # the deployed stack has every table (the templates create them)
        writer.table(name)
    writer.close()

    def refuse(**_: Any) -> None:
        raise NotifyError("AccessDenied: dynamodb:ListTables")

    store = DynamoStore(region="eu-west-1", endpoint_url=dynamodb_endpoint, table_prefix=prefix,
                        session=session, create_tables=False)  # a fresh view: it has opened no table yet
    store.client.meta.events.register("before-call.dynamodb.ListTables", refuse)
    try:
        assert erase_from_store(store, VICTIM) == {tables.USERS: 1, tables.DEDUPE: 1, tables.EMBEDDINGS: 1}
        left = [i for name in (*tables.USER_ITEMS, tables.PRODUCTS) for i in store.table(name).scan()]
        assert sorted(i["pk"] for i in left) == sorted([OTHER, VICTIM])  # the other user, and the product
        assert store.table(tables.PRODUCTS).get(VICTIM, tables.PRODUCT_SK) is not None
    finally:
        store.close()


def test_every_table_is_either_a_user_table_with_a_key_rule_or_holds_no_user_items() -> None:
    assert set(tables.USER_ITEMS) | set(tables.NO_USER_ITEMS) == set(tables.ALL_TABLES)
    assert not set(tables.USER_ITEMS) & set(tables.NO_USER_ITEMS)
    assert list(tables.USER_ITEMS)[-1] == tables.NOTIFICATION_INTERACTIONS  # after the tables naming notifications


def test_erasure_leaves_products_campaigns_and_positions_whose_key_equals_the_user_id(tmp_path: Path) -> None:
    """27 Online Retail customer numbers are also stock codes. Erasing customer 15036 deleted product 15036
    and its features (a key-shape match over every table); a campaign, its day's stats, a stream position or
    a sync-ledger entry named like a user went the same way."""
    settings = load_settings(data_dir=tmp_path / "data")
    store = build_store(settings)
    user = "15036"
    kept = [(tables.PRODUCTS, {"pk": user, "sk": tables.PRODUCT_SK, "description": "SET OF 6 FLOWER FANS"}),
            (tables.PRODUCT_FEATURES, {"pk": user, "sk": tables.FEATURES_SK, "buyers": 12}),
            (tables.CAMPAIGNS, {"pk": user, "sk": tables.CAMPAIGN_SK}),
            (tables.CAMPAIGN_STATS, {"pk": user, "sk": "2026-11-30", "sent": 4}),
            (tables.STREAM_POSITIONS, {"pk": user, "sk": "clickstream#0", "offset": 7}),
            (tables.SYNC_LEDGER, {"pk": "products", "sk": f"{user}#x", "digest": "d"}),
            (tables.DELIVERY_CURSOR, {"pk": "minute", "sk": f"{user}#"})]
    for name, item in kept:
        store.table(name).put(item)
    store.table(tables.USERS).put({"pk": user, "sk": tables.PROFILE_SK, "user_id": user})
    store.table(tables.SCHEDULES).put({"pk": "2026-11-30T10:00#01", "sk": f"{user}#n1", "notification_id": "n1"})
    store.table(tables.NOTIFICATION_INTERACTIONS).put({"pk": "n1", "sk": "open"})
    try:
        report = erase_user(user, store=store, clock=ManualClock(datetime(2026, 11, 30, tzinfo=UTC)))
        assert report.store_rows == {tables.USERS: 1, tables.SCHEDULES: 1, tables.NOTIFICATION_INTERACTIONS: 1}
        for name, item in kept:
            assert store.table(name).get(str(item["pk"]), str(item["sk"])) is not None, name
    finally:
        store.close()


def test_after_notify_users_delete_no_byte_of_the_data_directory_names_the_user(tmp_path: Path) -> None:
    """The audit entry of an erasure and its log line used to name the user by id: the audit trail is kept for
    good, so it was the one place an erased user stayed named (with the register holding only a pseudonym).
    Now both carry the pseudonym; the CLI runs in a real process and every file left is read byte by byte."""
    import subprocess
    import sys

    from notify_core.security import audit as audit_log

    user = "zq-audit-5521"
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    store = build_store(settings)
    store.table(tables.USERS).put({"pk": user, "sk": tables.PROFILE_SK, "user_id": user, "email": "z@example.org"})
    store.table(tables.PURCHASES).put({"pk": user, "sk": "2011-01-10T09:00:00#o1#p1", "order_id": "o1"})
    store.close()
    (data / "logs").mkdir(parents=True, exist_ok=True)
    (data / "logs" / "notify.jsonl").write_text(json.dumps({"message": "sent", "user_id": user}) + "\n")
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", "users", "delete", user, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["store_rows"] == {"purchases": 1, "users": 1}
    assert user not in done.stderr  # the structured log line names the pseudonym
    holding = [str(p) for p in data.rglob("*") if p.is_file() and user.encode() in p.read_bytes()]
    assert holding == []
    store = build_store(settings)
    try:
        [entry] = [e for e in audit_log.entries(store) if e.action == "user.delete"]
        assert entry.target == pseudonym(user) and audit_log.verify(store).ok
    finally:
        store.close()


def test_erasing_a_user_leaves_a_user_whose_id_it_prefixes(tmp_path: Path) -> None:
    """Schedule items are keyed ``<user>#<notification>``: user ``a#b`` (landed before ids were checked at
    ingestion) has keys that start like user ``a``'s, and a prefix match erased them with ``a``."""
    store = build_store(load_settings(data_dir=tmp_path / "data"))
    for user, nid in (("a", "n1"), ("a#b", "n2")):
        store.table(tables.USERS).put({"pk": user, "sk": tables.PROFILE_SK, "user_id": user})
        store.table(tables.SCHEDULES).put({"pk": "2026-11-30T10:00#01", "sk": tables.schedule_sk(user, nid),
                                           "notification_id": nid})  # no user_id: the key alone names the user
    try:
        report = erase_user("a", store=store, clock=ManualClock(datetime(2026, 11, 30, tzinfo=UTC)))
        assert report.store_rows == {tables.USERS: 1, tables.SCHEDULES: 1}
        assert [i["sk"] for i in store.table(tables.SCHEDULES).scan()] == ["a#b#n2"]
    finally:
        store.close()


def test_file_erasure_reads_logs_matches_whole_ids_and_ids_only_in_user_vectors(tmp_path: Path) -> None:
    """erase_from_files: a ``.log`` file is JSON lines and its lines naming the user go; a line naming a user
    whose id the erased one prefixes stays (``"al"`` is not ``"alice"``); an ``id`` column is a user id only
    in the user vectors' table, so a product whose id equals the user's stays elsewhere."""
    from notify_core.erasure import erase_from_files

    root = tmp_path / "data"
    (root / "logs").mkdir(parents=True)
    log = root / "logs" / "notify.log"
    log.write_text(json.dumps({"msg": "sent", "user_id": "al"}) + "\n"
                   + json.dumps({"msg": "sent", "user_id": "alice"}) + "\n")
    (root / "lake" / "embeddings_user").mkdir(parents=True)
    vectors = root / "lake" / "embeddings_user" / "v.parquet"
    pl.DataFrame({"id": ["al", "alice"], "x": [1.0, 2.0]}).write_parquet(vectors)
    (root / "lake" / "products").mkdir(parents=True)
    pl.DataFrame({"id": ["al", "p2"], "price": [1.0, 2.0]}).write_parquet(root / "lake" / "products" / "p.parquet")
    removed = erase_from_files([root], frozenset({"al"}))
    assert removed == {str(log): 1, str(vectors): 1}
    assert [json.loads(line)["user_id"] for line in log.read_text().splitlines()] == ["alice"]
    assert pl.read_parquet(vectors)["id"].to_list() == ["alice"]
    assert pl.read_parquet(root / "lake" / "products" / "p.parquet")["id"].to_list() == ["al", "p2"]
