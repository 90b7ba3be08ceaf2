"""Column schemas of Notify's datasets, shared by the landing files, the lake and the Store mappers.

These are the contracts between stages: ingestion validates landing files into these shapes, the
lake stores them as Parquet, features and embeddings read them with polars.
"""

from __future__ import annotations

import polars as pl
from polars._typing import PolarsDataType

Schema = dict[str, PolarsDataType]

USERS: Schema = {
    "user_id": pl.String,
    "country": pl.String,
    "timezone": pl.String,  # IANA name, e.g. "Europe/London"
    "signup_date": pl.Date,
    "daily_cap": pl.Int32,  # personal maximum notifications per day, 0..5
    "quiet_start_hour": pl.Int32,  # local hour quiet hours start (inclusive)
    "quiet_end_hour": pl.Int32,  # local hour quiet hours end (exclusive)
    "channels": pl.List(pl.String),
    "opted_out_categories": pl.List(pl.String),
}

PRODUCTS: Schema = {
    "product_id": pl.String,
    "description": pl.String,
    "category": pl.String,
    "unit_price": pl.Float64,
}

CAMPAIGNS: Schema = {
    "campaign_id": pl.String,
    "name": pl.String,
    "text": pl.String,  # what the campaign says; embedded for recommendation
    "category": pl.String,
    "product_ids": pl.List(pl.String),  # what it promotes (evaluation checks purchases of these)
    "priority": pl.Int32,  # 1 (low) .. 5 (high)
    "start_date": pl.Date,
    "end_date": pl.Date,
    "target_countries": pl.List(pl.String),  # empty = everyone
    "cooldown_hours": pl.Int32,  # the same campaign is not sent to a user again within this
    "daily_budget": pl.Int32,  # sends per day across all users
    "url": pl.String,
    "template": pl.String,
    "status": pl.String,  # "active" | "paused"
}

PURCHASES: Schema = {
    "order_id": pl.String,
    "user_id": pl.String,  # null for guest orders: they count for product features only
    "product_id": pl.String,
    "quantity": pl.Int64,  # negative on returns
    "unit_price": pl.Float64,
    "ts": pl.Datetime("us", "UTC"),
    "country": pl.String,
    "is_return": pl.Boolean,
}

KEYS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "products": ("product_id",),
    "campaigns": ("campaign_id",),
    "purchases": ("order_id", "product_id"),  # the loader merges repeated lines of one order
}

SCHEMAS: dict[str, Schema] = {
    "users": USERS,
    "products": PRODUCTS,
    "campaigns": CAMPAIGNS,
    "purchases": PURCHASES,
}
