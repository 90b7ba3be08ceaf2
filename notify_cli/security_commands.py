"""``notify secrets ...`` (key rotation) and ``notify users delete ID`` (right to erasure).

Thin glue over :mod:`notify_core.security` and :mod:`notify_core.erasure`: read settings, call the
domain, print a JSON summary. Secrets themselves are never printed, except by ``notify secrets show
webhook`` on purpose (a receiver needs the key it verifies with).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from notify_core.clock import SYSTEM_CLOCK, utcnow
from notify_core.settings import NotifySettings, load_settings

secrets_app = typer.Typer(no_args_is_help=True,
                          help="Rotate and inspect Notify's keys (0600 files under the data dir).")
users_app = typer.Typer(no_args_is_help=True, help="User data: right to erasure.")

DataDir = Annotated[Path | None,
                    typer.Option("--data-dir", help="Data directory (default NOTIFY_DATA_DIR or .notify).")]


def _settings(data_dir: Path | None) -> NotifySettings:
    from notify_core.security.files import use_private_umask

    use_private_umask()
    return load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))


@secrets_app.command("rotate")
def rotate(
    data_dir: DataDir = None,
    purpose: Annotated[str, typer.Option(help="all | master (re-wrap data keys) | tracking | webhook.")] = "all",
    overlap_days: Annotated[float, typer.Option(min=0, help="How long replaced HMAC keys still verify.")] = 30.0,
    new_data_keys: Annotated[bool, typer.Option(help="Also start new data keys for new writes.")] = False,
) -> None:
    """Rotate keys: a new master version re-wraps every data key; tracking/webhook get a new active key."""
    from notify_core.security.crypto import build_sealer
    from notify_core.security.keyring import rotate_keyring

    if purpose not in ("all", "master", "tracking", "webhook"):
        raise typer.BadParameter("purpose is all, master, tracking or webhook")
    settings = _settings(data_dir)
    out: dict[str, Any] = {}
    if purpose in ("all", "master"):
        report = build_sealer(settings.secrets_dir, kms_key_id=settings.kms_key_id,
                              region=settings.aws_region).rotate(new_data_keys=new_data_keys)
        out["master"] = {"version": report.master_version, "rewrapped_data_keys": report.rewrapped,
                         "new_data_keys": report.new_data_keys, "retired": report.retired_master_versions}
    for name in ("tracking", "webhook"):
        if purpose in ("all", name):
            ring = rotate_keyring(settings.secrets_dir, name, clock=SYSTEM_CLOCK,
                                  overlap=timedelta(days=overlap_days))
            out[name] = {"active": ring.active_kid, "verifying": [k.kid for k in ring.keys]}
    typer.echo(json.dumps(out))


@secrets_app.command("list")
def list_keys(data_dir: DataDir = None) -> None:
    """Key ids and expiries (never the secrets)."""
    from notify_core.security.keyring import load_keyring

    settings = _settings(data_dir)
    now = utcnow(SYSTEM_CLOCK)
    out = {}
    for name in ("tracking", "webhook"):
        ring = load_keyring(settings.secrets_dir, name, clock=SYSTEM_CLOCK)
        out[name] = [{"kid": k.kid, "active": k.kid == ring.active_kid, "expires_at": k.expires_at,
                      "valid": k.valid_at(now)} for k in ring.keys]
    typer.echo(json.dumps(out))


@secrets_app.command("show-webhook")
def show_webhook(data_dir: DataDir = None) -> None:
    """Print the webhook keys a receiver verifies with (kid -> hex secret). Handle the output as a secret."""
    from notify_core.security.keyring import load_keyring

    settings = _settings(data_dir)
    ring = load_keyring(settings.secrets_dir, "webhook", clock=SYSTEM_CLOCK)
    typer.echo(json.dumps({k.kid: k.secret.hex() for k in ring.signing_keys(now=utcnow(SYSTEM_CLOCK))}))


@users_app.command("delete")
def delete_user(
    user_id: Annotated[str, typer.Argument(help="The user to erase.")],
    data_dir: DataDir = None,
    compact: Annotated[bool, typer.Option(help="Rebuild the SQLite file afterwards (no deleted key left).")] = True,
) -> None:
    """Erase a user from every Store table, the lake, landing/quarantine files, vectors, outbox, logs, stream log."""
    from notify_core.erasure import erase_user
    from notify_core.observability import configure_logging
    from notify_core.store.factory import build_store
    from notify_core.stream import open_stream

    settings = _settings(data_dir)
    configure_logging(level="WARNING")
    store = build_store(settings)
    stream = open_stream(settings)
    try:
        roots = [settings.data_dir]
        if settings.landing_dir is not None:
            roots.append(settings.landing_dir)
        # AUDIT HOOK: pass the audit log's `record` here once it exists (issue 14, audit log).
        report = erase_user(user_id, store=store, file_roots=roots, stream_log=stream, audit=None, actor="cli",
                            compact=compact)
    finally:
        stream.close()
        store.close()
    typer.echo(json.dumps(report.as_dict()))
