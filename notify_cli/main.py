"""The ``notify`` command: one subcommand per job, progress while it works, a summary at the end.

Jobs run as one Dagster run each, in-process (the same assets `dagster dev` shows), on the instance in
``DAGSTER_HOME`` when set (``make demo`` sets it, so the runs appear in ``make dev``'s UI); see
``notify_cli.run_command``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from notify_cli import exit_code, fail
from notify_core.errors import NotifyError
from notify_core.observability import configure_logging, log_file
from notify_core.security.files import use_private_umask
from notify_core.settings import NotifySettings, load_settings


class _NotifyGroup(TyperGroup):
    """The ``notify`` group: what every subcommand shares, so no command can forget it.

    * The private umask (files 0600, folders 0700) before any subcommand runs: the data directory, and
      also what a command writes outside it (``simulate``'s Stores of real customers' ids, ``evaluate``'s
      reports and vector cache, a backup target, a key file), whatever the caller's shell umask.
    * A Notify error that a subcommand did not handle ends as one ``error:`` line and the exit code of its
      kind (:func:`notify_cli.exit_code`: 75 for a backend away or full, 2 for a refusal), never a traceback:
      a bad or missing setting, whichever subcommand loads the settings, and a full disk under `notify users
      delete` (a rich traceback of the SQLite error before).
    """

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context, not the click package's
        use_private_umask()
        try:
            return super().invoke(ctx)
        except NotifyError as exc:
            raise fail(exc) from None


app = typer.Typer(cls=_NotifyGroup, add_completion=False, no_args_is_help=True,
                  help="Notify: personalised notifications.")
console = Console()


def _use_console() -> None:
    """A fixed, wide console when output is not a terminal, so logs and CI see whole asset names."""
    global console
    console = Console() if sys.stdout.isatty() else Console(width=160)


def _settings(data_dir: Path | None) -> NotifySettings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)
    configure_logging(path=log_file(settings.data_dir))
    return settings


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default NOTIFY_DATA_DIR or .notify).")]


def _run(data_dir: Path | None, *, job: str | None = None, fast_forward_minutes: int = 0) -> None:
    """One Dagster run of ``job`` (default the main job), shown live; exit 1 when a step failed."""
    from notify_cli.run_command import print_summary, run_main

    _use_console()
    try:
        settings = _settings(data_dir)
        _audit_run(settings, job)
        console.print(f"Notify [bold]{settings.env}[/bold] environment, data in {settings.data_dir.resolve()}")
        outcome = run_main(settings, console=console, job_name=job, fast_forward_minutes=fast_forward_minutes)
    except NotifyError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code(exc)) from exc
    print_summary(console, outcome)
    if not outcome.success:
        console.print(f"full trace: {settings.data_dir.resolve() / 'logs' / 'notify.jsonl'}")
        raise typer.Exit(1)


def _audit_run(settings: NotifySettings, job: str | None) -> None:
    """A pipeline run (ingestion, features, plans: it rewrites data) is an administrative action."""
    from notify_cli.security_commands import cli_actor
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.security import audit
    from notify_core.store.factory import build_store

    store = build_store(settings)
    try:
        audit.record(store, clock=SYSTEM_CLOCK, action="pipeline.run", actor=cli_actor(), source="cli",
                     detail={"job": job or "main"})
    finally:
        store.close()


@app.command()
def run(
    data_dir: DataDir = None,
    fast_forward_minutes: Annotated[int, typer.Option(
        "--fast-forward-minutes", min=0, max=24 * 60,
        help="The demo's: the delivery pass sends the next N minutes of the plan now, ahead of their time "
             "(past windows and quiet hours). 0, the default: only what is due.")] = 0,
) -> None:
    """Run the main job end to end as one Dagster run: source -> ingestion -> features -> embeddings ->
    campaign index -> today's plan -> one delivery pass. Steps with nothing new write nothing."""
    _run(data_dir, fast_forward_minutes=fast_forward_minutes)


@app.command()
def ingest(data_dir: DataDir = None) -> None:
    """Ingest the landing folder (users, products, campaigns, purchases): validated and idempotent."""
    from notify_sensors.landing import INGEST_JOB

    _run(data_dir, job=INGEST_JOB)


@app.command()
def features(data_dir: DataDir = None) -> None:
    """Recompute user features, product features and the user-product matrix from the lake."""
    from notify_assets.definitions import FEATURES_JOB

    _run(data_dir, job=FEATURES_JOB)


def _register_commands() -> None:
    """The jobs whose commands live in their own modules (streaming, delivery, evaluation, templates)."""
    from notify_cli import delivery_commands, deploy_templates, evaluate_commands, stream_commands

    app.command(name="consume")(stream_commands.consume)
    app.command(name="serve")(stream_commands.serve)
    app.add_typer(stream_commands.events_app, name="events")
    app.command(name="worker")(delivery_commands.worker)
    app.add_typer(delivery_commands.deliveries_app, name="deliveries")
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
    from notify_cli import simulate_commands

    app.command(name="simulate")(simulate_commands.simulate)


_register_commands()

if __name__ == "__main__":
    app()
