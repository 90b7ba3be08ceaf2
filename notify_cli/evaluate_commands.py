"""``notify evaluate``: offline relevance evaluation on a time split of real purchases (issue 8).

Registered on the main app by ``notify_cli.main._register_optional_commands``.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_SOURCE = Path("../shared/data/online_retail/online_retail.parquet")


def evaluate(
    source: Annotated[Path, typer.Option(help="Purchase export in the Online Retail columns (Parquet or CSV).")]
    = DEFAULT_SOURCE,
    cutoff: Annotated[str, typer.Option(help="Train on purchases before this local date (YYYY-MM-DD).")]
    = "2011-09-01",
    horizon_days: Annotated[int, typer.Option(help="Test window after the cut-off, in days.")] = 60,
    sample_users: Annotated[int | None, typer.Option(help="Evaluate a seeded sample of this many users (CI).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the campaign catalogue, user sample, random and ALS.")] = 0,
    output_dir: Annotated[Path, typer.Option(help="Where report.md, report.html and report.json go.")]
    = Path(".notify/evaluation"),
    cache_dir: Annotated[Path, typer.Option(help="Product/campaign vector cache (by content hash).")]
    = Path(".notify/evaluation-cache"),
    window_days: Annotated[int, typer.Option(help="Replay: a planned notification converts within this.")] = 7,
    hashing: Annotated[bool, typer.Option(help="Use the fast HashingEmbedder (tests only, no semantics).")] = False,
    cutoffs: Annotated[str | None, typer.Option(
        help="Rolling-origin evaluation: comma-separated cut-offs (e.g. 2011-07-01,2011-08-01,2011-09-01); "
             "each is scored by a ranker fitted only before it. Writes rolling.md/.html/.json.")] = None,
    held_out: Annotated[str | None, typer.Option(
        help="With --cutoffs: the held-out cut-off, after every rolling one (default 2011-10-01; 'none' for none).")]
    = None,
    column: Annotated[list[str] | None, typer.Option(
        help="Map a canonical column to the export's, e.g. --column InvoiceNo=order_ref (repeatable).")] = None,
) -> None:
    """Rank campaigns for every user active after the cut-off with each method and measure who bought what."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from notify_core.embeddings.embedder import HashingEmbedder, SentenceTransformerEmbedder
    from notify_core.errors import NotifyError
    from notify_core.evaluation import CachedEmbedder, write_reports
    from notify_core.evaluation import evaluate as run_evaluation
    from notify_core.evaluation.run import COLUMNS

    console = Console() if sys.stdout.isatty() else Console(width=200)  # piped: keep the table on one line a row
    inner = HashingEmbedder() if hashing else SentenceTransformerEmbedder()
    embedder = CachedEmbedder(inner, cache_dir)
    try:
        columns = _column_mapping(column or [])
        if cutoffs is not None:
            _rolling(console, source, embedder=embedder, cutoffs=cutoffs, held_out=held_out,
                     horizon_days=horizon_days, seed=seed, sample_users=sample_users, cache_dir=cache_dir,
                     columns=columns, output_dir=output_dir)
            return
    except (NotifyError, ValueError) as exc:
        console.print(f"[red]evaluate: {exc}[/red]")
        raise typer.Exit(2) from exc
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("embedding texts", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def on_result(result: object) -> None:
            bar.update(task, description=f"scored {getattr(result, 'method', '')}")

        try:
            report = run_evaluation(source, embedder=embedder, cutoff=date.fromisoformat(cutoff),
                                    horizon_days=horizon_days, seed=seed, sample_users=sample_users,
                                    window_days=window_days, progress=progress, on_result=on_result,
                                    cache_dir=cache_dir, columns=columns)
        except (NotifyError, ValueError) as exc:  # a bad path, column set, date or window: say which, no trace
            console.print(f"[red]evaluate: {exc}[/red]")
            raise typer.Exit(2) from exc
    table = Table(title=f"Offline relevance, train < {cutoff}, test {horizon_days} days, "
                        f"{report.settings['users_with_a_converting_campaign']} users")
    for heading in COLUMNS:
        table.add_column(heading, justify="left" if heading == "method" else "right")
    for result in report.results:
        table.add_row(*result.cells())
    console.print(table)
    for path in write_reports(report, output_dir):
        console.print(f"wrote {path}")



def _column_mapping(pairs: list[str]) -> dict[str, str]:
    """``["InvoiceNo=order_ref", ...]`` -> ``{"InvoiceNo": "order_ref"}`` (the loader checks the names)."""
    out = {}
    for pair in pairs:
        canonical, sep, theirs = pair.partition("=")
        if not sep or not canonical.strip() or not theirs.strip():
            raise ValueError(f"--column wants CANONICAL=THEIRS, got {pair!r}")
        out[canonical.strip()] = theirs.strip()
    return out


def _rolling(console: object, source: Path, *, embedder: object, cutoffs: str, held_out: str | None,
             horizon_days: int, seed: int, sample_users: int | None, cache_dir: Path, columns: dict[str, str],
             output_dir: Path) -> None:
    """``--cutoffs``: the rolling-origin evaluation and its checks (notify_core.evaluation.rolling)."""
    from rich.console import Console
    from rich.table import Table

    from notify_core.embeddings.embedder import Embedder
    from notify_core.evaluation.rolling import HELD_OUT_CUTOFF, evaluate_rolling, write_rolling_reports

    assert isinstance(console, Console)
    assert isinstance(embedder, Embedder)
    days = [date.fromisoformat(c.strip()) for c in cutoffs.split(",") if c.strip()]
    held = None if held_out == "none" else (date.fromisoformat(held_out) if held_out else HELD_OUT_CUTOFF)
    report = evaluate_rolling(source, embedder=embedder, cutoffs=days, held_out=held, horizon_days=horizon_days,
                              seed=seed, sample_users=sample_users, cache_dir=cache_dir, columns=columns,
                              on_report=lambda r: console.print(f"scored cut-off {r.settings['cutoff']}"))
    table = Table(title="Issue-17 checks")
    for name in ("cut-off", "claim", "Notify", "peer", "holds"):
        table.add_column(name)
    for check in report.checks:
        table.add_row(check["cutoff"], check["claim"], str(check["notify"]), str(check["peer"]),
                      "yes" if check["holds"] else "NO")
    console.print(table)
    for path in write_rolling_reports(report, output_dir):
        console.print(f"wrote {path}")


if __name__ == "__main__":
    from notify_cli.standalone import run_standalone

    run_standalone(evaluate)
