"""A seeded generator for what the real data lacks: user preferences and a campaign catalogue.

Online Retail has purchases but no time zones, sign-up dates, notification preferences or marketing
campaigns. Everything here is derived from the real data plus a seed, so the same seed gives the same
rows (re-ingesting changes nothing):

* time zone: from the user's country (UK -> Europe/London, ...); unmapped countries get UTC;
* sign-up date: 0-720 days before the first order, seeded per user;
* preferences: daily cap 1-5 (most users 3), quiet hours starting 21-23h and ending 7-9h local, channels
  (push, plus email for some), and for ~10 % of users one opted-out category;
* campaigns: per category a "best of" campaign promoting that category's most-bought products, plus
  product campaigns for the most-bought products (bestseller, back in stock, bundle of co-bought items),
  with priorities, cooldowns, budgets, country targeting for a few, and a handful expired or scheduled
  in the future so date filters have something to filter. Their dates are fixed (not relative to today)
  so the catalogue is identical on every run.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import numpy as np
import polars as pl

from notify_core.catalog.categories import CATEGORIES, OTHER
from notify_core.schemas import CAMPAIGNS, USERS

COUNTRY_TIMEZONES: dict[str, str] = {
    "United Kingdom": "Europe/London", "EIRE": "Europe/Dublin", "Channel Islands": "Europe/Jersey",
    "Germany": "Europe/Berlin", "France": "Europe/Paris", "Spain": "Europe/Madrid", "Portugal": "Europe/Lisbon",
    "Netherlands": "Europe/Amsterdam", "Belgium": "Europe/Brussels", "Switzerland": "Europe/Zurich",
    "Austria": "Europe/Vienna", "Italy": "Europe/Rome", "Norway": "Europe/Oslo", "Sweden": "Europe/Stockholm",
    "Denmark": "Europe/Copenhagen", "Finland": "Europe/Helsinki", "Iceland": "Atlantic/Reykjavik",
    "Poland": "Europe/Warsaw", "Czech Republic": "Europe/Prague", "Lithuania": "Europe/Vilnius",
    "Greece": "Europe/Athens", "Cyprus": "Asia/Nicosia", "Malta": "Europe/Malta", "Israel": "Asia/Jerusalem",
    "Lebanon": "Asia/Beirut", "United Arab Emirates": "Asia/Dubai", "Bahrain": "Asia/Bahrain",
    "Saudi Arabia": "Asia/Riyadh", "Japan": "Asia/Tokyo", "Singapore": "Asia/Singapore",
    "Hong Kong": "Asia/Hong_Kong", "Australia": "Australia/Sydney", "USA": "America/New_York",
    "Canada": "America/Toronto", "Brazil": "America/Sao_Paulo", "RSA": "Africa/Johannesburg",
    "European Community": "Europe/Brussels",
}
DEFAULT_TIMEZONE = "UTC"
EVERGREEN = (date(2010, 1, 1), date(2035, 12, 31))
EXPIRED = (date(2011, 1, 1), date(2011, 6, 30))
FUTURE = (date(2034, 1, 1), date(2035, 12, 31))


def _unit(seed: int, key: str, salt: str) -> float:
    """A deterministic uniform [0, 1) per (seed, key, salt): stable whatever the row order."""
    digest = hashlib.blake2b(f"{seed}|{salt}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def enrich_users(customers: pl.DataFrame, *, seed: int) -> pl.DataFrame:
    """customers(user_id, country, first_purchase_ts) -> USERS rows."""
    rows = []
    categories = [c for c in CATEGORIES if c != OTHER]
    for user_id, country, first_ts in customers.select("user_id", "country", "first_purchase_ts").iter_rows():
        u = [_unit(seed, user_id, salt) for salt in ("signup", "cap", "qs", "qe", "email", "optout", "cat")]
        signup = first_ts.date() - timedelta(days=int(u[0] * 720))
        cap = int(np.searchsorted([0.1, 0.25, 0.75, 0.9, 1.0], u[1], side="right")) + 1
        rows.append({
            "user_id": user_id,
            "country": country,
            "timezone": COUNTRY_TIMEZONES.get(country or "", DEFAULT_TIMEZONE),
            "signup_date": signup,
            "daily_cap": min(cap, 5),
            "quiet_start_hour": 21 + int(u[2] * 3),
            "quiet_end_hour": 7 + int(u[3] * 3),
            "channels": ["push", "email"] if u[4] < 0.4 else ["push"],
            "opted_out_categories": [categories[int(u[6] * len(categories))]] if u[5] < 0.1 else [],
        })
    return pl.DataFrame(rows, schema=USERS).sort("user_id")


def generate_campaigns(products: pl.DataFrame, purchases: pl.DataFrame, *, seed: int,
                       product_campaigns: int = 240) -> pl.DataFrame:
    """A campaign catalogue built from the product range and what sells."""
    buyers = (
        purchases.filter(~pl.col("is_return"))
        .group_by("product_id")
        .agg(pl.col("order_id").n_unique().alias("orders"))
        .join(products, on="product_id")
        .sort(["orders", "product_id"], descending=[True, False])
    )
    rows: list[dict[str, object]] = []

    def add(cid: str, name: str, text: str, category: str, product_ids: list[str], kind: str) -> None:
        u = [_unit(seed, cid, salt) for salt in ("prio", "dates", "target", "cool", "budget")]
        dates = EXPIRED if u[1] < 0.03 else FUTURE if u[1] < 0.06 else EVERGREEN
        rows.append({
            "campaign_id": cid, "name": name, "text": text, "category": category, "product_ids": product_ids,
            "priority": 1 + int(u[0] * 5), "start_date": dates[0], "end_date": dates[1],
            "target_countries": ["United Kingdom"] if u[2] < 0.08 else ["France", "Germany"] if u[2] < 0.1 else [],
            "cooldown_hours": (24, 48, 72, 168)[int(u[3] * 4)],
            "daily_budget": (500, 2_000, 10_000)[int(u[4] * 3)],
            "url": f"https://shop.example.com/c/{cid}", "template": f"{{first_name}}, {name.lower()}: {{url}}",
            "status": "paused" if kind == "product" and u[4] > 0.98 else "active",
        })

    for category in CATEGORIES:
        top = buyers.filter(pl.col("category") == category).head(8)
        if top.is_empty():
            continue
        names = ", ".join(d.title() for d in top["description"].head(4))
        slug = category.replace(" & ", "-").replace(" ", "-")
        add(f"cat-{slug}", f"The best of {category}", f"Our most loved {category}: {names} and more.", category,
            top["product_id"].to_list(), "category")

    templates = (
        ("bestseller", "Bestseller: {d}", "Everyone is buying the {d}. A {c} favourite, from {p:.2f}."),
        ("restock", "Back in stock: {d}", "The {d} is back in stock. Order again before it sells out ({c})."),
        ("deal", "Price drop on {d}", "Save on the {d} this week. {c} at its best, now {p:.2f}."),
    )
    for rank, (pid, desc, category, price) in enumerate(
        buyers.head(product_campaigns).select("product_id", "description", "category", "unit_price").iter_rows()
    ):
        kind, name, text = templates[rank % len(templates)]
        title = desc.title()
        add(f"{kind}-{pid.lower()}", name.format(d=title), text.format(d=title.lower(), c=category, p=price),
            category, [pid], "product")
    return pl.DataFrame(rows, schema=CAMPAIGNS).sort("campaign_id")
