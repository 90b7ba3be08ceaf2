"""An erased user leaves no trace in Dagster's run storage, which no erasure can edit.

Dagster keeps every materialisation's metadata in its event log (SQLite files here, PostgreSQL on
Kubernetes) for as long as the run history is kept, and has no way to delete one user from it. Two
materialisations used to write user ids there: ``user_embeddings`` named the users it changed (for the
re-plan limited to them), and the ingestion assets listed their first bad rows by key (a user id for
``users``). Now the changed users are a set in the Store (``notify_core.scheduling.replan_users``), which
the erasure reaches, and the bad-row table names file, row and reason only.

The test runs the user chain on a Dagster instance with its storage in a folder, lands a new user with
a purchase and a bad profile row, runs it again, erases the user and reads every byte of that folder.
"""

# No `from __future__ import annotations`: Dagster reads asset annotations at decoration time.

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from notify_assets import automation
from notify_assets.definitions import assets_for, build_definitions
from notify_core.erasure import erase_user, erasure_paths
from notify_core.scheduling.replan_users import changed_users
from notify_core.schemas import PURCHASES, USERS
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.factory import build_store
from notify_resources.resources import EmbedderResource
from tests.retail_fixture import HEART, write_retail

USER = "zq-erase-7731"  # no digit run or word the storage could hold by chance
CHAIN = ("users", "products", "campaigns", "purchases", "product_embeddings", "purchase_embeddings",
         "user_embeddings")


def _profile(**values: object) -> pl.DataFrame:
    row = {"user_id": USER, "country": "France", "timezone": "Europe/Paris", "signup_date": date(2011, 1, 2),
           "daily_cap": 3, "quiet_start_hour": 22, "quiet_end_hour": 7, "channels": ["push"],
           "opted_out_categories": [], **values}
    return pl.DataFrame([row], schema=USERS)


def _holding(folder: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_an_erased_user_is_nowhere_in_dagster_storage_after_a_replan_set_and_a_bad_row(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", source_data=write_retail(tmp_path / "retail.parquet"))
    resources = {**(build_definitions(settings).resources or {}), "embedder": EmbedderResource(kind="hashing")}
    assets, _ = assets_for(settings)
    by = {a.key.to_user_string(): a for a in assets if len(a.keys) == 1}
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert dg.materialize([by[n] for n in ("online_retail_landing", *CHAIN)], resources=resources,
                              instance=instance).success

        _profile().write_parquet(settings.landing / "users" / "zq-new.parquet")
        _profile(daily_cap=9).write_parquet(settings.landing / "users" / "zq-bad.parquet")  # quarantined
        pl.DataFrame([{"order_id": "zq-1", "user_id": USER, "product_id": HEART, "quantity": 2, "unit_price": 2.5,
                       "ts": datetime(2011, 3, 20, 10, tzinfo=UTC), "country": "France", "is_return": False}],
                     schema=PURCHASES).write_parquet(settings.landing / "purchases" / "zq-new.parquet")
        assert dg.materialize([by[n] for n in CHAIN], resources=resources, instance=instance).success

        users = instance.fetch_materializations(dg.AssetKey("users"), limit=1).records[0].asset_materialization
        assert users is not None and users.metadata["rows_bad"].value == 1
        assert "daily_cap outside 0..5" in str(users.metadata["bad_rows"].value)
        vectors = instance.fetch_materializations(dg.AssetKey("user_embeddings"), limit=1).records[0]
        mat = vectors.asset_materialization
        assert mat is not None and mat.metadata[automation.CHANGED_USERS].value == 1
        set_id = str(mat.metadata[automation.CHANGED_USERS_SET].value)
        store = build_store(settings)
        assert changed_users(store, set_id, count=1) == [USER]  # the re-plan can still find who changed

        erase_user(USER, store=store, file_roots=erasure_paths(settings))

        assert changed_users(store, set_id, count=1) is None  # nobody left: a re-plan covers everyone
        assert not [i for i in store.table(tables.REPLAN_USERS).scan() if i["user_id"] == USER]
        store.close()
    assert _holding(home, set_id.encode())  # the read reaches where metadata is kept
    assert _holding(home, b"daily_cap outside 0..5")
    assert _holding(home, USER.encode()) == []
