"""API keys for tests: one session-wide KeyRing (its own SQLite file) with an admin key, installed as the
handlers' key check by the autouse fixture in conftest.py. Tests send :func:`headers` (or :func:`token`)
like any client; tests about authentication build their own KeyRing."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from lambdas import runtime
from notify_core.clock import SYSTEM_CLOCK
from notify_core.security.keys import ADMIN, KeyRing, load_or_create_pepper
from notify_core.store.sqlite import SqliteStore

_token: list[str] = []
_keyring: list[KeyRing] = []


def install(folder: Path) -> str:
    """A KeyRing under ``folder`` with one admin key, installed for every handler; returns the token."""
    store = SqliteStore(folder / "keys.sqlite")
    keyring = KeyRing(store, pepper=load_or_create_pepper(folder / "secrets" / "pepper"), clock=SYSTEM_CLOCK)
    _key, token = keyring.create(name="tests", scopes=[ADMIN], rate_per_minute=10_000_000, actor="tests",
                                 source="pytest")
    runtime.use_auth(keyring)
    _token[:] = [token]
    _keyring[:] = [keyring]
    return token


def token() -> str:
    """The session's admin key (made on first use, so parametrised events can carry it at collection)."""
    if not _token:
        folder = Path(tempfile.mkdtemp(prefix="notify-test-keys-"))
        atexit.register(shutil.rmtree, folder, True)
        install(folder)
    return _token[0]


def reinstall() -> None:
    """Put the session's KeyRing back as the handlers' key check (after a test installed its own)."""
    token()
    runtime.use_auth(_keyring[0])


def headers() -> dict[str, str]:
    return {"x-api-key": token()}
