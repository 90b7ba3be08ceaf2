"""The campaigns of a served index as columns: what eligibility and scoring read, one numpy array each.

A request scores a few hundred candidate rows. Looking each one up in a dict of rows and testing it in
Python costs ~10 us a candidate (2-3 ms a request at 200k campaigns); the same tests as array
operations over the candidates' row numbers cost a few microseconds in all. So each index version
(and the overlay of live upserts) is turned into a :class:`CampaignTable` once, when it is loaded, and
the recommender works in row numbers from the ANN answer to the final top-N.

Missing values mean what they meant on the campaign row: no status = active, no dates = open-ended, no
target countries = everyone, no priority = ``DEFAULT_PRIORITY``, no cooldown = 0 hours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.campaigns import ACTIVE, DEFAULT_PRIORITY, ELIGIBILITY_COLUMNS
from notify_core.campaigns import schema as campaign_schema

Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
EPOCH = date(1970, 1, 1)
OPEN_START = np.iinfo(np.int32).min
OPEN_END = np.iinfo(np.int32).max

TABLE_COLUMNS: dict[str, Any] = campaign_schema("campaign_id", "product_ids", *ELIGIBILITY_COLUMNS)


def epoch_day(day: date) -> int:
    return (day - EPOCH).days


def as_date(value: Any) -> date | None:
    """A campaign row's date (a date, a datetime, or an ISO string); None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@dataclass(frozen=True, eq=False)
class CampaignTable:
    """One row per campaign; row numbers are the ANN index's (a version's rows, then the overlay's)."""

    ids: tuple[str, ...]
    active: Mask
    start: npt.NDArray[np.int32]  # epoch days; OPEN_START when the campaign has no start date
    end: npt.NDArray[np.int32]  # epoch days; OPEN_END when open-ended
    category: npt.NDArray[np.int32]  # code into ``categories``; -1 for none
    categories: Mapping[str, int]
    targeted: Mask
    targets: Mapping[str, Rows]  # country -> targeted rows that include it
    cooldown_hours: npt.NDArray[np.float64]
    priority: npt.NDArray[np.int32]
    products: Mapping[str, Rows]  # product id -> rows promoting it
    row_of: Mapping[str, int]
    _allowed: dict[str | None, Mask] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> CampaignTable:
        """From ``TABLE_COLUMNS`` (absent columns take the defaults); rows keep the frame's order."""
        full = frame.with_columns([pl.lit(None, dtype=dtype).alias(name) for name, dtype in TABLE_COLUMNS.items()
                                   if name not in frame.columns]).select(list(TABLE_COLUMNS)).cast(TABLE_COLUMNS)  # type: ignore[arg-type]
        ids = tuple(full["campaign_id"].to_list())
        categories = {c: i for i, c in enumerate(sorted(full["category"].drop_nulls().unique().to_list()))}
        targets_long = (full.with_row_index("row").select("row", "target_countries").explode("target_countries")
                        .drop_nulls())
        targets = {str(country): group["row"].to_numpy().astype(np.int64)
                   for (country,), group in targets_long.group_by("target_countries")}
        products_long = (full.with_row_index("row").select("row", "product_ids").explode("product_ids")
                         .drop_nulls())
        products = {str(pid): group["row"].to_numpy().astype(np.int64)
                    for (pid,), group in products_long.group_by("product_ids", maintain_order=True)}
        days = full.select(pl.col("start_date").cast(pl.Int32).fill_null(OPEN_START),
                           pl.col("end_date").cast(pl.Int32).fill_null(OPEN_END))
        return cls(
            ids=ids,
            active=(full["status"].fill_null(ACTIVE) == ACTIVE).to_numpy().astype(bool),
            start=days["start_date"].to_numpy().astype(np.int32),
            end=days["end_date"].to_numpy().astype(np.int32),
            category=full["category"].replace_strict(categories, default=-1, return_dtype=pl.Int32)
            .to_numpy().astype(np.int32),
            categories=categories,
            targeted=(full["target_countries"].list.len().fill_null(0) > 0).to_numpy().astype(bool),
            targets=targets,
            cooldown_hours=full["cooldown_hours"].fill_null(0).to_numpy().astype(np.float64),
            priority=full["priority"].fill_null(DEFAULT_PRIORITY).to_numpy().astype(np.int32),
            products=products,
            row_of={cid: row for row, cid in enumerate(ids)},
        )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> CampaignTable:
        """From campaign rows as dicts (the overlay's JSON rows): dates may be strings or dates."""
        records = [{
            "campaign_id": str(r["campaign_id"]),
            "product_ids": [str(p) for p in r.get("product_ids") or ()],
            "status": r.get("status"), "start_date": as_date(r.get("start_date")),
            "end_date": as_date(r.get("end_date")),
            "target_countries": [str(c) for c in r.get("target_countries") or ()],
            "category": r.get("category"),
            "cooldown_hours": int(r["cooldown_hours"]) if r.get("cooldown_hours") is not None else None,
            "priority": int(r["priority"]) if r.get("priority") is not None else None,
        } for r in rows]
        return cls.from_frame(pl.DataFrame(records, schema=TABLE_COLUMNS))

    @classmethod
    def empty(cls) -> CampaignTable:
        return cls.from_frame(pl.DataFrame(schema=TABLE_COLUMNS))

    def concat(self, other: CampaignTable) -> CampaignTable:
        """This table's rows, then ``other``'s (renumbered after them)."""
        if not len(other):
            return self
        offset = len(self)
        names = sorted({*self.categories, *other.categories})
        categories = {c: i for i, c in enumerate(names)}

        def recode(table: CampaignTable) -> npt.NDArray[np.int32]:
            lookup = np.array([categories[c] for c in sorted(table.categories, key=table.categories.__getitem__)]
                              + [-1], dtype=np.int32)
            return lookup[table.category]  # -1 indexes the trailing -1

        def merge(a: Mapping[str, Rows], b: Mapping[str, Rows]) -> dict[str, Rows]:
            out = dict(a)
            for key, rows in b.items():
                out[key] = np.concatenate([out[key], rows + offset]) if key in out else rows + offset
            return out

        return CampaignTable(
            ids=self.ids + other.ids,
            active=np.concatenate([self.active, other.active]),
            start=np.concatenate([self.start, other.start]), end=np.concatenate([self.end, other.end]),
            category=np.concatenate([recode(self), recode(other)]), categories=categories,
            targeted=np.concatenate([self.targeted, other.targeted]), targets=merge(self.targets, other.targets),
            cooldown_hours=np.concatenate([self.cooldown_hours, other.cooldown_hours]),
            priority=np.concatenate([self.priority, other.priority]),
            products=merge(self.products, other.products),
            row_of={**self.row_of, **{cid: row + offset for cid, row in other.row_of.items()}},
        )

    @cached_property
    def id_rank(self) -> Rows:
        """Each row's position in campaign-id order: ties in score break by id, as everywhere in Notify."""
        rank = np.empty(len(self.ids), dtype=np.int64)
        rank[np.argsort(np.asarray(self.ids, dtype=object), kind="stable")] = np.arange(len(self.ids))
        return rank

    def allowed_in(self, country: str | None) -> Mask:
        """Rows a user in ``country`` may get: untargeted ones, and those targeting the country (cached)."""
        mask = self._allowed.get(country)
        if mask is None:
            mask = ~self.targeted
            rows = self.targets.get(country) if country is not None else None
            if rows is not None:
                mask = mask.copy()
                mask[rows] = True
            self._allowed[country] = mask
        return mask

    def category_codes(self, names: frozenset[str] | set[str]) -> npt.NDArray[np.int32]:
        return np.array([self.categories[n] for n in names if n in self.categories], dtype=np.int32)

    def rows_of(self, campaign_ids: Sequence[str]) -> Rows:
        """Rows of campaign ids; -1 for an id the table does not hold."""
        return np.fromiter((self.row_of.get(c, -1) for c in campaign_ids), dtype=np.int64, count=len(campaign_ids))

    def rows_of_column(self, campaign_ids: pl.Series) -> Rows:
        """:meth:`rows_of` of a column (a planning chunk's ~10M candidate pairs): the ids are cast to an enum
        of this table's ids, in Rust, instead of a dict look-up each. A table holding an id twice (the
        dict keeps its last row) takes :meth:`rows_of`, so both answer the same."""
        if len(self.row_of) != len(self.ids) or None in self.row_of:
            return self.rows_of(campaign_ids.to_list())
        rows: Rows = (campaign_ids.cast(pl.String).cast(pl.Enum(list(self.ids)), strict=False).to_physical()
                      .cast(pl.Int64).fill_null(-1).to_numpy())
        return rows
