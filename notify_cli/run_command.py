"""``notify run``: one Dagster run of the main job, watched live, summarised in plain units.

The CLI does not orchestrate: it launches ONE run of ``notify_main`` (in-process, on the instance in
``DAGSTER_HOME`` when set, so the run shows in ``make dev``'s UI) and reads the run's event stream while
it executes: a line per asset as it finishes, and the assets' ``progress <asset>: ...`` log lines (files
ingested, embedding batches, planning chunks) under the spinner. Dagster decides what runs and what a
failed step skips. A failure is one line (the root cause and a hint); the full trace goes to the JSON
log file under ``<data_dir>/logs``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from notify_core.settings import NotifySettings

log = logging.getLogger("notify_cli.run")

PROGRESS_PREFIX = "progress "
# Dagster's console logger would print every event and each failure's trace twice; the CLI shows the
# run itself, and the full trace goes to the log file.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
POLL_S = 0.3
INDEX_ASSET = "campaign_index"


@dataclass
class AssetOutcome:
    seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """What the one run did: per asset metadata, check results, failures (one line each) and skipped steps."""

    run_id: str
    success: bool
    seconds: float
    partition: str | None
    assets: dict[str, AssetOutcome] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # step -> "reason (hint)"
    skipped: list[str] = field(default_factory=list)


def _instance() -> Any:
    from dagster import DagsterInstance

    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def root_cause(error: Any) -> Any:
    """The innermost cause of a SerializableErrorInfo (Dagster wraps user errors in its own)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def explain(error: Any, settings: NotifySettings) -> str:
    """One line: the root cause's type and first message line, and a hint where one is known."""
    cause = root_cause(error)
    lines = (cause.message or "").strip().splitlines()
    first = lines[0].strip() if lines else ""
    prefix = f"{cause.cls_name}: "
    reason = first.rsplit(prefix, 1)[-1] if prefix in first else first  # drop "pkg.module.Error: " prefixes
    text = f"{cause.cls_name}: {reason}".strip().rstrip(":")
    hint = ""
    source = settings.source_data
    missing = "not found" in text.lower() or "no such file" in text.lower()
    if missing and not Path(source).exists() and (str(source) in text or source.name in text):
        where = "" if Path(source).is_absolute() else f", relative to {Path.cwd()}"
        hint = f"set NOTIFY_SOURCE_DATA to the Online Retail parquet file ({source} does not exist{where})"
    elif cause.cls_name == "ConfigurationError":
        hint = "check the NOTIFY_* environment variables"
    elif cause.cls_name in ("ModuleNotFoundError", "ImportError"):
        hint = "run `make setup`"
    return f"{text} (hint: {hint})" if hint else text


class Printer:
    """Turns the run's events into lines on the console, and a status line for the step in progress."""

    def __init__(self, console: Console, settings: NotifySettings, status: Any) -> None:
        self.console, self.settings, self.status = console, settings, status
        self.started: dict[str, float] = {}

    def handle(self, entry: Any, outcome: RunOutcome) -> None:
        from dagster import DagsterEventType

        event = entry.dagster_event
        if event is None:  # a user log line from an asset
            message = entry.user_message or ""
            if message.startswith(PROGRESS_PREFIX):
                step = entry.step_key or ""
                self.console.print(f"  [dim]{step}: {message[len(PROGRESS_PREFIX):].split(': ', 1)[-1]}[/dim]")
            return
        kind = event.event_type
        step = event.step_key or ""
        if kind == DagsterEventType.STEP_START:
            self.started[step] = entry.timestamp
            self.status.update(f"[bold]{step}[/bold] running ({len(outcome.assets)} assets done)")
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            name = mat.asset_key.to_user_string()
            if mat.partition and name != step and not step.startswith(name):  # recorded by another step
                self.console.print(f"  [dim]{step}: {name} {mat.partition} rewritten[/dim]")
                return
            from dagster import MarkdownMetadataValue

            meta = {k: v.value for k, v in mat.metadata.items() if not isinstance(v, MarkdownMetadataValue)}
            began = self.started.get(step)
            seconds = entry.timestamp - began if began is not None else None
            outcome.assets[name] = AssetOutcome(seconds=seconds, metadata=meta)
            took = f" in {seconds:.1f} s" if seconds is not None else ""
            self.console.print(f"[green]done[/green] {name}{took}: {_one_line(name, meta)}")
            if name == INDEX_ASSET and meta.get("published"):
                self.console.print(f"  published campaign index {meta.get('version')}")
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
            data = event.event_specific_data
            outcome.checks[f"{data.asset_key.to_user_string()}:{data.check_name}"] = data.passed
        elif kind == DagsterEventType.STEP_FAILURE:
            error = event.event_specific_data.error
            line = explain(error, self.settings)
            outcome.failures[step] = line
            log.error("step failed", extra={"run_id": outcome.run_id, "step": step, "trace": error.to_string()})
            self.console.print(f"[red]FAILED[/red] {step}: {line}", soft_wrap=True)
        elif kind == DagsterEventType.STEP_SKIPPED:
            outcome.skipped.append(step)
            self.console.print(f"[yellow]skipped[/yellow] {step} (a step it needs failed or produced nothing)")


def run_main(settings: NotifySettings, *, console: Console, job_name: str | None = None,
             partition: str | None = None, fast_forward_minutes: int = 0) -> RunOutcome:
    """Launch one run of ``job_name`` (default the main job, planning ``partition``, default today) and
    print its progress from the run's event stream until it ends. ``fast_forward_minutes``: the delivery
    pass sends that much of the plan ahead of time (the demo's; ``notify_assets.delivery``)."""
    import dagster as dg

    # Dagster's Beta/Preview notices for APIs we chose (partitioned checks, backfill policy) are not news
    # to the person running the demo; they stay visible in `dagster dev` and the tests.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from notify_assets.definitions import MAIN_JOB, build_definitions
    from notify_assets.delivery import delivery_run
    from notify_assets.scheduling import today_partition

    job_name = job_name or MAIN_JOB
    defs = build_definitions(settings)
    job = defs.resolve_job_def(job_name)
    if partition is None and job.partitions_def is not None:
        partition = today_partition(settings.clock())
    run_config: dict[str, Any] = dict(QUIET)
    if INDEX_ASSET in {k.to_user_string() for k in job.asset_layer.executable_asset_keys}:
        # In aws the daemon's sensor publishes a passing index build; `notify run` has no daemon, so its
        # run publishes the build itself, before the plan reads it (the sensor then finds it done).
        run_config["resources"] = {"recommend": {"config": {"publish_on_build": True}}}
    if fast_forward_minutes and delivery_run.key in job.asset_layer.executable_asset_keys:
        run_config["ops"] = {delivery_run.op.name: {"config": {"fast_forward_minutes": fast_forward_minutes}}}
        console.print(f"[yellow]the delivery pass sends the next {fast_forward_minutes} min of the plan now, "
                      f"early (--fast-forward-minutes: a demo's, never a deployment's)[/yellow]")
    # Disposed at the end: an ephemeral instance (no DAGSTER_HOME) holds a temporary artefact folder that
    # every `notify run` left behind in /tmp before.
    with _instance() as instance:
        return _execute(job, instance=instance, partition=partition, run_config=run_config, settings=settings,
                        console=console)


def _execute(job: Any, *, instance: Any, partition: str | None, run_config: dict[str, Any],
             settings: NotifySettings, console: Console) -> RunOutcome:
    """One run of ``job`` on ``instance`` in a thread, its events printed as they are stored."""
    run_id = str(uuid.uuid4())  # Dagster's run ids are UUID4 strings
    outcome = RunOutcome(run_id=run_id, success=False, seconds=0.0, partition=partition)
    crashed: list[BaseException] = []
    result: list[Any] = []

    def execute() -> None:
        try:
            result.append(job.execute_in_process(instance=instance, run_id=run_id, partition_key=partition,
                                                 raise_on_error=False, run_config=run_config))
        except BaseException as exc:  # reported below, with its trace in the log file
            crashed.append(exc)

    started = time.perf_counter()
    thread = threading.Thread(target=execute, name="notify-run", daemon=True)
    with console.status("starting the run") as status:
        printer = Printer(console, settings, status)
        thread.start()
        cursor = None
        while True:
            alive = thread.is_alive()
            try:
                conn = instance.get_records_for_run(run_id, cursor=cursor, limit=500)
            except Exception:  # the run is not stored yet
                conn = None
            if conn is not None:
                for record in conn.records:
                    printer.handle(record.event_log_entry, outcome)
                cursor = conn.cursor
                if conn.has_more:
                    continue
            if not alive:
                break
            time.sleep(POLL_S)
    thread.join()
    outcome.seconds = time.perf_counter() - started
    if crashed:
        exc = crashed[0]
        log.error("run crashed", exc_info=exc, extra={"run_id": run_id})
        outcome.failures["run"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return outcome
    outcome.success = bool(result and result[0].success)
    if not outcome.success:  # Dagster does not start what needs a failed step; name what was left out
        done = set(outcome.assets) | set(outcome.failures) | set(outcome.skipped)
        outcome.skipped += sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys
                                  if k.to_user_string() not in done)
    return outcome


def _n(value: Any) -> str:
    """A count with thousands separators; floats rounded; empty stays empty."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _one_line(name: str, meta: dict[str, Any]) -> str:
    rows = meta.get("rows", meta.get("rows_valid", meta.get("source_rows")))
    parts = [f"{_n(rows)} rows"] if rows is not None else []
    for key, label in (("lake_inserted", "new"), ("lake_updated", "changed"), ("embedded", "embedded"),
                       ("removed", "removed"), ("rows_bad", "quarantined"), ("files_written", "files written"),
                       ("delivered", "delivered")):
        if meta.get(key):
            parts.append(f"{_n(meta[key])} {label}")
    written = int(meta.get("store_inserted", 0) or 0) + int(meta.get("store_updated", 0) or 0)
    if "store_inserted" in meta:
        parts.append(f"{_n(written)} written to the Store")
    return ", ".join(parts) or "done"


def _minutes(seconds: Any) -> str:
    return f"{float(seconds) / 60:.1f} min" if seconds not in (None, "") else "n/a"


def highlights(outcome: RunOutcome) -> list[str]:
    """The figures worth a sentence, in units (and what the demo's delivery fast-forward means)."""
    lines: list[str] = []
    index = outcome.assets.get("campaign_index")
    if index is not None:
        m = index.metadata
        lines.append(f"campaign index {m.get('version', '?')}: {_n(m.get('rows'))} campaigns, {m.get('kind', '?')}, "
                     f"recall@10 {float(m.get('recall_at_10', 0)):.3f} (needs >= 0.99, "
                     f"{'passed' if m.get('recall_passed') else 'FAILED'}), search effort {m.get('search_effort')}")
    plan = outcome.assets.get("notification_plan")
    if plan is not None:
        m = plan.metadata
        lines.append(f"plan for {m.get('plan_day', outcome.partition)}: {_n(m.get('notifications_planned'))} "
                     f"notifications for {_n(m.get('users_with_notifications'))} users "
                     f"(candidates: {m.get('candidate_source')}; busiest minute {_n(m.get('peak_minute_load'))} "
                     f"sends, {_n(m.get('capacity_violations'))} minutes over capacity)")
        if not m.get("notifications_planned") and m.get("users_planned"):
            lines.append("  nothing left to plan: the rest of this day is outside the users' windows or after their "
                         "caps (late in the UTC evening it usually is); tomorrow is planned at 00:00 UTC. To replay "
                         "a morning: NOTIFY_CLOCK_START=<day>T09:00:00Z notify run")
    delivery = outcome.assets.get("delivery_run")
    if delivery is not None:
        m = delivery.metadata
        ff = m.get("fast_forward_minutes", 0)
        lines.append(f"delivery: {_n(m.get('delivered'))} delivered, {_n(m.get('retried'))} retried, "
                     f"{_n(m.get('dead_lettered'))} dead-lettered, {_n(m.get('duplicates'))} duplicates "
                     f"(channel {m.get('channel')})")
        if ff:
            lines.append(f"  the demo fast-forwards the worker's clock {ff} min so the next {ff} min of the plan is "
                         f"due now; lateness p50 {_minutes(m.get('lateness_p50_s'))}, p99 "
                         f"{_minutes(m.get('lateness_p99_s'))} is measured against that shifted clock (up to "
                         f"{ff} min by construction), not a missed delivery deadline")
    return lines


def print_summary(console: Console, outcome: RunOutcome) -> None:
    table = Table(title=f"Notify run {outcome.run_id[:8]} ({outcome.seconds:.0f} s)", show_lines=False)
    for column in ("asset", "time", "rows", "new", "changed", "unchanged", "removed", "bad", "Store written"):
        table.add_column(column, justify="left" if column == "asset" else "right")
    for name, asset in outcome.assets.items():
        m = asset.metadata
        written = (int(m.get("store_inserted", 0)) + int(m.get("store_updated", 0))) if "store_inserted" in m else ""
        table.add_row(
            name, f"{asset.seconds:.1f} s" if asset.seconds is not None else "",
            _n(m.get("rows", m.get("rows_valid", m.get("source_rows", "")))),
            _n(m.get("lake_inserted", m.get("embedded", ""))), _n(m.get("lake_updated", "")),
            _n(m.get("lake_unchanged", m.get("store_unchanged", m.get("skipped", "")))), _n(m.get("removed", "")),
            _n(m.get("rows_bad", "")), _n(written))
    console.print(table)
    for line in highlights(outcome):
        console.print(line)
    failed_checks = [name for name, passed in outcome.checks.items() if not passed]
    console.print(f"asset checks: {len(outcome.checks) - len(failed_checks)}/{len(outcome.checks)} passed"
                  + (f" (failed: {', '.join(failed_checks)})" if failed_checks else ""))
    for step, line in outcome.failures.items():
        console.print(f"[red]{step} failed:[/red] {line}", soft_wrap=True)
    if outcome.skipped:
        console.print(f"[yellow]not run[/yellow] (downstream of a failure): {', '.join(outcome.skipped)}")
    written = sum(int(a.metadata.get("store_inserted", 0)) + int(a.metadata.get("store_updated", 0))
                  for a in outcome.assets.values())
    console.print(f"rows written or changed in the Store this run: [bold]{written}[/bold]")
