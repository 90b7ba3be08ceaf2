"""Turn the Online Retail export into landing files Notify ingests like any other batch drop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from notify_core.atomic import atomic_write, sweep_temporaries
from notify_core.sources.online_retail import map_online_retail, read_source
from notify_core.sources.synthetic import enrich_users, generate_campaigns

LANDING_NAME = "online_retail.parquet"


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


def prepare_demo_landing(*, source: Path, landing: Path, seed: int) -> LandingResult:
    """Map the export, generate what it lacks, and drop one file per dataset in the landing folder."""
    sweep_temporaries(landing)  # what a killed earlier preparation left behind
    tables = map_online_retail(read_source(source))
    frames = {
        "users": enrich_users(tables.users, seed=seed),
        "products": tables.products,
        "campaigns": generate_campaigns(tables.products, tables.purchases, seed=seed),
        "purchases": tables.purchases,
    }
    written = [name for name, frame in frames.items() if write_if_changed(frame, landing / name / LANDING_NAME)]
    return LandingResult(rows={n: f.height for n, f in frames.items()}, files_written=written,
                         dropped=tables.dropped, rows_read=tables.rows_read)
