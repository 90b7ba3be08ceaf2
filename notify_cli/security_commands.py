"""``notify keys create|list|rotate|revoke`` and ``notify audit verify|show``.

Thin glue over :mod:`notify_core.security`: every key change is audited by the KeyRing itself, with the
actor ``cli:<user>`` and source ``cli``. A new key's token is printed once (or written to a new 0600
file with ``--out``) and stored nowhere.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from notify_core.clock import SYSTEM_CLOCK
from notify_core.errors import NotifyError
from notify_core.security import audit
from notify_core.security.keys import DEFAULT_OVERLAP_S, DEFAULT_TTL_DAYS, SCOPES, KeyRing, write_secret_file
from notify_core.settings import NotifySettings, load_settings
from notify_core.store.port import Store

DataDir = Annotated[Path | None, typer.Option(help="Data directory (default: NOTIFY_DATA_DIR or .notify).")]

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys: create, list, rotate, revoke.")
audit_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The audit trail: verify, show.")


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


def _keyring(data_dir: Path | None) -> KeyRing:
    from lambdas.runtime import build_keyring

    settings = _settings(data_dir)
    return build_keyring(settings, _store(settings), clock=SYSTEM_CLOCK)


def _fail(exc: NotifyError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def _emit_token(token: str, out: Path | None) -> None:
    if out is None:
        typer.echo(token)
    else:
        write_secret_file(out, token)
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
    try:
        extra = {"rate_per_minute": rate_per_minute} if rate_per_minute is not None else {}
        key, token = _keyring(data_dir).create(name=name, scopes=scope, ttl_days=ttl_days, actor=cli_actor(),
                                               source="cli", **extra)
    except NotifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"created {key.key_id} scopes={','.join(key.scopes)} expires_at={key.expires_at:.0f}", err=True)
    _emit_token(token, out)


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
    try:
        key, token = _keyring(data_dir).rotate(key_id, overlap_s=overlap_hours * 3600, actor=cli_actor(),
                                               source="cli")
    except NotifyError as exc:
        raise _fail(exc) from exc
    typer.echo(f"rotated {key_id} -> {key.key_id}", err=True)
    _emit_token(token, out)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key to end now.")], data_dir: DataDir = None) -> None:
    """End a key at once."""
    try:
        key = _keyring(data_dir).revoke(key_id, actor=cli_actor(), source="cli")
    except NotifyError as exc:
        raise _fail(exc) from exc
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
