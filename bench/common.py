"""Shared benchmark plumbing: medians over repeats, a rich table, a JSON file under bench/results/."""

from __future__ import annotations

import json
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


def report(name: str, title: str, columns: list[str], rows: list[list[Any]], extra: dict[str, Any]) -> Path:
    """Print ``rows`` as a table and save them, with machine facts, as bench/results/<name>.json."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        table.add_row(*(f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                        for v in row))
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "columns": columns, "rows": rows, **extra,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    Console().print(f"saved {path}")
    return path
