"""``notify capacity``: the capacity and cost model (notify_core/capacity.py) for a given scale, printed.

Reads the measured per-operation costs from ``bench/results/*.json`` (a missing file keeps the model's
default, named as such), the dated price table, and prints one line per component with its budget,
then the cost per 1k notifications and per 1k recommendations against the spec's unit budgets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from notify_core.capacity import (
    BUDGET_PER_1K_NOTIFICATIONS,
    BUDGET_PER_1K_RECOMMENDATIONS,
    BUDGET_TOTAL,
    Assumptions,
    Scale,
    estimate,
    load_prices,
    measured_from_results,
)

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
BENCHES = ("recommend", "delivery", "schedule", "embeddings", "stream")


def _results(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in BENCHES:
        path = folder / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("[green]met[/green]" if ok else "[red]over[/red]")


def capacity(
    users: Annotated[int, typer.Option(help="Users to plan for.")] = 10_000_000,
    notifications_per_day: Annotated[int | None, typer.Option(help="Default: 5 per user.")] = None,
    events_per_s: Annotated[float | None, typer.Option(help="Peak events/s (default: spec ratio, 49k at 10M).")]
    = None,
    recommendations_per_s: Annotated[float | None, typer.Option(help="Peak recommendations/s (2,500 at 10M).")]
    = None,
    store_writes_per_event: Annotated[float, typer.Option(help="Store writes per stream event.")] = 1.0,
    api_gateway: Annotated[bool, typer.Option(help="Recommendations go through API Gateway.")] = True,
    results: Annotated[Path, typer.Option(help="Benchmark results folder.")] = RESULTS,
) -> None:
    """Capacity and monthly cost of the scale-out deployment for a given scale, against the spec's budgets."""
    base = Scale.for_users(users)
    scale = Scale(users=users,
                  notifications_per_day=base.notifications_per_day if notifications_per_day is None
                  else notifications_per_day,
                  events_per_s_peak=base.events_per_s_peak if events_per_s is None else events_per_s,
                  recommendations_per_s_peak=base.recommendations_per_s_peak if recommendations_per_s is None
                  else recommendations_per_s)
    measured = measured_from_results(_results(results))
    prices = load_prices()
    result = estimate(scale, measured=measured, prices=prices,
                      assumptions=Assumptions(store_writes_per_event=store_writes_per_event,
                                              api_gateway_fronts_recommendations=api_gateway))
    console = Console(width=200)
    console.print(f"scale: {scale.users:,} users, {scale.notifications_per_day:,} notifications/day, "
                  f"{scale.events_per_s_peak:,.0f} events/s peak, {scale.recommendations_per_s_peak:,.0f} "
                  f"recommendations/s peak; prices {prices.region}, table of {prices.table_date}")
    table = Table(title="Monthly cost by component")
    for column in ("component", "capacity", "$/month", "budget", "verdict"):
        table.add_column(column, justify="right" if column in ("$/month", "budget") else "left")
    for line in result.lines:
        table.add_row(line.component, line.capacity, f"{line.monthly_usd:,.0f}",
                      "" if line.budget_usd is None else f"{line.budget_usd:,.0f}", _verdict(line.within_budget))
    table.add_row("total", "", f"{result.total_usd:,.0f}", f"{BUDGET_TOTAL:,.0f}",
                  _verdict(result.total_usd <= BUDGET_TOTAL))
    console.print(table)
    console.print(f"per 1k notifications: ${result.per_1k_notifications:.4f} (budget ${BUDGET_PER_1K_NOTIFICATIONS})"
                  f" {_verdict(result.per_1k_notifications <= BUDGET_PER_1K_NOTIFICATIONS)}")
    console.print(f"per 1k recommendations: ${result.per_1k_recommendations:.4f} "
                  f"(budget ${BUDGET_PER_1K_RECOMMENDATIONS}) "
                  f"{_verdict(result.per_1k_recommendations <= BUDGET_PER_1K_RECOMMENDATIONS)}")
    for name, source in sorted(measured.sources.items()):
        console.print(f"measured {name} = {getattr(measured, name):,.2f} from {source}")
