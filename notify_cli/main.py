"""The ``notify`` command: one subcommand per job, progress while it works, a summary at the end.

Jobs run through Dagster in-process (the same assets `dagster dev` shows), on the instance in
``DAGSTER_HOME`` when set (``make demo`` sets it, so the runs appear in ``make dev``'s UI).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from notify_core.errors import NotifyError
from notify_core.observability import configure_logging
from notify_core.security.files import use_private_umask
from notify_core.settings import NotifySettings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Notify: personalised notifications.")
console = Console()


def _use_console() -> None:
    """A fixed, wide console when output is not a terminal, so logs and CI see whole asset names."""
    global console
    console = Console() if sys.stdout.isatty() else Console(width=160)


# Dagster's console logger prints every engine event; the CLI shows progress itself (JSON logs go to a file).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# Per-stage figures worth a line under the table (metadata keys of the assets, shown when present).
HIGHLIGHTS: dict[str, tuple[str, ...]] = {
    "campaign_index": ("version", "kind", "search_effort", "recall_at_10", "recall_passed"),
    "notification_plan": ("plan_day", "users_with_notifications", "notifications_planned", "candidate_source",
                          "peak_minute_load", "capacity_violations"),
    "delivery_run": ("delivered", "retried", "dead_lettered", "duplicates", "lateness_p50_s", "lateness_p99_s"),
}


@dataclass
class StageOutcome:
    name: str
    success: bool
    seconds: float
    materialized: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False  # not run because a stage it needs failed


def _settings(data_dir: Path | None) -> NotifySettings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)
    use_private_umask()  # everything this run writes under the data directory is 0600 / 0700
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(stream=(log_dir / "notify.jsonl").open("a", encoding="utf-8"))
    return settings


def _instance() -> Any:
    from dagster import DagsterInstance

    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def stage_upstream(stage_order: list[str], declared: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The stages each stage needs: as declared, or (undeclared) every stage before it."""
    return {name: tuple(declared[name]) if name in declared else tuple(stage_order[:i])
            for i, name in enumerate(stage_order)}


def blocked_by(name: str, failed: set[str], upstream: dict[str, tuple[str, ...]]) -> list[str]:
    """Failed (or skipped) stages that ``name`` needs; empty when it can run."""
    return [s for s in upstream.get(name, ()) if s in failed]


def run_stages(settings: NotifySettings, stage_names: list[str]) -> list[StageOutcome]:
    """Run the named stages in order. A failed stage skips only the stages that need it (see
    ``STAGE_UPSTREAM``): a campaign-embedding failure still lets the user chain run, and the reverse."""
    import dagster as dg

    from notify_assets import definitions
    from notify_assets.definitions import build_definitions

    defs = build_definitions(settings)
    instance = _instance()
    upstream = stage_upstream([n for n, _ in definitions.STAGES], definitions.STAGE_UPSTREAM)
    failed: set[str] = set()
    outcomes: list[StageOutcome] = []
    with console.status("starting") as status:
        for index, name in enumerate(stage_names, start=1):
            blockers = blocked_by(name, failed, upstream)
            if blockers:
                failed.add(name)
                outcomes.append(StageOutcome(name=name, success=False, seconds=0.0, skipped=True,
                                             error=f"skipped: needs failed stage(s) {', '.join(blockers)}"))
                console.print(f"stage {index}/{len(stage_names)} {name}: [yellow]SKIPPED[/yellow] "
                              f"(needs {', '.join(blockers)})")
                continue
            status.update(f"[bold]stage {index}/{len(stage_names)}: {name}[/bold]")
            started = time.perf_counter()
            job = defs.resolve_job_def(f"stage_{name}")
            result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
            outcome = StageOutcome(name=name, success=result.success, seconds=time.perf_counter() - started)
            for event in result.get_asset_materialization_events():
                mat = event.step_materialization_data.materialization
                if mat.asset_key is not None:
                    outcome.materialized[mat.asset_key.to_user_string()] = {
                        k: v.value for k, v in mat.metadata.items() if not isinstance(v, dg.MarkdownMetadataValue)}
            for event in result.get_asset_check_evaluations():
                outcome.checks[f"{event.asset_key.to_user_string()}:{event.check_name}"] = event.passed
            if not result.success:
                failures = [e for e in result.all_events if e.is_failure]
                outcome.error = failures[0].message if failures else "failed"
            if outcome.success and name == "recommendation" and settings.env != "local":
                _publish_index(settings)
            outcomes.append(outcome)
            mark = "[green]ok[/green]" if outcome.success else "[red]FAILED[/red]"
            console.print(f"stage {index}/{len(stage_names)} {name}: {mark} in {outcome.seconds:.1f} s")
            if not outcome.success:
                failed.add(name)
                console.print(f"[red]{outcome.error}[/red]")
    return outcomes


def _publish_index(settings: NotifySettings) -> None:
    """In aws the asset does not publish (the daemon's sensor does); ``notify run`` has no daemon, so it
    applies the sensor's rule itself, right after the build (idempotent: the sensor then finds it done)."""
    from notify_core.recommend.artefacts import build_artefact_store
    from notify_core.recommend.index import publish_newest

    newest, current = publish_newest(build_artefact_store(settings))
    if newest is not None:
        console.print(f"published campaign index {newest} (was {current})")


def print_summary(outcomes: list[StageOutcome]) -> None:
    table = Table(title="Notify run summary", show_lines=False)
    for column in ("asset", "rows", "new", "changed", "unchanged", "removed", "bad", "store written"):
        table.add_column(column, justify="right" if column != "asset" else "left")
    for outcome in outcomes:
        for asset, meta in outcome.materialized.items():
            rows = meta.get("rows", meta.get("rows_valid", meta.get("source_rows", "")))
            new = meta.get("lake_inserted", meta.get("embedded", ""))
            changed = meta.get("lake_updated", "")
            unchanged = meta.get("lake_unchanged", meta.get("store_unchanged", meta.get("skipped", "")))
            written = (int(meta.get("store_inserted", 0)) + int(meta.get("store_updated", 0))
                       if "store_inserted" in meta else "")
            table.add_row(asset, str(rows), str(new), str(changed), str(unchanged), str(meta.get("removed", "")),
                          str(meta.get("rows_bad", "")), str(written))
    console.print(table)
    for outcome in outcomes:
        if not outcome.success:
            console.print(f"stage {outcome.name}: [red]{'skipped' if outcome.skipped else 'FAILED'}[/red]"
                          f" ({outcome.error})")
    for asset, keys in HIGHLIGHTS.items():
        meta = next((o.materialized[asset] for o in outcomes if asset in o.materialized), None)
        if meta is not None:
            console.print(f"{asset}: " + ", ".join(f"{k.replace('_', ' ')} {meta[k]}" for k in keys if k in meta))
    failed_checks = [name for o in outcomes for name, passed in o.checks.items() if not passed]
    total_checks = sum(len(o.checks) for o in outcomes)
    console.print(f"asset checks: {total_checks - len(failed_checks)}/{total_checks} passed"
                  + (f" (failed: {', '.join(failed_checks)})" if failed_checks else ""))
    written = sum(int(m.get("store_inserted", 0)) + int(m.get("store_updated", 0))
                  for o in outcomes for m in o.materialized.values())
    console.print(f"rows written or changed in the Store this run: [bold]{written}[/bold]")


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default NOTIFY_DATA_DIR or .notify).")]


def _run(stages: list[str], data_dir: Path | None) -> None:
    from notify_assets.definitions import STAGES

    known = [name for name, _ in STAGES]
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise typer.BadParameter(f"unknown stage(s) {unknown}; stages are {known}")
    _use_console()
    try:
        settings = _settings(data_dir)
        _audit_run(settings, stages)
        console.print(f"Notify [bold]{settings.env}[/bold] environment, data in {settings.data_dir.resolve()}")
        outcomes = run_stages(settings, stages)
    except NotifyError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    print_summary(outcomes)
    if not all(o.success for o in outcomes) or len(outcomes) < len(stages):
        raise typer.Exit(1)


def _audit_run(settings: NotifySettings, stages: list[str]) -> None:
    """A pipeline run (ingestion, features, plans: it rewrites data) is an administrative action."""
    from notify_cli.security_commands import cli_actor
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.security import audit
    from notify_core.store.factory import build_store

    store = build_store(settings)
    try:
        audit.record(store, clock=SYSTEM_CLOCK, action="pipeline.run", actor=cli_actor(), source="cli",
                     detail={"stages": stages})
    finally:
        store.close()


@app.command()
def run(
    data_dir: DataDir = None,
    stage: Annotated[list[str] | None, typer.Option(help="Run only these stages (repeatable).")] = None,
) -> None:
    """Run the main job end to end: source -> ingestion -> features -> embeddings (and every later stage)."""
    from notify_assets.definitions import STAGES

    _run(stage or [name for name, _ in STAGES], data_dir)


@app.command()
def ingest(data_dir: DataDir = None) -> None:
    """Ingest the landing folder (users, products, campaigns, purchases): validated and idempotent."""
    _run(["ingestion"], data_dir)


@app.command()
def features(data_dir: DataDir = None) -> None:
    """Recompute user features, product features and the user-product matrix from the lake."""
    _run(["features"], data_dir)


def _register_commands() -> None:
    """The jobs whose commands live in their own modules (streaming, delivery, evaluation, templates)."""
    from notify_cli import delivery_commands, deploy_templates, evaluate_commands, stream_commands

    app.command(name="consume")(stream_commands.consume)
    app.command(name="serve")(stream_commands.serve)
    app.command(name="worker")(delivery_commands.worker)
    app.command(name="evaluate")(evaluate_commands.evaluate)
    app.command(name="templates")(deploy_templates.templates)
    from notify_cli import capacity_commands

    app.command(name="capacity")(capacity_commands.capacity)
    from notify_cli import security_commands

    app.add_typer(security_commands.secrets_app, name="secrets")
    app.add_typer(security_commands.users_app, name="users")
    from notify_cli import backup_commands

    app.command(name="backup")(backup_commands.backup)
    app.command(name="restore")(backup_commands.restore)
    from notify_cli import security_commands

    app.add_typer(security_commands.keys_app, name="keys")
    app.add_typer(security_commands.audit_app, name="audit")


_register_commands()

if __name__ == "__main__":
    app()
