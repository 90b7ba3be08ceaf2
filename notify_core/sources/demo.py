"""Turn the Online Retail export into landing files Notify ingests like any other batch drop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from notify_core.atomic import atomic_write, sweep_temporaries
from notify_core.erasure_register import EVENT_TIME, ErasureRegister
from notify_core.sources.online_retail import SourceTables, map_online_retail, read_source
from notify_core.sources.synthetic import enrich_users, generate_campaigns

LANDING_NAME = "online_retail.parquet"
ERASED = "erased"  # the LandingResult.dropped reason of rows of erased users (the erasure register)


@dataclass(frozen=True, slots=True)
class LandingResult:
    rows: dict[str, int]
    files_written: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0


def write_if_changed(frame: pl.DataFrame, path: Path) -> bool:
    """Write a Parquet file unless an identical one is already there (keeps downstream runs no-ops)."""
    if path.exists():
        try:
            if pl.read_parquet(path).equals(frame):
                return False
        except Exception:  # an unreadable file is replaced
            pass
    atomic_write(path, frame.write_parquet)
    return True


def prepare_demo_landing(*, source: Path, landing: Path, seed: int,
                         columns: Mapping[str, str] | None = None,
                         erased: ErasureRegister | None = None) -> LandingResult:
    """Map the export, generate what it lacks, and drop one file per dataset in the landing folder
    (the same loader as ``notify evaluate``; ``columns`` maps another retailer's column names).

    ``erased`` (:func:`notify_core.erasure_register.erased_before` of the Store): the export still holds erased users,
    so their rows dated at or before their erasure never reach the landing files; they are counted as
    ``dropped["erased"]``. A user who bought again after their erasure is kept, as new data: their profile is
    rebuilt from the purchases kept (signed up again at the first of them)."""
    sweep_temporaries(landing)  # what a killed earlier preparation left behind
    tables = map_online_retail(read_source(source, columns=columns))
    users, purchases, erased_rows = _without_erased(tables, erased or ErasureRegister(), seed=seed)
    frames = {
        "users": users,
        "products": tables.products,
        "campaigns": generate_campaigns(tables.products, purchases, seed=seed),
        "purchases": purchases,
    }
    written = [name for name, frame in frames.items() if write_if_changed(frame, landing / name / LANDING_NAME)]
    dropped = dict(tables.dropped) if erased is None else {**tables.dropped, ERASED: erased_rows}
    return LandingResult(rows={n: f.height for n, f in frames.items()}, files_written=written,
                         dropped=dropped, rows_read=tables.rows_read)


def _without_erased(tables: SourceTables, register: ErasureRegister, *,
                    seed: int) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(users, purchases, rows of erased users dropped): the register's rule (columnar, as ingestion applies
    it) on the purchase lines, then the customers: a registered one is kept only from the purchases kept."""
    if not len(register):
        return enrich_users(tables.users, seed=seed), tables.purchases, 0
    purchases, lines = register.drop_erased(tables.purchases, time_column=EVENT_TIME["purchases"])
    customers, _ = register.drop_erased(tables.users, time_column=None)  # every registered customer, for now
    gone = tables.users.join(customers.select("user_id"), on="user_id", how="anti").get_column("user_id")
    back = (purchases.filter(pl.col("user_id").is_in(gone.implode()))
            .group_by("user_id")
            .agg(pl.col("country").mode().sort().first(), pl.col("ts").min().alias("first_purchase_ts")))
    customers = pl.concat([customers, back.select(customers.columns).cast(customers.schema)]).sort("user_id")
    users = enrich_users(customers, seed=seed)
    if back.height:  # a returning customer signed up again, at the first purchase after the erasure at the earliest
        first = back.select("user_id", pl.col("first_purchase_ts").dt.date().alias("_first"))
        users = (users.join(first, on="user_id", how="left", maintain_order="left")
                 .with_columns(pl.max_horizontal("signup_date", "_first").alias("signup_date")).drop("_first"))
    users, profiles = register.drop_erased(users, time_column=EVENT_TIME["users"])
    return users, purchases, lines + gone.len() - back.height + profiles
