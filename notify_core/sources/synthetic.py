"""A seeded generator for what the real data lacks: user preferences and a campaign catalogue.

Online Retail has purchases but no time zones, sign-up dates, notification preferences or marketing
campaigns. Everything here is derived from the real data plus a seed, so the same seed gives the same
rows (re-ingesting changes nothing):

* time zone: from the user's country (UK -> Europe/London, ...); unmapped countries get UTC;
* sign-up date: 0-720 days before the first order, seeded per user;
* preferences: daily cap 1-5 (most users 3), quiet hours starting 21-23h and ending 7-9h local, channels
  (push, plus email for some), and for ~10 % of users one opted-out category;
* campaigns (:func:`generate_campaigns`), a catalogue a retailer with this range would plausibly run, and
  one where a campaign says something about who it suits (a few near-universal campaigns would make
  every ranking look alike):

  - per category, one "best of <category>" campaign promoting its ``CATEGORY_PRODUCTS`` (3) most-ordered
    products (ids ``cat-<category slug>``);
  - one single-product campaign for every product bought by at least ``MIN_BUYERS`` (20) distinct
    customers, most-ordered first, at most ``PRODUCT_CAMPAIGNS`` (1,500); the kind rotates with the
    product's rank by orders over the whole range (bestseller, back in stock, price drop), so a product
    keeps its id (``<kind>-<product id>``) when the rules change: the 240 products the earlier catalogue
    covered keep theirs;
  - for the ``BUNDLES`` (150) most-ordered products, a "better together" bundle of the product and the
    product most often in the same orders (``bundle-<product id>``, 2 products);

  each with a priority, cooldown, budget, country targeting for a few, ~2 % of product and bundle
  campaigns paused, and ~3 % expired / ~3 % scheduled in the future so date filters have something to
  filter. Their dates are fixed (not relative to today), the rest is a hash of (seed, campaign id), so
  the catalogue is identical on every run. On the full Online Retail data: 12 + 1,500 + 150 = 1,662
  campaigns over 1,500 distinct products (of 3,811).
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy import sparse

from notify_core.catalog.categories import CATEGORIES, OTHER
from notify_core.delivery.templates import DEFAULT_TEMPLATE
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
PRODUCT_CAMPAIGNS = 1_500  # single-product campaigns, at most
MIN_BUYERS = 20  # ... for products bought by at least this many distinct customers
CATEGORY_PRODUCTS = 3  # bestsellers per "best of <category>" campaign
BUNDLES = 150  # the most-ordered products that also get a "better together" bundle of 2


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
                       product_campaigns: int = PRODUCT_CAMPAIGNS, min_buyers: int = MIN_BUYERS,
                       category_products: int = CATEGORY_PRODUCTS, bundles: int = BUNDLES) -> pl.DataFrame:
    """A campaign catalogue built from the product range and what sells (rules in the module docstring).

    ``product_campaigns`` caps the single-product campaigns (most-ordered first) among the products bought
    by at least ``min_buyers`` distinct customers; ``category_products`` is how many bestsellers each
    "best of" campaign promotes; ``bundles`` how many of the most-ordered products also get a bundle
    campaign with the product most often in the same orders.
    """
    sales = purchases.filter(~pl.col("is_return"))
    # Catalogue descriptions carry runs of spaces and trailing blanks ("RED  HARMONICA IN BOX "): tidy them
    # once, so every name and text built from them reads well.
    products = products.with_columns(
        pl.col("description").str.replace_all(r"\s+", " ").str.strip_chars().alias("description"))
    buyers = (
        sales.group_by("product_id")
        .agg(pl.col("order_id").n_unique().alias("orders"), pl.col("user_id").drop_nulls().n_unique().alias("buyers"))
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
            "url": f"https://shop.example.com/c/{cid}", "template": DEFAULT_TEMPLATE,
            "status": "paused" if kind != "category" and u[4] > 0.98 else "active",
        })

    for category in CATEGORIES:
        top = buyers.filter(pl.col("category") == category).head(category_products)
        if top.is_empty():
            continue
        names = ", ".join(d.title() for d in top["description"])
        slug = category.replace(" & ", "-").replace(" ", "-")
        add(f"cat-{slug}", f"The best of {category}", f"Our most loved {category}: {names}.", category,
            top["product_id"].to_list(), "category")

    templates = (
        ("bestseller", "Bestseller: {d}", "Everyone is buying the {d}. A {c} favourite, from {p:.2f}."),
        ("restock", "Back in stock: {d}", "The {d} is back in stock. Order again before it sells out ({c})."),
        ("deal", "Price drop on {d}", "Save on the {d} this week. {c} at its best, now {p:.2f}."),
    )
    # rank over the whole range (not the filtered one) so a product keeps its campaign id as the cap grows
    ranked = buyers.with_row_index("rank").filter(pl.col("buyers") >= min_buyers).head(product_campaigns)
    for rank, pid, desc, category, price in ranked.select(
            "rank", "product_id", "description", "category", "unit_price").iter_rows():
        kind, name, text = templates[rank % len(templates)]
        title = desc.title()
        add(f"{kind}-{pid.lower()}", name.format(d=title), text.format(d=title.lower(), c=category, p=price),
            category, [pid], "product")

    described = dict(zip(buyers["product_id"].to_list(), buyers["description"].to_list(), strict=True))
    for pid, partner, category in _bundles(sales, buyers.head(bundles), described):
        first, second = described[pid].title(), described[partner].title()
        add(f"bundle-{pid.lower()}", f"Better together: {first} + {second}",
            f"Customers who buy the {first.lower()} also buy the {second.lower()}. Get both ({category}).",
            category, [pid, partner], "bundle")
    return pl.DataFrame(rows, schema=CAMPAIGNS).sort("campaign_id")


def _bundles(sales: pl.DataFrame, anchors: pl.DataFrame, described: dict[str, str]) -> list[tuple[str, str, str]]:
    """(anchor, partner, anchor's category): the partner is the described product in most of the anchor's
    orders (ties: the smaller product id). One sparse orders x products product, a fraction of a second."""
    if anchors.is_empty():
        return []
    lines = sales.select("order_id", "product_id").unique().filter(pl.col("product_id").is_in(list(described)))
    pids = sorted(described)
    column = {p: i for i, p in enumerate(pids)}
    orders = lines["order_id"].unique().sort().to_list()
    row = {o: i for i, o in enumerate(orders)}
    matrix = sparse.csr_matrix(
        (np.ones(lines.height), ([row[o] for o in lines["order_id"].to_list()],
                                 [column[p] for p in lines["product_id"].to_list()])),
        shape=(len(orders), len(pids)))
    known = [(pid, category) for pid, category in anchors.select("product_id", "category").iter_rows()
             if pid in column]
    cols = [column[pid] for pid, _ in known]
    together = np.asarray((sparse.csc_matrix(matrix)[:, cols].T @ matrix).todense())  # anchors x products
    together[np.arange(len(cols)), cols] = 0
    out = []
    for (pid, category), counts in zip(known, together, strict=True):
        best = int(np.argmax(counts))  # the first maximum = the smallest id among ties (pids are sorted)
        if counts[best] > 0:
            out.append((pid, pids[best], category))
    return out
