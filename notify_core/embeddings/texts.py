"""What gets embedded: one text per product and per campaign, built with polars expressions.

Texts are deliberately small and stable. A product's text holds its description, category and a
*price band* (not the price): a price moving from 2.10 to 2.15 must not re-embed the product, while a
move from "budget" to "premium" changes what the product is. Descriptions in the Online Retail data are
upper case; they are lower-cased so the model sees ordinary words.
"""

from __future__ import annotations

from typing import Any

import polars as pl

# (upper bound exclusive, band) in the data's currency; the last band has no upper bound.
PRICE_BANDS: tuple[tuple[float, str], ...] = (
    (1.0, "budget"),
    (3.0, "low price"),
    (10.0, "mid price"),
    (50.0, "premium"),
)
TOP_BAND = "luxury"


def price_band(price: pl.Expr) -> pl.Expr:
    """The band of a unit price (null or negative prices count as "budget")."""
    expr: Any = pl.when(price.fill_null(0.0) < PRICE_BANDS[0][0]).then(pl.lit(PRICE_BANDS[0][1]))
    for bound, band in PRICE_BANDS[1:]:
        expr = expr.when(price < bound).then(pl.lit(band))
    result: pl.Expr = expr.otherwise(pl.lit(TOP_BAND))
    return result


def product_texts(products: pl.DataFrame) -> pl.DataFrame:
    """``product_id``, ``text`` for each product: "<description>. category: <c>. <band>."."""
    return products.select(
        "product_id",
        pl.concat_str(
            pl.col("description").fill_null("").str.strip_chars().str.to_lowercase(),
            pl.lit(". category: "),
            pl.col("category").fill_null("other"),
            pl.lit(". "),
            price_band(pl.col("unit_price")),
            pl.lit("."),
        ).alias("text"),
    )


def campaign_texts(campaigns: pl.DataFrame) -> pl.DataFrame:
    """``campaign_id``, ``text`` for each campaign: name, message, category and who it targets.

    Targeting is in the text because a campaign for "customers in France" is a different offer from
    the same message for everyone; status, dates and budgets are not (they change what is sent, not what
    the campaign is about), so pausing a campaign does not re-embed it.
    """
    countries = pl.col("target_countries").fill_null([]).list.sort().list.join(", ")
    return campaigns.select(
        "campaign_id",
        pl.concat_str(
            pl.col("name").fill_null(""),
            pl.lit(". "),
            pl.col("text").fill_null(""),
            pl.lit(" category: "),
            pl.col("category").fill_null("other"),
            pl.lit(". for "),
            pl.when(countries == "").then(pl.lit("everyone")).otherwise(pl.lit("customers in ") + countries),
            pl.lit("."),
        ).alias("text"),
    )
