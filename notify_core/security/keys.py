"""API keys with scopes: who may call which route, checked in one place.

A key is ``nk_<key_id>_<secret>``: ``key_id`` (12 hex digits) is public and names the Store row, the
secret (256 random bits) is shown once, at creation, and never stored. The row holds only
``HMAC-SHA256(pepper, secret)``: the keys are high-entropy, so a keyed fast hash is the right tool (a
password hash such as argon2id would cost milliseconds per request for no gain), and the server-side
pepper means a copy of the table alone cannot even test guesses. Hashes are compared in constant time.

Every key expires (90 days by default, the spec's rotation rule). :meth:`KeyRing.rotate` issues a
successor with the same scopes and leaves the old key working for an overlap (24 h by default) so
clients can switch without an outage; :meth:`KeyRing.revoke` ends a key at once. Per-key rate limits
are token buckets in the serving process (the edge answers 429 with ``Retry-After``); in AWS, API
Gateway's throttling bounds the total in front of them.

:meth:`KeyRing.authorize` is the one check: the handler edge (``lambdas/edge.py``) and the Lambda
authorizer (``lambdas/authorizer.py``) both call it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from notify_core.errors import ConfigurationError, NotFoundError, ValidationError
from notify_core.security import audit
from notify_core.security.files import private_dir
from notify_core.security.keycheck import (  # noqa: F401  (re-exported: the key API in one import)
    DEFAULT_OVERLAP_S,
    DEFAULT_RATE_PER_MINUTE,
    DEFAULT_TTL_DAYS,
    ApiKey,
    KeyCheck,
    RateLimiter,
    bearer_token,
    key_from_item,
    load_or_create_pepper,
)
from notify_core.security.scopes import (  # noqa: F401  (re-exported: callers name scopes from here too)
    ADMIN,
    CAMPAIGNS_READ,
    CAMPAIGNS_WRITE,
    EVENTS_WRITE,
    RECOMMENDATIONS_READ,
    SCHEDULES_WRITE,
    SCOPES,
    USERS_READ,
    USERS_WRITE,
)
from notify_core.store import tables
from notify_core.store.port import Condition


def open_secret_file(path: Path) -> IO[str]:
    """A new 0600 file for a secret (a key), opened for writing; an existing file is never overwritten
    (``FileExistsError``). Missing folders are made 0700; an existing folder keeps its mode: ``--out`` may
    name the operator's own folder (``/tmp``, a home), which is theirs to set, and the file is 0600 in it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "w", encoding="ascii")


def write_secret_file(path: Path, text: str) -> None:
    """Write a secret (a key) to a new 0600 file (see :func:`open_secret_file`)."""
    with open_secret_file(path) as out:
        out.write(text + "\n")


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if not chosen or unknown:
        raise ValidationError(f"scopes must be a non-empty subset of {list(SCOPES)}; unknown: {unknown}")
    return chosen


class KeyRing(KeyCheck):
    """Create, list, rotate and revoke API keys (each change audited); checks them like :class:`KeyCheck`."""

    def _issue(self, *, name: str, scopes: tuple[str, ...], ttl_days: float, rate_per_minute: int,
               rotated_from: str | None = None) -> tuple[ApiKey, str]:
        now = self.clock.now()
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = ApiKey(key_id=key_id, name=name, scopes=scopes, created_at=now, expires_at=now + ttl_days * 86400,
                     rotated_from=rotated_from, rate_per_minute=rate_per_minute)
        item = {"pk": key_id, "sk": tables.API_KEY_SK, "hash": self._digest(secret), **key.as_dict()}
        del item["key_id"]
        self._table.put(item, condition=Condition.absent())
        return key, f"nk_{key_id}_{secret}"

    def _audit(self, action: str, key: ApiKey, *, actor: str, source: str, request_id: str | None,
               before: ApiKey | None = None) -> None:
        audit.record(self.store, clock=self.clock, action=action, actor=actor, source=source, request_id=request_id,
                     target=key.key_id, before=before.as_dict() if before else None, after=key.as_dict())

    def create(self, *, name: str, scopes: Iterable[str], actor: str, source: str, request_id: str | None = None,
               ttl_days: float = DEFAULT_TTL_DAYS, rate_per_minute: int = DEFAULT_RATE_PER_MINUTE,
               ) -> tuple[ApiKey, str]:
        """A new key: its record and the token (shown to the caller once, stored nowhere). Audited."""
        if not 0 < ttl_days <= 3650:
            raise ValidationError("ttl_days must be in (0, 3650]")
        if not 1 <= rate_per_minute <= 10_000_000:
            raise ValidationError("rate_per_minute must be in 1..10000000")
        key, token = self._issue(name=name, scopes=check_scopes(scopes), ttl_days=ttl_days,
                                 rate_per_minute=rate_per_minute)
        self._audit("key.create", key, actor=actor, source=source, request_id=request_id)
        return key, token

    def get(self, key_id: str) -> ApiKey:
        item = self._table.get(key_id, tables.API_KEY_SK, consistent=True)
        if item is None:
            raise NotFoundError(f"no API key {key_id!r}")
        return key_from_item(item)

    def list(self) -> list[ApiKey]:
        return sorted((key_from_item(i) for i in self._table.scan()), key=lambda k: (k.created_at, k.key_id))

    def rotate(self, key_id: str, *, actor: str, source: str, request_id: str | None = None,
               overlap_s: float = DEFAULT_OVERLAP_S, ttl_days: float = DEFAULT_TTL_DAYS) -> tuple[ApiKey, str]:
        """A successor with the same scopes; the old key keeps working for ``overlap_s`` more at most."""
        old = self.get(key_id)
        now = self.clock.now()
        if old.state(now) != "active":
            raise ValidationError(f"key {key_id} is {old.state(now)}: only an active key can be rotated")
        new, token = self._issue(name=old.name, scopes=old.scopes, ttl_days=ttl_days,
                                 rate_per_minute=old.rate_per_minute, rotated_from=key_id)
        self._table.update(key_id, tables.API_KEY_SK, set={"expires_at": min(old.expires_at, now + overlap_s),
                                                           "rotated_to": new.key_id})
        self._cache.pop(key_id, None)
        self._audit("key.rotate", new, actor=actor, source=source, request_id=request_id, before=old)
        return new, token

    def revoke(self, key_id: str, *, actor: str, source: str, request_id: str | None = None) -> ApiKey:
        before = self.get(key_id)
        self._table.update(key_id, tables.API_KEY_SK, set={"revoked_at": self.clock.now()})
        self._cache.pop(key_id, None)
        after = self.get(key_id)
        self._audit("key.revoke", after, actor=actor, source=source, request_id=request_id, before=before)
        return after

def bootstrap_admin_key(keyring: KeyRing, path: Path) -> Path | None:
    """First local run: when the Store holds no key at all, create an admin key into ``path`` (0600).

    Returns the path written, or None when keys already exist (the file is never rewritten). The key
    itself is never logged: only where it is.
    """
    if any(True for _ in keyring._table.scan(segment_size=1)):
        return None
    if path.exists():
        raise ConfigurationError(f"{path} exists but the Store holds no API key: move it away to make a new one")
    _key, token = keyring.create(name="local-admin", scopes=[ADMIN], actor="bootstrap", source="notify serve")
    private_dir(path.parent)  # the data directory's secrets/ folder: 0700 whatever made it
    write_secret_file(path, token)
    return path
