"""``notify backup`` and ``notify restore``: thin glue over :mod:`notify_core.backup`."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from notify_cli import fail

DataDir = Annotated[Path | None, typer.Option(help="Data directory (default: NOTIFY_DATA_DIR or .notify).")]
Target = Annotated[
    str | None,
    typer.Option("--to", "--from", help="A folder or s3://bucket/prefix[?endpoint=URL] (default: NOTIFY_BACKUP_URL)."),
]


def _service(data_dir: Path | None, target: str | None) -> Any:
    from notify_core.backup import BackupService, BackupTarget, plan_backup
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.settings import load_settings

    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    plan = plan_backup(settings, BackupTarget.parse(target or settings.backup_url or ""))
    return BackupService(plan, clock=SYSTEM_CLOCK)


def _audited(data_dir: Path | None, *, action: str, target: str, detail: dict[str, Any]) -> None:
    """One audit entry in the data directory's Store (backups and restores are administrative actions)."""
    from notify_cli.security_commands import cli_actor
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.security import audit
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    store = build_store(load_settings(**({"data_dir": data_dir} if data_dir is not None else {})))
    try:
        audit.record(store, clock=SYSTEM_CLOCK, action=action, actor=cli_actor(), source="cli", target=target,
                     detail=detail)
    finally:
        store.close()


def _audit_head(data_dir: Path | None) -> dict[str, Any] | None:
    """The audit chain's head before a restore replaces the Store (None: no Store yet): the restored chain
    is an older one, and its restore entry says which head it replaced."""
    from notify_core.security import audit
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    if settings.env != "aws" and not settings.sqlite_path.exists():
        return None
    store = build_store(settings)
    try:
        report = audit.verify(store)
        return {"head_seq": report.head_seq, "head_hash": report.head_hash, "ok": report.ok}
    finally:
        store.close()


def backup(
    data_dir: DataDir = None,
    target: Target = None,
    once: Annotated[bool, typer.Option(help="Sync once and exit (default: replicate until stopped).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between snapshots of the lake and artefacts.")] = 10.0,
    new_replica: Annotated[bool, typer.Option(
        help="Back up a database that is missing or new here although the target holds a backup of it "
             "(without it that is refused: run `notify restore` first).")] = False,
    metrics_port: Annotated[int, typer.Option(
        help="Serve Prometheus metrics on this port (notify_backup_replica_behind_seconds) (0: off).")] = 0,
) -> None:
    """Back up the Store and the stream log (Litestream, continuous) and the lake, landing and artefacts.

    A replica that stops receiving changes while this runs (its target's disk full, the bucket unreachable)
    is an error line after a minute and ``notify_backup_replica_behind_seconds`` on ``--metrics-port``."""
    from notify_core.errors import NotifyError
    from notify_core.observability import configure_logging

    configure_logging()
    if metrics_port and not once:
        from notify_core.metrics_server import MetricsServer

        MetricsServer(port=metrics_port)  # serves until the process exits (a daemon thread)
    try:
        service = _service(data_dir, target)
    except NotifyError as exc:
        raise fail(exc) from None
    try:  # before the audit entry, which would create an empty Store in a wiped data directory
        service.check_target(new_replica=new_replica)
    except NotifyError as exc:
        raise fail(exc) from None
    _audited(data_dir, action="backup.run" if once else "backup.start", target=service.plan.target.describe(),
             detail={"once": once, "new_replica": new_replica})
    try:
        if once:
            report = service.once(new_replica=new_replica)
        else:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            report = service.run(stop=stop, interval=interval, new_replica=new_replica)
    except NotifyError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps({"target": service.plan.target.describe(), "files": report.files,
                           "uploaded": report.uploaded}))


def restore(
    data_dir: DataDir = None,
    target: Target = None,
    at: Annotated[str | None, typer.Option(help="Restore as of this time (ISO 8601; UTC if no offset).")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace a Store that exists, and a stream log that is behind its backup (kept beside).")] = False,
    without_keys: Annotated[bool, typer.Option(
        help="Restore although the backup's keys do not open here (no copy of the master key): the sealed "
             "personal fields and the API keys of the restored Store will not open.")] = False,
) -> None:
    """Restore the data directory from a backup: the Store (as of --at), a missing or stale stream log, the files."""
    from notify_core.backup.service import describe
    from notify_core.errors import NotifyError, ValidationError

    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise fail(ValidationError(f"--at {at!r} is not an ISO 8601 time")) from None
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    try:
        service = _service(data_dir, target)
    except NotifyError as exc:
        raise fail(exc) from None
    replaced = _audit_head(data_dir)
    try:
        report = service.restore(at=when, force=force, without_keys=without_keys)
    except NotifyError as exc:
        raise fail(exc) from None
    _audited(data_dir, action="backup.restore", target=service.plan.target.describe(),
             detail={"at": when.isoformat() if when else None, "force": force, "without_keys": without_keys,
                     "replaced_audit_head": replaced})
    typer.echo(json.dumps(describe(report)))


if __name__ == "__main__":
    from notify_cli.standalone import run_standalone

    run_standalone(backup, restore)
