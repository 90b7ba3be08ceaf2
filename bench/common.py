"""Shared benchmark plumbing: medians over repeats, a rich table, a JSON file under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> tuple[float, float, float]:
    """The 1/5/15-minute load average: on 2 shared cores every figure is read beside it."""
    return os.getloadavg()


def against_limit(*, path: str, figure: float, limit: float, unit: str, target: float,
                  higher_is_better: bool = True) -> dict[str, Any]:
    """One path's figure beside the raw operation it is built on, measured in the same run.

    The ratio (figure / limit) is what survives a noisy machine: both halves slow down together, so a
    regression shows as a falling ratio even when the absolute numbers move with the load. ``target`` is
    the spec's figure; ``met`` says whether this run reached it.
    """
    met = figure >= target if higher_is_better else figure <= target
    return {"path": path, "figure": figure, "limit": limit, "unit": unit,
            "ratio": figure / limit if limit else float("nan"), "target": target, "met": met}


def report(name: str, title: str, columns: list[str], rows: list[list[Any]], extra: dict[str, Any]) -> Path:
    """Print ``rows`` as a table and save them, with machine facts and the load, as bench/results/<name>.json.

    Pass ``extra["limits"]`` (a list of :func:`against_limit` dicts) to print the figure/limit/ratio table too.
    """
    load = load_average()
    table = Table(title=f"{title} (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        table.add_row(*(f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                        for v in row))
    Console().print(table)
    limits = extra.get("limits") or []
    if limits:
        ratios = Table(title="against the limit measured beside it")
        for column in ("path", "figure", "limit", "ratio", "target", "met"):
            ratios.add_column(column, justify="left" if column == "path" else "right")
        for item in limits:
            unit = item["unit"]
            ratios.add_row(item["path"], f"{item['figure']:,.2f} {unit}", f"{item['limit']:,.2f} {unit}",
                           f"{item['ratio']:.3f}", f"{item['target']:,} {unit}", "met" if item["met"] else "NOT met")
        Console().print(ratios)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg": load},
        "columns": columns, "rows": rows, **extra,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    Console().print(f"saved {path}")
    return path
