"""``notify worker``: the delivery loop as a long-running process (the local stand-in for the EventBridge
rule that invokes ``deliver_notifications`` every minute), and ``notify deliveries redrive`` (dead letters
sent again once their cause is fixed, :mod:`notify_core.delivery.redrive`).

It runs the same worker as the Lambda, continuously: a pass whenever something is due (items are
prefetched before their minute starts and sent at their ``send_at``; retries at +1/+5/+20 s), otherwise
it sleeps at most ``poll_s`` (250 ms). SIGTERM/SIGINT finish the pass in hand and exit (code 75,
``notify_cli.STOPPED_UNFINISHED``, when the Store refused its last writes: a full disk); ``kill -9`` loses
nothing (claims carry a lease another worker takes over). Registered on the main app by
``notify_cli.main``; ``python -m notify_cli.delivery_commands`` runs it stand-alone (the crash test does).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from notify_cli import STOPPED_UNFINISHED, until_started
from notify_core.errors import NotifyError

if TYPE_CHECKING:
    from notify_core.settings import NotifySettings
    from notify_core.store.port import Store

DataDir = Annotated[Path | None, typer.Option(help="Data directory (default: NOTIFY_DATA_DIR or .notify).")]


def worker(
    data_dir: DataDir = None,
    channel: Annotated[str | None, typer.Option(help="outbox | webhook | sns (default from settings).")] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Webhook endpoint (channel webhook).")] = None,
    outbox: Annotated[Path | None, typer.Option(help="Outbox JSONL file (channel outbox).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Sending threads.")] = None,
    lease_s: Annotated[float | None, typer.Option(help="Claim lease in seconds.")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many seconds with nothing due.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Exit after this many seconds.")] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Deliver due notifications continuously; prints the totals as JSON on exit."""
    from notify_core.cloudwatch_metrics import publishing
    from notify_core.delivery.worker import DeliveryWorker, build_worker
    from notify_core.observability import configure_logging
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    overrides: dict[str, Any] = {}
    for name, value in (("data_dir", data_dir), ("delivery_channel", channel), ("webhook_url", webhook_url),
                        ("outbox_path", outbox), ("delivery_concurrency", concurrency), ("delivery_lease_s", lease_s)):
        if value is not None:
            overrides[name] = value
    settings = load_settings(**overrides)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(path=log_dir / "delivery.jsonl")
    if metrics_port:
        from notify_core.metrics_server import MetricsServer

        MetricsServer(port=metrics_port)  # serves until the process exits (a daemon thread)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def make() -> tuple[Store, DeliveryWorker]:
        store = build_store(settings)
        try:
            return store, build_worker(settings, store, clock=settings.clock())
        except BaseException:
            store.close()  # its open lease too: a restore is not refused for a worker that did not start
            raise

    made = until_started(make, stop=stop, what="worker")  # the Store's disk full or DynamoDB away: retried
    if made is None:
        typer.echo("notify worker: stopped before it started (the Store kept failing); nothing was claimed",
                   err=True)
        raise typer.Exit(STOPPED_UNFINISHED)
    store, delivery = made
    started = time.monotonic()
    last_work = [started]

    def on_pass(step: Any) -> None:
        now = time.monotonic()
        if step.attempts or step.duplicates or step.in_flight or delivery.claims.scanning:
            last_work[0] = now  # idle means nothing sent *and* nothing still being looked for
        if (idle_exit is not None and now - last_work[0] >= idle_exit) or (
                max_seconds is not None and now - started >= max_seconds):
            stop.set()

    failed: NotifyError | None = None
    try:
        with publishing(settings):  # aws: the failure and missed-delivery alarms read what it counts
            delivery.run_forever(stop, on_pass=on_pass)
    except NotifyError as exc:  # the Store refusing the last writes as the loop stops (its disk full)
        failed = exc
    finally:
        try:
            delivery.close()
        except NotifyError as exc:
            failed = failed or exc
        delivery.channel.close()
        store.close()
    typer.echo(json.dumps(delivery.totals.as_dict()))
    if failed is not None:
        typer.echo(f"notify worker: stopped with writes the Store refused ({failed}); unrecorded sends are "
                   "re-sent with the same idempotency key once their lease ends", err=True)
        raise typer.Exit(STOPPED_UNFINISHED)


deliveries_app = typer.Typer(add_completion=False, no_args_is_help=True,
                             help="Delivered notifications: list the dead letters, and send them again once "
                                  "their cause is fixed.")


def _settings_and_store(data_dir: Path | None) -> tuple[NotifySettings, Store]:
    """The settings and the Store the ``deliveries`` commands read (the caller closes the Store)."""
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    return settings, build_store(settings)


def _moment(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO time (e.g. 2026-12-05T10:00Z)") from exc
    if when.tzinfo is None:
        raise typer.BadParameter(f"{value!r} needs a time zone (e.g. 2026-12-05T10:00Z)")
    return when


@deliveries_app.command("redrive")
def redrive_command(
    since: Annotated[str, typer.Option(help="Dead-lettered at or after this ISO time (with its zone).")],
    until: Annotated[str | None, typer.Option(help="... and at or before this one (default: now).")] = None,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign's.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Count what would be sent again; change nothing.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Send again the notifications dead-lettered in a window (a receiver that was down, a credential put
    right): each is due now as its next attempt, under the same idempotency key, with the retries again
    (1 s, 5 s, 20 s, counted from the redrive); what is more than
    NOTIFY_DELIVERY_MAX_LATE_S past its send time is left. Audited; prints counts."""
    from notify_cli.security_commands import cli_actor
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.delivery.redrive import redrive
    from notify_core.security import audit

    start, end = _moment(since), _moment(until) if until else None
    settings, store = _settings_and_store(data_dir)
    try:
        report = redrive(store, since=start, until=end, campaign_id=campaign, clock=SYSTEM_CLOCK,
                         max_late_s=settings.delivery_max_late_s, dry_run=dry_run)
        if not dry_run:
            audit.record(store, clock=SYSTEM_CLOCK, action="deliveries.redrive", actor=cli_actor(), source="cli",
                         target=campaign or "all", detail={"since": start.isoformat(),
                                                           "until": end.isoformat() if end else None,
                                                           **report.as_dict()})
    finally:
        store.close()
    typer.echo(json.dumps({**report.as_dict(), "dry_run": dry_run}))


@deliveries_app.command("dead-letters")
def dead_letters_command(
    since: Annotated[str, typer.Option(help="Dead-lettered at or after this ISO time (with its zone).")],
    until: Annotated[str | None, typer.Option(help="... and at or before this one (default: now).")] = None,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign's.")] = None,
    data_dir: DataDir = None,
) -> None:
    """List the notifications dead-lettered in a window, oldest first, one JSON object a line: when, which
    notification, user and campaign, the attempt and its last error, and its status now (dead_lettered, or
    where a redrive took it). Read before a redrive, and after it."""
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.delivery.redrive import dead_letters

    start, end = _moment(since), _moment(until) if until else None
    _, store = _settings_and_store(data_dir)
    try:
        for letter in dead_letters(store, since=start, until=end, campaign_id=campaign, clock=SYSTEM_CLOCK):
            typer.echo(json.dumps(letter.as_dict()))
    finally:
        store.close()


if __name__ == "__main__":
    from notify_cli.standalone import run_standalone

    run_standalone(worker)
