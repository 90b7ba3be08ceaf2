"""``notify consume`` and ``notify serve``: the streaming ingestion processes.

Plain functions with typer annotations, registered on the main ``notify`` app by ``notify_cli.main``
(``app.command()(consume)``); ``python -m notify_cli.stream_commands`` runs them stand-alone too (tests
and benchmarks start consumer subprocesses that way).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from notify_cli import STOPPED_UNFINISHED, until_started
from notify_core.cloudwatch_metrics import publishing
from notify_core.errors import DatabaseReplacedError, NotifyError
from notify_core.landing import LandingArea, build_landing_area
from notify_core.settings import NotifySettings, load_settings
from notify_core.stream import open_stream
from notify_core.stream.port import Stream

log = logging.getLogger("notify_cli.serve")

DataDir = Annotated[Path | None, typer.Option(help="Data directory (default: NOTIFY_DATA_DIR or .notify).")]
Kafka = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers; default: NOTIFY_KAFKA_BOOTSTRAP, else the embedded log.")
]


def _settings(data_dir: Path | None, kafka: str | None) -> NotifySettings:
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    if kafka:
        overrides |= {"stream_backend": "kafka", "kafka_bootstrap": kafka}
    return load_settings(**overrides)


def _open(data_dir: Path | None, kafka: str | None) -> tuple[NotifySettings, Stream]:
    settings = _settings(data_dir, kafka)
    return settings, open_stream(settings)


def consume(
    data_dir: DataDir = None,
    kafka: Kafka = None,
    group: Annotated[str, typer.Option(help="Consumer group.")] = "notify-event-consumer",
    max_batch: Annotated[int, typer.Option(help="Records per batch at most.")] = 10_000,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
    max_records: Annotated[int | None, typer.Option(help="Exit after about this many records.")] = None,
    from_beginning: Annotated[bool, typer.Option(help="Replay the topics from offset 0.")] = False,
    metrics_port: Annotated[int, typer.Option(
        help="Serve Prometheus metrics on this port, and /healthz (503 once the loop is stuck) (0: off).")] = 0,
    metrics_addr: Annotated[str, typer.Option(
        help="Interface of the metrics port (a pod that Prometheus scrapes: 0.0.0.0).")] = "127.0.0.1",
    standby: Annotated[
        bool, typer.Option(help="Embedded log: if another process consumes the group, wait and take over.")
    ] = False,
    decode_process: Annotated[
        bool, typer.Option(help="Decode batches in a second process (SQLite Store): faster with a core to "
                                "spare, slower on a box whose cores are busy.")
    ] = False,
) -> None:
    """Read purchase_history and notify_clickstream in batches and persist them to the Store.

    Offsets are committed after each batch is written; SIGTERM/SIGINT finish the batch in hand, commit and
    exit, and print the totals as JSON. If the batch in hand keeps failing (the Store down, its disk full), a
    stop gives it up uncommitted, to be read again by the next consumer, and exits with code 75
    (``notify_cli.STOPPED_UNFINISHED``).
    """
    from notify_core.events.consumer import (
        BatchOutcome,
        EventConsumer,
        StoppedWhileRetryingError,
        totals_dict,
    )
    from notify_core.gc_tuning import tune_gc_for_throughput
    from notify_core.metrics_server import MetricsServer
    from notify_core.observability import configure_logging
    from notify_core.store.factory import build_store
    from notify_core.store.port import Store

    configure_logging()
    settings = _settings(data_dir, kafka)
    tune_gc_for_throughput()
    running: list[EventConsumer] = []  # /healthz asks the consumer once there is one (standby: healthy)
    metrics = MetricsServer(port=metrics_port, addr=metrics_addr,
                            healthy=lambda: all(c.healthy() for c in running)) if metrics_port else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from notify_core.stream.local_log import GroupBusyError

    def give_up(message: str, code: int, *opened: Stream | Store) -> NoReturn:
        for backend in opened:
            backend.close()
        typer.echo(f"notify consume: {message}", err=True)
        raise typer.Exit(code)

    def open_backends() -> tuple[Stream, Store]:
        """Both or neither: a failed start closes what it opened (its open lease too)."""
        with contextlib.ExitStack() as opened:
            stream = open_stream(settings)
            opened.callback(stream.close)
            store = build_store(settings)
            opened.callback(store.close)
            store.tune_for_bulk_writes()
            opened.pop_all()
            return stream, store

    # A full disk, the Store or the broker away at start: retried (until_started), never a crash loop.
    backends = until_started(open_backends, stop=stop, what="consumer")
    if backends is None:
        give_up("stopped before it started (its backend kept failing); nothing was read", STOPPED_UNFINISHED)
    stream, store = backends
    while True:
        try:
            made = until_started(
                lambda: EventConsumer(stream=stream, store=store, landing=settings.landing / "purchases", group=group,
                                      max_batch=max_batch, clock=settings.clock(), decode_process=decode_process),
                stop=stop, what="consumer")
        except GroupBusyError as exc:
            if not standby:
                give_up(str(exc), 3, stream, store)
            if stop.wait(0.5):  # stopped before it took over: it handled nothing, and says so as any stop does
                stream.close()
                store.close()
                typer.echo(json.dumps({**totals_dict(BatchOutcome()), "lag": None}))
                return
            continue
        except DatabaseReplacedError as exc:  # no retry reaches the new file: the supervisor starts a new process
            give_up(f"stopped before it started: {exc}", STOPPED_UNFINISHED, stream, store)
        if made is None:
            give_up("stopped before it started (its backend kept failing); nothing was read", STOPPED_UNFINISHED,
                    stream, store)
        consumer = made
        running.append(consumer)
        break
    area = build_landing_area(settings)  # aws: order files go to the S3 prefix, where ingestion finds them
    pusher = threading.Thread(target=_push_landing, args=(area, stop), daemon=True)
    pusher.start()
    try:
        if from_beginning:
            consumer.seek_to_beginning()
        try:
            # aws: the pipeline-success alarm reads the consumer's records by outcome, and a pod has no Lambda
            # log to carry them as EMF lines
            with publishing(settings):
                totals = consumer.run(stop=stop, idle_exit=idle_exit, max_records=max_records)
        except StoppedWhileRetryingError as exc:
            typer.echo(f"notify consume: {exc}", err=True)
            raise typer.Exit(STOPPED_UNFINISHED) from None
        lag = consumer.lag()
    finally:
        stop.set()
        pusher.join(30)
        consumer.close()
        stream.close()
        store.close()
        area.push()  # whatever the last batches wrote
        if metrics is not None:
            metrics.close()
    typer.echo(json.dumps({**totals_dict(totals), "lag": lag}))


def _push_landing(area: LandingArea, stop: threading.Event, every_s: float = 10.0) -> None:
    """Publish the consumer's order files every ``every_s`` (a no-op for the local landing folder)."""
    while not stop.wait(every_s):
        try:
            area.push()
        except NotifyError as exc:  # S3 unreachable: retried next round; the files stay on local disk
            logging.getLogger(__name__).warning("landing push failed", extra={"error": str(exc)})


def serve(
    data_dir: DataDir = None,
    kafka: Kafka = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    log_level: Annotated[str, typer.Option(help="JSON log level (INFO logs one line per request).")] = "WARNING",
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one per core for throughput).")] = 1,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Serve WITHOUT API keys (anyone may call every route). Local experiments only.",
    )] = False,
    tls_cert: Annotated[Path | None,
                        typer.Option("--tls-cert", help="PEM certificate: serve HTTPS (TLS 1.2+).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Serve the Lambda handlers over HTTP (API Gateway v2 events), e.g. POST /v1/events.

    Every route but the tracking links needs an API key. On the first start (no key in the Store) an admin
    key is written to ``<data_dir>/secrets/admin.key`` (0600); the log says where, never the key.
    With ``--tls-cert``/``--tls-key`` it serves HTTPS (TLS 1.2+).
    """
    from notify_core.security.tls import check_tls_files

    tls = check_tls_files(tls_cert, tls_key)
    tls_args: dict[str, Any] = {"tls_cert": str(tls[0]), "tls_key": str(tls[1])} if tls else {}
    from lambdas import capture_events, runtime
    from lambdas.gateway import serve as run_gateway
    from notify_core.observability import configure_logging

    configure_logging(level=log_level.upper())

    def start() -> tuple[NotifySettings, Stream]:
        settings, stream = _open(data_dir, kafka)
        try:
            _secure(settings, insecure=insecure_no_auth, listen=_listen_url(host, port, tls=bool(tls)))
        except BaseException:
            stream.close()
            raise
        return settings, stream

    # The log or the Store unwritable at start (a full disk: the key bootstrap and the audit entry of this
    # start are writes): retried until it works, where it exited 75 and its supervisor started it every 5 s.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    made = until_started(start, stop=stop, what="server")
    for sig, handler in previous.items():  # the gateway stops on them itself from here
        signal.signal(sig, handler)
    if made is None:
        typer.echo("notify serve: stopped before it started (the stream log or the Store kept failing)", err=True)
        raise typer.Exit(STOPPED_UNFINISHED)
    settings, stream = made
    if not tls and not _is_loopback(host):
        _warn_clear_text(host)
    # Handlers get our settings handed over (runtime.configure), not through os.environ.
    runtime.configure(settings)
    gateway_args = {**tls_args, "headers_timeout_s": settings.request_headers_timeout_s,
                    "body_timeout_s": settings.request_body_timeout_s,
                    "watch": tuple(settings.local_databases.values())}
    if workers > 1:  # each forked worker builds its own Store, stream and key check on its first request
        stream.close()
        runtime.use_auth(None, insecure=insecure_no_auth)
        run_gateway(host=host, port=port, workers=workers, **gateway_args)
        return
    capture_events.use_stream(stream)
    try:
        run_gateway(host=host, port=port, **gateway_args)
    finally:
        stream.close()


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _listen_url(host: str, port: int, *, tls: bool) -> str:
    """Where the server listens, as an operator should read it (the banner names this, not
    NOTIFY_PUBLIC_BASE_URL, which is only what the tracking links say)."""
    import ipaddress

    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}" + (" (every interface)" if unspecified else "")


def _warn_clear_text(host: str) -> None:
    """Plain HTTP off the loopback is allowed (TLS may end at a proxy in front) but never silent: the API
    keys and the users' data cross the network in clear text up to whatever ends TLS."""
    import sys

    print(f"!!  notify serve --host {host} without --tls-cert: API keys and personal data cross the network "
          "in clear text.\n!!  Serve HTTPS (--tls-cert/--tls-key) or bind 127.0.0.1 behind a TLS proxy.",
          file=sys.stderr, flush=True)
    log.warning("serving plain HTTP beyond the loopback", extra={"host": host})


def _secure(settings: NotifySettings, *, insecure: bool, listen: str) -> None:
    """The first admin key (or the loud insecure mode, naming where the server ``listen``s), and an audit
    entry for how this server runs."""
    import getpass
    import sys

    from lambdas import runtime
    from notify_cli.security_commands import build_keyring
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.security import audit
    from notify_core.security.keys import bootstrap_admin_key
    from notify_core.store.factory import build_store

    store = build_store(settings)
    try:
        if insecure:
            banner = "!" * 78
            print(f"{banner}\n!!  notify serve --insecure-no-auth: NO API KEYS CHECKED. Anyone who can reach "
                  f"{listen}\n!!  can read and change campaigns, schedules and events. "
                  f"Never use this outside a local experiment.\n{banner}", file=sys.stderr, flush=True)
            log.warning("serving WITHOUT authentication (--insecure-no-auth)")
            runtime.use_auth(None, insecure=True)
        else:
            keyring = build_keyring(settings, store, clock=settings.clock())
            written = bootstrap_admin_key(keyring, settings.secrets_dir / "admin.key")
            if written is not None:
                log.warning("first run: an admin API key was written", extra={"path": str(written)})
                print(f"first run: an admin API key was written to {written} (mode 0600); send it as "
                      "X-API-Key", file=sys.stderr, flush=True)
        try:
            user = getpass.getuser()
        except Exception:
            user = "unknown"
        audit.record(store, clock=SYSTEM_CLOCK, action="settings.serve", actor=f"cli:{user}", source="cli",
                     detail={"auth": "DISABLED" if insecure else "api-keys", "env": settings.env})
    finally:
        store.close()


events_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Captured events: read back the ones the consumer refused, and why.")


@events_app.command("refused")
def refused_command(
    limit: Annotated[int, typer.Option(min=1, help="The newest this many, per dead-letter topic partition.")] = 1000,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stream to hand them over.")] = 30.0,
    data_dir: DataDir = None,
    kafka: Kafka = None,
) -> None:
    """List the events the consumer refused (malformed, a rule broken, a wrong topic), oldest first, one JSON
    object a line: the reason, the event's topic, offset and time, when it was refused, its text, and where it
    sits in the dead-letter topic. Read-only: no consumer group moves. Exits 75 if the stream did not hand
    over all of them in time (what was read is printed)."""
    from notify_core.events.refused import refused_events

    _, stream = _open(data_dir, kafka)
    try:
        read = refused_events(stream, limit=limit, timeout_s=timeout)
    finally:
        stream.close()
    for event in read.events:
        typer.echo(json.dumps(event))
    if not read.complete:
        typer.echo(f"notify events refused: the stream did not hand over every dead letter within {timeout:g} s "
                   f"({read.read} read); run it again", err=True)
        raise typer.Exit(STOPPED_UNFINISHED)


if __name__ == "__main__":
    from notify_cli.standalone import run_standalone

    run_standalone(consume, serve)
