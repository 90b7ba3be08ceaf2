"""Product categories for catalogues that have none (Online Retail has none).

A transparent keyword taxonomy over the description: the first category whose keywords appear (as
whole words) wins, in the order below, so specific themes (Christmas) beat generic shapes (box).
It is deterministic, cheap, explainable in one table, and covers most of the Online Retail range
(measured coverage is reported by the ingestion step); the rest is "other". A catalogue that ships
its own ``category`` column keeps it: this is only the fallback.
"""

from __future__ import annotations

import polars as pl

OTHER = "other"

# (category, keywords). Order matters: first match wins.
TAXONOMY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWFLAKE", "NATIVITY", "BAUBLE", "TREE")),
    ("easter", ("EASTER", "EGG", "EGGS", "CHICK", "BUNNY")),
    ("party & celebrations", ("PARTY", "BIRTHDAY", "BUNTING", "BALLOON", "BALLOONS", "CONFETTI", "WEDDING")),
    ("candles & lighting", ("CANDLE", "CANDLES", "CANDLESTICK", "CANDLEHOLDER", "INCENSE", "T-LIGHT",
                            "TEALIGHT", "LANTERN", "LIGHTS", "LAMP", "NIGHTLIGHT")),
    ("jewellery & accessories", ("NECKLACE", "EARRINGS", "BRACELET", "RING", "CHARM", "BEAD", "DIAMANTE",
                                 "HAIR", "BROOCH", "PURSE", "UMBRELLA", "GLOVES", "SCARF", "HAIRCLIP", "JEWELLERY",
                                 "KEYRING", "PASSPORT", "WASHBAG", "CARDHOLDER", "HANDBAG", "SUNGLASSES")),
    ("bags & storage", ("BAG", "BAGS", "JUMBO", "BASKET", "STORAGE", "TIN", "TINS", "BOX", "BOXES", "CASE",
                        "CASES", "DRAWER", "JAR", "CRATE", "HAMPER", "TRUNK", "CANNISTER",
                        "CANISTER", "RACK", "STAND", "CABINET", "SHELF")),
    ("kitchen & dining", ("MUG", "CUP", "CUPS", "PLATE", "PLATES", "BOWL", "BOWLS", "CUTLERY", "TEA", "TEAPOT",
                          "CAKE", "BAKING", "KITCHEN", "PANTRY", "NAPKINS", "TRAY", "SPOON", "JUG",
                          "LUNCH", "BOTTLE", "APRON", "CHOCOLATE", "COFFEE", "COASTER", "COASTERS", "DISH", "PLACEMAT",
                          "PLACEMATS", "TRAYS", "GLASS", "GLASSES", "TUMBLER", "FRUITBOWL", "RECIPE", "EGGCUP")),
    ("stationery & gift wrap", ("CARD", "CARDS", "WRAP", "PAPER", "NOTEBOOK", "PEN", "PENCIL", "PENCILS",
                                "STICKER", "STICKERS", "ENVELOPE", "TAPE", "RIBBON", "RIBBONS", "TAG", "TAGS",
                                "JOURNAL", "ERASER", "CALENDAR", "RULER", "MAGNETS",
                                "MAGNET", "TISSUES", "SCISSOR", "CHALK", "SLATE", "BOOK", "POSTCARD")),
    ("toys & children", ("TOY", "TOYS", "CHILDRENS", "CHILDS", "GAME", "PLAYHOUSE", "DOLLY", "DOLL", "SPACEBOY",
                         "FELTCRAFT", "JIGSAW", "PUZZLE", "TEDDY", "SKITTLES", "CRAYONS", "COLOURING", "WINDMILL",
                         "HELICOPTER", "KIDS", "BABY", "SPINNING", "TOP", "BUBBLES", "MARBLES")),
    ("garden & outdoor", ("GARDEN", "PLANT", "PLANTER", "POT", "WATERING", "DOORMAT", "BIRD", "BIRDHOUSE",
                          "PICNIC", "FLOWER", "FLOWERS", "SEED", "ZINC")),
    ("home decor", ("HEART", "HANGING", "DECORATION", "SIGN", "FRAME", "MIRROR", "CLOCK", "CUSHION",
                    "WALL", "GARLAND", "HOOK", "HOOKS", "VASE", "ORNAMENT", "DOORSTOP", "PLAQUE", "THROW",
                    "BLANKET", "HOLDER", "WREATH", "ART", "SCULPTURE", "FAIRY", "BUTTERFLY", "STAR",
                    "FEATHER", "SOAP", "TOWEL", "BATH", "KNOB", "DOOR", "LAUNDRY", "CURTAIN", "RUG", "LOVE")),
)

CATEGORIES: tuple[str, ...] = (*(name for name, _ in TAXONOMY), OTHER)


def categorise(descriptions: pl.Expr) -> pl.Expr:
    """A polars expression mapping a description column to a category (vectorised, no Python loop)."""
    words = descriptions.fill_null("").str.to_uppercase().str.replace_all(r"[^A-Z0-9\-]+", " ")
    padded = pl.concat_str([pl.lit(" "), words, pl.lit(" ")])
    expr: pl.Expr = pl.lit(OTHER)
    for name, keywords in reversed(TAXONOMY):
        pattern = "|".join(f" {word} " for word in keywords)
        expr = pl.when(padded.str.contains(pattern)).then(pl.lit(name)).otherwise(expr)
    return expr


def categorise_one(description: str) -> str:
    """The category of one description (same rules as :func:`categorise`)."""
    result = pl.select(categorise(pl.lit(description, dtype=pl.String))).item()
    return str(result)
