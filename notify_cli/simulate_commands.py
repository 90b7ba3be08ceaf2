"""``notify simulate``: the closed-loop policy comparison (:mod:`notify_core.simulation`)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from notify_cli.evaluate_commands import DEFAULT_SOURCE
from notify_core.errors import NotifyError


def simulate(
    source: Annotated[Path, typer.Option(help="Purchase export in the Online Retail columns (Parquet or CSV).")]
    = DEFAULT_SOURCE,
    users: Annotated[int, typer.Option(help="Simulated users (the customers with the most order lines).")] = 2000,
    days: Annotated[int, typer.Option(help="Simulated days.")] = 30,
    campaigns: Annotated[int, typer.Option(help="Campaigns in the catalogue.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the catalogue, the preference noise and the answers.")] = 7,
    policy: Annotated[list[str] | None, typer.Option(help="Policies to run (default all three).")] = None,
    exploration_share: Annotated[float, typer.Option(help="Notify's exploration budget (share of slots).")] = 0.1,
    output: Annotated[Path, typer.Option(help="The JSON report (totals and per-day rows).")]
    = Path("bench/results/simulation.json"),
    workdir: Annotated[Path | None, typer.Option(help="Where each policy's Store, log and outbox go "
                                                      "(default: a temporary folder, removed after).")] = None,
) -> None:
    """Simulate users answering notifications for N days through the real planner, worker and feedback loop,
    for Notify, frequency-cap-and-drop and random: CTR, opt-outs and failures per day. A tool to compare
    policies under a documented response model, not a forecast of live numbers."""
    from notify_core.simulation import POLICIES, SimOptions
    from notify_core.simulation import simulate as run
    from notify_core.simulation.closed_loop import markdown_table, write_report

    console = Console()
    try:
        options = SimOptions(users=users, days=days, campaigns=campaigns, seed=seed,
                             exploration_share=exploration_share)
        # A temporary folder only when none is given: one made anyway was left in /tmp by every kill -9.
        with (contextlib.nullcontext(str(workdir)) if workdir else
              tempfile.TemporaryDirectory(prefix="notify-sim-")) as folder:
            report = run(source, workdir=Path(folder), options=options, policies=policy or POLICIES,
                         progress=lambda line: console.print(line, highlight=False))
    except (NotifyError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    write_report(report, output)
    console.print(markdown_table(report), highlight=False)
    console.print(f"report: {output}")
