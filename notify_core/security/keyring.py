"""Rotating HMAC keys with key ids, one key document per purpose.

One document per purpose (``<purpose>.keys``: a 0600 file ``<data_dir>/secrets/<purpose>.keys.json`` on one
box; in aws an item of the Store, every secret wrapped by the master key, so the delivery worker and the
tracking function hold the same keys: :mod:`.key_documents`): tracking-link tokens and webhook
signatures each have their own, so leaking one never forges the other. A document holds one *active* key
(new tokens and signatures use it) and the keys it replaced, each with ``expires_at``: during that
overlap they still verify, so links already in inboxes and receivers not yet updated keep working.
Rotation adds a fresh 256-bit key, makes it active, stamps the old active key's expiry (``now +
overlap``) and drops keys whose expiry has passed. A key id is a short random label, never derived
from the secret.

The document is created on first use (so the local default is secure with zero set-up) and replaced
whole by a compare-and-set, so a crash mid-rotation leaves either the old or the new ring, and two
instances minting or rotating at once agree on one.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from notify_core.clock import Clock, since, utcnow
from notify_core.errors import ConfigurationError
from notify_core.security.key_documents import KeyDocuments, ring_document

if TYPE_CHECKING:
    from notify_core.security.crypto import MasterKey

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


def _ring_context(purpose: str) -> str:
    """The master key's context for a ring's secrets: they open for no other use."""
    return f"ring.{purpose}"


class Ring(Protocol):
    """What signs and verifies: a :class:`KeyRing` held still, or a :class:`LiveRing` that follows rotations."""

    @property
    def active(self) -> SigningKey: ...

    def verifying(self, kid: str, *, now: datetime) -> SigningKey | None: ...

    def signing_keys(self, *, now: datetime) -> list[SigningKey]: ...


def _encode(ring: KeyRing, master: MasterKey | None) -> dict[str, Any]:
    """The ring as a key document; with ``master``, each secret is stored wrapped by it (a shared Store)."""
    context = _ring_context(ring.purpose)

    def secret(key: SigningKey) -> dict[str, Any]:
        if master is None:
            return {"secret": base64.b64encode(key.secret).decode()}
        return {"wrapped": master.wrap(key.secret, context=context)}

    return {"purpose": ring.purpose, "active": ring.active_kid, "keys": [
        {"kid": k.kid, **secret(k), "created_at": k.created_at, "expires_at": k.expires_at} for k in ring.keys]}


def _decode(doc: Mapping[str, Any], name: str, master: MasterKey | None) -> KeyRing:
    def secret(entry: Mapping[str, Any]) -> bytes:
        if "wrapped" in entry:
            if master is None:
                raise ConfigurationError(f"key document {name} holds wrapped keys: it needs the master key")
            return master.unwrap(entry["wrapped"], context=_ring_context(str(doc["purpose"])))
        return base64.b64decode(entry["secret"])

    try:
        keys = tuple(SigningKey(kid=str(k["kid"]), secret=secret(k), created_at=str(k.get("created_at") or ""),
                                expires_at=k.get("expires_at"))
                     for k in doc["keys"])
        ring = KeyRing(purpose=str(doc["purpose"]), active_kid=str(doc["active"]), keys=keys)
        _ = ring.active
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise ConfigurationError(f"unreadable key document {name}: {type(exc).__name__}") from None
    return ring


def _read(documents: KeyDocuments, purpose: str, *, clock: Clock,
          master: MasterKey | None) -> tuple[KeyRing, str]:
    """The ring of ``purpose`` and its tag, minted (one fresh active key) when it does not exist yet. Two
    instances minting at once: one document wins and both return it."""
    name = ring_document(purpose)
    while True:
        found = documents.read(name)
        if found is not None:
            return _decode(found.body, name, master), found.tag
        key = _new_key(utcnow(clock))
        documents.save(name, _encode(KeyRing(purpose=purpose, active_kid=key.kid, keys=(key,)), master),
                       replaces=None)


def load_ring(documents: KeyDocuments, purpose: str, *, clock: Clock, master: MasterKey | None = None) -> KeyRing:
    """The ring of ``purpose`` (created when it does not exist yet); ``master`` unwraps a shared ring."""
    return _read(documents, purpose, clock=clock, master=master)[0]


def rotate_ring(documents: KeyDocuments, purpose: str, *, clock: Clock, overlap: timedelta = DEFAULT_OVERLAP,
                master: MasterKey | None = None) -> KeyRing:
    """Add a new active key; the old active one verifies until ``now + overlap``; expired keys go."""
    now = utcnow(clock)
    until = (now + overlap).isoformat(timespec="seconds")
    while True:  # a rotation elsewhere at the same moment: rotate what it wrote
        ring, tag = _read(documents, purpose, clock=clock, master=master)
        new = _new_key(now)
        kept = tuple(
            SigningKey(k.kid, k.secret, k.created_at, until if k.kid == ring.active_kid else k.expires_at)
            for k in ring.keys if k.valid_at(now))
        rotated = KeyRing(purpose=purpose, active_kid=new.kid, keys=(new, *kept))
        if documents.save(ring_document(purpose), _encode(rotated, master), replaces=tag):
            return rotated


def ephemeral_keyring(purpose: str, *, now: datetime) -> KeyRing:
    """A ring held only in memory: for tests and tools whose tokens nobody has to verify later."""
    key = _new_key(now)
    return KeyRing(purpose=purpose, active_kid=key.kid, keys=(key,))


class LiveRing:
    """A ring re-read when its document changes (looked at most every ``check_s``), so a long-running
    worker, gateway or warm Lambda follows ``notify secrets rotate`` run anywhere, without a restart.
    A :class:`Ring` itself: each use asks :meth:`current`."""

    def __init__(self, documents: KeyDocuments, purpose: str, *, clock: Clock, master: MasterKey | None = None,
                 check_s: float = 5.0) -> None:
        self._documents = documents
        self._purpose = purpose
        self._clock = clock
        self._master = master
        self._check_s = check_s
        self._ring, self._tag = _read(documents, purpose, clock=clock, master=master)
        self._checked = clock.now()

    def current(self) -> KeyRing:
        now = self._clock.now()
        if since(now, self._checked) >= self._check_s:
            self._checked = now
            found = self._documents.read(ring_document(self._purpose))
            if found is not None and found.tag != self._tag:
                self._ring = _decode(found.body, ring_document(self._purpose), self._master)
                self._tag = found.tag
        return self._ring

    @property
    def active(self) -> SigningKey:
        return self.current().active

    def verifying(self, kid: str, *, now: datetime) -> SigningKey | None:
        return self.current().verifying(kid, now=now)

    def signing_keys(self, *, now: datetime) -> list[SigningKey]:
        return self.current().signing_keys(now=now)
