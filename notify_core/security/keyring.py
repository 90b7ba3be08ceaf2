"""Rotating HMAC keys with key ids, kept in a 0600 secret file under the data directory.

One file per purpose (``<data_dir>/secrets/<purpose>.keys.json``): tracking-link tokens and webhook
signatures each have their own, so leaking one never forges the other. A file holds one *active* key
(new tokens and signatures use it) and the keys it replaced, each with ``expires_at``: during that
overlap they still verify, so links already in inboxes and receivers not yet updated keep working.
Rotation adds a fresh 256-bit key, makes it active, stamps the old active key's expiry (``now +
overlap``) and drops keys whose expiry has passed. A key id is a short random label, never derived
from the secret.

The file is created on first use (so the local default is secure with zero set-up) and rewritten
atomically (temp file + rename), so a crash mid-rotation leaves either the old or the new ring.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from notify_core.clock import Clock, utcnow
from notify_core.errors import ConfigurationError
from notify_core.security.files import write_private

KEY_BYTES = 32
DEFAULT_OVERLAP = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes = b""
    created_at: str = ""
    expires_at: str | None = None  # None: never (the active key)

    def __repr__(self) -> str:  # secrets never reach a log line through repr
        return f"SigningKey(kid={self.kid!r}, expires_at={self.expires_at!r})"

    def valid_at(self, now: datetime) -> bool:
        return self.expires_at is None or datetime.fromisoformat(self.expires_at) > now


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys of one purpose: ``active`` signs; every key still in its overlap verifies."""

    purpose: str
    active_kid: str
    keys: tuple[SigningKey, ...]

    @property
    def active(self) -> SigningKey:
        return next(k for k in self.keys if k.kid == self.active_kid)

    def verifying(self, kid: str, *, now: datetime) -> SigningKey | None:
        """The key ``kid`` if it may still verify at ``now`` (unknown or expired: None)."""
        for key in self.keys:
            if key.kid == kid and key.valid_at(now):
                return key
        return None

    def signing_keys(self, *, now: datetime) -> list[SigningKey]:
        """The active key first, then every key still in its overlap (webhooks sign with all of them)."""
        rest = [k for k in self.keys if k.kid != self.active_kid and k.valid_at(now)]
        return [self.active, *rest]


def _new_key(now: datetime) -> SigningKey:
    return SigningKey(kid=secrets.token_hex(4), secret=secrets.token_bytes(KEY_BYTES),
                      created_at=now.isoformat(timespec="seconds"))


def _encode(ring: KeyRing) -> bytes:
    return json.dumps({"purpose": ring.purpose, "active": ring.active_kid, "keys": [
        {"kid": k.kid, "secret": base64.b64encode(k.secret).decode(), "created_at": k.created_at,
         "expires_at": k.expires_at} for k in ring.keys]}, indent=1).encode()


def _decode(raw: bytes, path: Path) -> KeyRing:
    try:
        doc = json.loads(raw)
        keys = tuple(SigningKey(kid=str(k["kid"]), secret=base64.b64decode(k["secret"]),
                                created_at=str(k.get("created_at") or ""), expires_at=k.get("expires_at"))
                     for k in doc["keys"])
        ring = KeyRing(purpose=str(doc["purpose"]), active_kid=str(doc["active"]), keys=keys)
        _ = ring.active
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise ConfigurationError(f"unreadable key file {path}: {type(exc).__name__}") from None
    return ring


def keyring_path(secrets_dir: Path, purpose: str) -> Path:
    return Path(secrets_dir) / f"{purpose}.keys.json"


def load_keyring(secrets_dir: Path, purpose: str, *, clock: Clock) -> KeyRing:
    """The ring of ``purpose``, created (one fresh active key, file 0600) when it does not exist yet."""
    path = keyring_path(secrets_dir, purpose)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        key = _new_key(utcnow(clock))
        ring = KeyRing(purpose=purpose, active_kid=key.kid, keys=(key,))
        # O_EXCL-like: if another process created it first, use theirs.
        tmp = write_private(path.with_name(path.name + f".new{os.getpid()}"), _encode(ring))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        raw = path.read_bytes()
    if os.stat(path).st_mode & 0o077:
        raise ConfigurationError(f"key file {path} is readable by others: chmod 600 it")
    return _decode(raw, path)


def rotate_keyring(secrets_dir: Path, purpose: str, *, clock: Clock, overlap: timedelta = DEFAULT_OVERLAP) -> KeyRing:
    """Add a new active key; the old active one verifies until ``now + overlap``; expired keys go."""
    now = utcnow(clock)
    ring = load_keyring(secrets_dir, purpose, clock=clock)
    new = _new_key(now)
    until = (now + overlap).isoformat(timespec="seconds")
    kept = tuple(
        SigningKey(k.kid, k.secret, k.created_at, until if k.kid == ring.active_kid else k.expires_at)
        for k in ring.keys if k.valid_at(now))
    rotated = KeyRing(purpose=purpose, active_kid=new.kid, keys=(new, *kept))
    write_private(keyring_path(secrets_dir, purpose), _encode(rotated))
    return rotated


def ephemeral_keyring(purpose: str, *, now: datetime) -> KeyRing:
    """A ring held only in memory: for tests and tools whose tokens nobody has to verify later."""
    key = _new_key(now)
    return KeyRing(purpose=purpose, active_kid=key.kid, keys=(key,))


class KeyRingFile:
    """A ring re-read when its file changes (checked at most every ``check_s``), so a long-running
    worker or gateway picks up ``notify secrets rotate`` without a restart."""

    def __init__(self, secrets_dir: Path, purpose: str, *, clock: Clock, check_s: float = 5.0) -> None:
        self._dir = Path(secrets_dir)
        self._purpose = purpose
        self._clock = clock
        self._check_s = check_s
        self._ring = load_keyring(self._dir, purpose, clock=clock)
        self._stamp = self._mtime()
        self._checked = clock.now()

    def _mtime(self) -> int:
        try:
            return os.stat(keyring_path(self._dir, self._purpose)).st_mtime_ns
        except FileNotFoundError:
            return 0

    def current(self) -> KeyRing:
        now = self._clock.now()
        if now - self._checked >= self._check_s:
            self._checked = now
            stamp = self._mtime()
            if stamp != self._stamp:
                self._ring = load_keyring(self._dir, self._purpose, clock=self._clock)
                self._stamp = stamp
        return self._ring
