"""``notify keys create|list|rotate|revoke``, ``notify audit verify|show``, ``notify secrets ...`` (key
rotation) and ``notify users delete ID`` (right to erasure).

Thin glue over :mod:`notify_core.security` and :mod:`notify_core.erasure`: read settings, call the
domain, print a JSON summary. Every API key change is audited by the KeyRing itself, and every erasure
and secret rotation here writes its audit entry, with the actor ``cli:<user>`` and source ``cli``. A new
API key's token is printed once (or written to a new 0600 file with ``--out``) and stored nowhere; other
secrets are never printed, except by ``notify secrets show-webhook`` on purpose (a receiver needs the key
it verifies with).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from notify_cli import fail
from notify_core.clock import SYSTEM_CLOCK, Clock, utcnow
from notify_core.errors import NotifyError
from notify_core.security import audit
from notify_core.security.keycheck import DEFAULT_OVERLAP_S, DEFAULT_TTL_DAYS
from notify_core.security.keys import KeyRing, open_secret_file
from notify_core.security.scopes import SCOPES
from notify_core.settings import NotifySettings, load_settings
from notify_core.store.port import Store

DataDir = Annotated[Path | None,
                    typer.Option("--data-dir", help="Data directory (default NOTIFY_DATA_DIR or .notify).")]

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys: create, list, rotate, revoke.")
audit_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The audit trail: verify, show.")
secrets_app = typer.Typer(no_args_is_help=True,
                          help="Rotate and inspect Notify's keys (0600 files under the data dir).")
users_app = typer.Typer(no_args_is_help=True, help="User data: right to erasure.")


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name (a container without /etc/passwd entry)
        return "cli:unknown"


def _settings(data_dir: Path | None) -> NotifySettings:
    return load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))


def _store(settings: NotifySettings) -> Store:
    from notify_core.store.factory import build_store

    return build_store(settings)


def build_keyring(settings: NotifySettings, store: Store, *, clock: Clock) -> KeyRing:
    """The audited KeyRing over the Store, with the deployment's pepper (the handlers' key check uses the
    same: ``lambdas.runtime.build_key_check``)."""
    from notify_core.security.keycheck import resolve_pepper

    pepper = resolve_pepper(configured=settings.api_key_pepper, env=settings.env, secrets_dir=settings.secrets_dir,
                            secret=settings.api_key_pepper_secret, region=settings.aws_region)
    return KeyRing(store, pepper=pepper, clock=clock)


def _keyring(data_dir: Path | None) -> KeyRing:
    settings = _settings(data_dir)
    return build_keyring(settings, _store(settings), clock=SYSTEM_CLOCK)


def _open_out(out: Path | None) -> IO[str] | None:
    """The ``--out`` file, made (new, 0600) before the key is issued or rotated: a file that exists or
    cannot be made is refused while nothing has changed, not after (a key nobody holds; a rotation whose
    old key expires after the overlap with its successor lost)."""
    if out is None:
        return None
    try:
        return open_secret_file(out)
    except OSError as exc:
        typer.echo(f"error: cannot write the key to {out}: {exc.strerror or exc}; nothing was changed", err=True)
        raise typer.Exit(2) from None


def _discard_out(out: Path | None, sink: IO[str] | None) -> None:
    """Remove the empty ``--out`` file of a key that was not issued."""
    if out is not None and sink is not None:
        sink.close()
        out.unlink(missing_ok=True)


def _emit_token(token: str, out: Path | None, sink: IO[str] | None) -> None:
    if out is None or sink is None:
        typer.echo(token)
    else:
        with sink:
            sink.write(token + "\n")
        typer.echo(f"key written to {out} (mode 0600)", err=True)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the key is for (shown by `list`).")],
    scope: Annotated[list[str], typer.Option(help=f"Scope (repeatable): {', '.join(SCOPES)}.")],
    ttl_days: Annotated[float, typer.Option(help="Days until it expires.")] = DEFAULT_TTL_DAYS,
    rate_per_minute: Annotated[int | None, typer.Option(help="Requests per minute for this key.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the key to this new 0600 file instead of stdout.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key; the key is printed once (keep it: only its keyed hash is stored)."""
    sink = _open_out(out)
    try:
        extra: dict[str, Any] = {"rate_per_minute": rate_per_minute} if rate_per_minute is not None else {}
        key, token = _keyring(data_dir).create(name=name, scopes=scope, ttl_days=ttl_days, actor=cli_actor(),
                                               source="cli", **extra)
    except BaseException as exc:
        _discard_out(out, sink)
        if isinstance(exc, NotifyError):
            raise fail(exc) from exc
        raise
    typer.echo(f"created {key.key_id} scopes={','.join(key.scopes)} expires_at={key.expires_at:.0f}", err=True)
    _emit_token(token, out, sink)


@keys_app.command("list")
def list_keys(data_dir: DataDir = None) -> None:
    """Every key's record (never a secret) and its state, as JSON lines."""
    ring = _keyring(data_dir)
    now = ring.clock.now()
    for key in ring.list():
        typer.echo(json.dumps({**key.as_dict(), "state": key.state(now)}))


@keys_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key to replace.")],
    overlap_hours: Annotated[float, typer.Option(help="Hours the old key keeps working.")] = DEFAULT_OVERLAP_S / 3600,
    out: Annotated[Path | None, typer.Option(help="Write the new key to this new 0600 file.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Issue a successor with the same scopes; the old key works for the overlap, then expires."""
    sink = _open_out(out)
    try:
        key, token = _keyring(data_dir).rotate(key_id, overlap_s=overlap_hours * 3600, actor=cli_actor(),
                                               source="cli")
    except BaseException as exc:
        _discard_out(out, sink)
        if isinstance(exc, NotifyError):
            raise fail(exc) from exc
        raise
    typer.echo(f"rotated {key_id} -> {key.key_id}", err=True)
    _emit_token(token, out, sink)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key to end now.")], data_dir: DataDir = None) -> None:
    """End a key at once."""
    try:
        key = _keyring(data_dir).revoke(key_id, actor=cli_actor(), source="cli")
    except NotifyError as exc:
        raise fail(exc) from exc
    typer.echo(f"revoked {key.key_id}")


@audit_app.command("verify")
def verify(data_dir: DataDir = None) -> None:
    """Recompute the hash chain: exit 1 on any edited or deleted entry. Prints the head hash to keep."""
    report = audit.verify(_store(_settings(data_dir)))
    typer.echo(json.dumps(report.as_dict()))
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def show(limit: Annotated[int, typer.Option(help="The last N entries.")] = 50, data_dir: DataDir = None) -> None:
    """The last entries, as JSON lines."""
    rows = list(audit.entries(_store(_settings(data_dir))))
    for entry in rows[-limit:]:
        typer.echo(json.dumps(entry.as_dict(), default=str))


@secrets_app.command("rotate")
def rotate_secrets(
    data_dir: DataDir = None,
    purpose: Annotated[str, typer.Option(help="all | master (re-wrap data keys) | tracking | webhook.")] = "all",
    overlap_days: Annotated[float, typer.Option(min=0, help="How long replaced HMAC keys still verify.")] = 30.0,
    new_data_keys: Annotated[bool, typer.Option(help="Also start new data keys for new writes.")] = False,
) -> None:
    """Rotate keys: a new master version re-wraps every data key; tracking/webhook get a new active key."""
    from notify_core.security.vault import build_vault

    if purpose not in ("all", "master", "tracking", "webhook"):
        raise typer.BadParameter("purpose is all, master, tracking or webhook")
    settings = _settings(data_dir)
    vault = build_vault(settings)
    out: dict[str, Any] = {}
    if purpose in ("all", "master"):
        report = vault.sealer().rotate(new_data_keys=new_data_keys)
        out["master"] = {"version": report.master_version, "rewrapped_data_keys": report.rewrapped,
                         "new_data_keys": report.new_data_keys, "retired": report.retired_master_versions}
    for name in ("tracking", "webhook"):
        if purpose in ("all", name):
            ring = vault.rotate_ring(name, clock=SYSTEM_CLOCK, overlap=timedelta(days=overlap_days))
            out[name] = {"active": ring.active_kid, "verifying": [k.kid for k in ring.keys]}
    store = _store(settings)
    try:  # the summary holds key ids and counts, never a secret
        audit.record(store, clock=SYSTEM_CLOCK, action="secrets.rotate", actor=cli_actor(), source="cli",
                     target=purpose, after=out)
    finally:
        store.close()
    typer.echo(json.dumps(out))


@secrets_app.command("list")
def list_secrets(data_dir: DataDir = None) -> None:
    """Key ids and expiries (never the secrets)."""
    from notify_core.security.vault import build_vault

    vault = build_vault(_settings(data_dir))
    now = utcnow(SYSTEM_CLOCK)
    out = {}
    for name in ("tracking", "webhook"):
        ring = vault.ring(name, clock=SYSTEM_CLOCK)
        out[name] = [{"kid": k.kid, "active": k.kid == ring.active_kid, "expires_at": k.expires_at,
                      "valid": k.valid_at(now)} for k in ring.keys]
    typer.echo(json.dumps(out))


@secrets_app.command("show-webhook")
def show_webhook(data_dir: DataDir = None) -> None:
    """Print the webhook keys a receiver verifies with (kid -> hex secret). Handle the output as a secret."""
    from notify_core.security.vault import build_vault

    settings = _settings(data_dir)
    ring = build_vault(settings).ring("webhook", clock=SYSTEM_CLOCK)
    keys = ring.signing_keys(now=utcnow(SYSTEM_CLOCK))
    store = _store(settings)
    try:  # a secret leaves the data dir: who took it is on record (the key ids, never the secrets)
        audit.record(store, clock=SYSTEM_CLOCK, action="secrets.show", actor=cli_actor(), source="cli",
                     target="webhook", detail={"kids": [k.kid for k in keys]})
    finally:
        store.close()
    typer.echo(json.dumps({k.kid: k.secret.hex() for k in keys}))


@users_app.command("delete")
def delete_user(
    user_id: Annotated[str, typer.Argument(help="The user to erase.")],
    data_dir: DataDir = None,
    compact: Annotated[bool, typer.Option(help="Rebuild the SQLite file afterwards (no deleted key left).")] = True,
) -> None:
    """Erase a user from every Store table, the lake, landing/quarantine files (and their S3 objects in aws, every
    version, and the replica bucket's copies), vectors, outbox, logs, stream log; record the erasure in the
    register, so the next pipeline run does not bring them back."""
    from notify_core.erasure import erase_user, erasure_objects, erasure_paths, erasure_replicas
    from notify_core.observability import configure_logging
    from notify_core.store.factory import build_store
    from notify_core.stream import open_stream

    try:
        settings = _settings(data_dir)
        configure_logging(level="WARNING")
        store = build_store(settings)
    except NotifyError as exc:  # a setting missing or wrong, no master key: said in a line, not a traceback
        raise fail(exc) from exc
    stream = open_stream(settings)
    try:
        roots = erasure_paths(settings)  # data dir, landing folder, outbox: wherever each is configured
        actor = cli_actor()
        report = erase_user(user_id, store=store, file_roots=roots, object_areas=erasure_objects(settings),
                            replica_areas=erasure_replicas(settings), stream_log=stream,
                            audit=_erasure_audit(store, actor), actor=actor, compact=compact, clock=SYSTEM_CLOCK)
    finally:
        stream.close()
        store.close()
    typer.echo(json.dumps(report.as_dict()))


def _erasure_audit(store: Store, actor: str) -> Callable[[str, Mapping[str, Any]], None]:
    """The erasure's audit hook for a CLI command: the entry names the pseudonym or a count, never an id."""

    def audited(action: str, detail: Mapping[str, Any]) -> None:
        audit.record(store, clock=SYSTEM_CLOCK, action=action, actor=actor, source="cli",
                     target=str(detail["target"]), detail={"rows_removed": detail.get("rows_removed")})

    return audited


@users_app.command("sweep-erasures")
def sweep_erasures_command(
    data_dir: DataDir = None,
    compact: Annotated[bool, typer.Option(help="Rebuild the SQLite file afterwards (no deleted key left).")] = True,
) -> None:
    """Finish every erasure still in the erasure queue (an HTTP erasure that ran out of its time budget, or
    one killed half-way): one pass over each table, file and object version for all of them. The
    erasure_sweep job (its sensor starts it) does the same on its own; prints counts only, never an id."""
    from notify_core.erasure import erasure_objects, erasure_paths, erasure_replicas, sweep_erasures
    from notify_core.observability import configure_logging
    from notify_core.store.factory import build_store
    from notify_core.stream import open_stream

    try:
        settings = _settings(data_dir)
        configure_logging(level="WARNING")
        store = build_store(settings)
    except NotifyError as exc:
        raise fail(exc) from exc
    stream = open_stream(settings)
    try:
        actor = cli_actor()
        report = sweep_erasures(store, file_roots=erasure_paths(settings), object_areas=erasure_objects(settings),
                                replica_areas=erasure_replicas(settings), stream_log=stream,
                                audit=_erasure_audit(store, actor), actor=actor, compact=compact)
    finally:
        stream.close()
        store.close()
    typer.echo(json.dumps(report.as_dict()))


@users_app.command("reapply-erasures")
def reapply_erasures(
    register_from_prefix: Annotated[str, typer.Option(
        help="Table prefix of the tables the Store was restored FROM (they still hold the register as it was "
             "up to now); the restored tables are the ones NOTIFY_TABLE_PREFIX names.")],
    data_dir: DataDir = None,
) -> None:
    """After a DynamoDB point-in-time restore into new tables: copy the newer erasure register entries into
    them and erase again every registered user the restored tables still hold, each at its own erasure time.
    A restore is to a moment before some erasures, so without this the users erased since come back (their
    rows restored, their register entries gone, so the next ingest takes them in again). Run it before the
    pipeline resumes on the restored tables. Locally, ``notify restore`` does this itself."""
    from notify_core.erasure import erasure_objects, erasure_paths, erasure_replicas, reapply_register
    from notify_core.erasure_register import erased_before
    from notify_core.store.dynamodb import DynamoStore

    try:
        settings = _settings(data_dir)
    except NotifyError as exc:
        raise fail(exc) from exc
    if settings.env != "aws":
        raise typer.BadParameter("for DynamoDB restores (NOTIFY_ENV=aws); locally `notify restore` re-applies "
                                 "the register itself", param_hint="--register-from-prefix")
    if register_from_prefix == settings.table_prefix:
        raise typer.BadParameter("names the restored tables themselves: give the prefix of the tables the "
                                 "restore was made from", param_hint="--register-from-prefix")
    source = DynamoStore(region=settings.aws_region, endpoint_url=settings.dynamodb_endpoint_url,
                         table_prefix=register_from_prefix, clock=settings.clock(), create_tables=False)
    try:
        register = erased_before(source)
    except NotifyError as exc:  # no such table: a mistyped prefix must not read as "nothing was erased"
        raise typer.BadParameter(str(exc), param_hint="--register-from-prefix") from exc
    finally:
        source.close()
    try:
        store = _store(settings)
    except NotifyError as exc:
        raise fail(exc) from exc
    try:
        erased = reapply_register(store, register, file_roots=erasure_paths(settings),
                                  object_areas=erasure_objects(settings), replica_areas=erasure_replicas(settings))
        audit.record(store, clock=SYSTEM_CLOCK, action="user.reapply_erasures", actor=cli_actor(), source="cli",
                     target=register_from_prefix, detail={"register_entries": len(register), "users": len(erased)})
    finally:
        store.close()
    # counts only: the ids erased again are the ones nobody may see again
    typer.echo(json.dumps({"register_entries": len(register), "users_erased_again": len(erased)}))
