"""The time split: everything a method may learn from (before the cut-off) and what it is judged on (after).

Leakage is avoided by construction, not by care: the *raw* export is cut at the cut-off (local shop
time, like the source's ``InvoiceDate``) and the training tables (users, products, purchases, the
campaign catalogue) are produced by running the ordinary loader on the rows before it. Nothing computed
from a test-window row can reach a method. The test window is read from the full mapping.

Truth is at campaign level: a campaign "converts" for a user if the user bought (non-return line) one of
its ``product_ids`` in the test window. The "new" variant drops, from both the ranking and the truth,
the campaigns promoting a product the user already bought in train (discovery, as in RELEVANCE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import sparse

from notify_core.campaigns.eligibility import ineligible_codes
from notify_core.campaigns.table import CampaignTable
from notify_core.errors import ValidationError
from notify_core.features import user_product_matrix
from notify_core.sources.online_retail import (
    SOURCE_TIMEZONE,
    SourceTables,
    map_online_retail,
    normalise_columns,
    read_source,
)
from notify_core.sources.synthetic import enrich_users, generate_campaigns

DEFAULT_CUTOFF = date(2011, 9, 1)
DEFAULT_HORIZON_DAYS = 60
Bool2D = npt.NDArray[np.bool_]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Split:
    """One train/test split, as dense/sparse matrices over sorted ids (rows: users, columns: campaigns).

    ``train_users``/``products`` index ``train_matrix`` (distinct orders per user and product, ALL train
    users: collaborative methods learn from everyone). ``users`` are the evaluated users (bought on both
    sides, optionally sampled), ``user_rows`` their rows in ``train_users``. ``eligible`` is what serving
    would let through for the user on the first test day (status, dates, targeting, opt-outs).
    """

    cutoff: date
    horizon_days: int
    seed: int
    train: SourceTables
    test_purchases: pl.DataFrame
    enriched_users: pl.DataFrame
    campaigns: pl.DataFrame
    campaign_ids: list[str]
    products: list[str]
    train_users: list[str]
    train_matrix: sparse.csr_matrix
    incidence: sparse.csr_matrix  # products x campaigns, 1 where the campaign promotes the product
    users: list[str]
    user_rows: npt.NDArray[np.int64]
    truth: Bool2D
    bought_before: Bool2D
    eligible: Bool2D
    priority: npt.NDArray[np.int64]

    @property
    def first_test_day(self) -> date:
        return self.cutoff

    def user_train_matrix(self) -> sparse.csr_matrix:
        """The evaluated users' rows of ``train_matrix`` (distinct orders per product)."""
        return sparse.csr_matrix(self.train_matrix[self.user_rows])


def local_midnight_utc(day: date) -> datetime:
    """The UTC instant of local shop midnight on ``day`` (the source's timestamps are shop-local)."""
    return datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(SOURCE_TIMEZONE)).astimezone(UTC)


def load_tables(source: Path | str, *, columns: Mapping[str, str] | None = None) -> tuple[pl.DataFrame, SourceTables]:
    """The raw export (for the train cut) and its full mapping (for the test window), through the one loader
    ingestion uses (:func:`read_source`; ``columns`` maps another retailer's names)."""
    raw = read_source(source, columns=columns)
    return raw, map_online_retail(raw)


def raw_before(raw: pl.DataFrame, cutoff: date) -> pl.DataFrame:
    """The export's rows strictly before local midnight of ``cutoff``: everything a model may learn from."""
    raw = normalise_columns(raw)
    return raw.filter(pl.col("InvoiceDate") < datetime.combine(cutoff, datetime.min.time()))


def _index(ids: list[str], name: str) -> pl.DataFrame:
    return pl.DataFrame({name: ids, "_i": np.arange(len(ids), dtype=np.int64)},
                        schema={name: pl.String, "_i": pl.Int64})


def _sparse(frame: pl.DataFrame, rows: pl.DataFrame, cols: pl.DataFrame, row_key: str, col_key: str,
            value: pl.Expr) -> sparse.csr_matrix:
    joined = (frame.join(rows, on=row_key).rename({"_i": "_r"}).join(cols, on=col_key).rename({"_i": "_c"})
              .select("_r", "_c", value.cast(pl.Float64).alias("_v")))
    return sparse.csr_matrix(
        (joined["_v"].to_numpy(), (joined["_r"].to_numpy(), joined["_c"].to_numpy())),
        shape=(rows.height, cols.height), dtype=np.float64,
    )


def make_split(
    raw: pl.DataFrame, full: SourceTables, *, cutoff: date = DEFAULT_CUTOFF,
    horizon_days: int = DEFAULT_HORIZON_DAYS, seed: int = 0, sample_users: int | None = None,
) -> Split:
    """Cut ``raw`` at ``cutoff`` and build everything the methods and metrics need (see :class:`Split`)."""
    if horizon_days < 1:
        raise ValidationError("horizon_days must be >= 1")
    train = map_online_retail(raw_before(raw, cutoff))
    if train.purchases.is_empty():
        raise ValidationError(f"no purchases before the cut-off {cutoff}")
    start, end = local_midnight_utc(cutoff), local_midnight_utc(cutoff + timedelta(days=horizon_days))
    test = full.purchases.filter(
        (pl.col("ts") >= start) & (pl.col("ts") < end) & ~pl.col("is_return") & pl.col("user_id").is_not_null())

    campaigns = generate_campaigns(train.products, train.purchases, seed=seed).sort("campaign_id")
    campaign_ids = campaigns["campaign_id"].to_list()
    products = sorted(train.products["product_id"].to_list())
    p_index, c_index = _index(products, "product_id"), _index(campaign_ids, "campaign_id")
    promoted = campaigns.select("campaign_id", "product_ids").explode("product_ids").rename(
        {"product_ids": "product_id"}).drop_nulls()
    incidence = _sparse(promoted, p_index, c_index, "product_id", "campaign_id", pl.lit(1.0))

    matrix = user_product_matrix(train.purchases)
    train_users = sorted(matrix["user_id"].unique().to_list())
    u_index = _index(train_users, "user_id")
    train_matrix = _sparse(matrix, u_index, p_index, "user_id", "product_id", pl.col("order_count"))

    users = sorted(set(train_users) & set(test["user_id"].unique().to_list()))
    if sample_users is not None and 0 < sample_users < len(users):
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(np.array(users, dtype=object), size=sample_users, replace=False).tolist())
    if not users:
        raise ValidationError("no user bought both before and after the cut-off")
    position = {u: i for i, u in enumerate(train_users)}
    user_rows = np.array([position[u] for u in users], dtype=np.int64)
    e_index = _index(users, "user_id")
    test_matrix = _sparse(test.select("user_id", "product_id").unique(), e_index, p_index, "user_id",
                          "product_id", pl.lit(1.0))
    truth = np.asarray((test_matrix @ incidence).todense()) > 0
    bought_before = np.asarray((train_matrix[user_rows] @ incidence).todense()) > 0

    enriched = enrich_users(train.users.filter(pl.col("user_id").is_in(users)), seed=seed).sort("user_id")
    if enriched["user_id"].to_list() != users:  # pragma: no cover - the loader keeps every buyer
        raise ValidationError("evaluated users lack a profile in the train data")
    eligible = eligibility(campaigns, enriched, day=cutoff)
    priority = campaigns["priority"].cast(pl.Int64).to_numpy()
    return Split(cutoff=cutoff, horizon_days=horizon_days, seed=seed, train=train, test_purchases=test,
                 enriched_users=enriched, campaigns=campaigns, campaign_ids=campaign_ids, products=products,
                 train_users=train_users, train_matrix=train_matrix, incidence=incidence, users=users,
                 user_rows=user_rows, truth=truth, bought_before=bought_before, eligible=eligible,
                 priority=priority)


def eligibility(campaigns: pl.DataFrame, users: pl.DataFrame, *, day: date) -> Bool2D:
    """Serving's filters (:func:`notify_core.campaigns.eligibility.ineligible_codes`, the one rule) as a
    users x campaigns mask for one day.

    No send history exists offline, so the cooldown filter never fires here; the replay applies cooldowns
    through the planner.
    """
    table = CampaignTable.from_frame(campaigns)
    rows = np.arange(len(table), dtype=np.int64)
    out = np.zeros((users.height, campaigns.height), dtype=bool)
    for row, (country, opted) in enumerate(zip(users["country"].to_list(), users["opted_out_categories"].to_list(),
                                               strict=True)):
        out[row] = ineligible_codes(table, rows, day=day, countries=country, opted_out=frozenset(opted or ())) == 0
    return out
