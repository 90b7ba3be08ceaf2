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

import hashlib
import hmac
import math
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notify_core.clock import Clock
from notify_core.errors import (
    ConfigurationError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
)
from notify_core.security import audit
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
from notify_core.store.port import Condition, Store

DEFAULT_TTL_DAYS = 90
DEFAULT_OVERLAP_S = 24 * 3600.0
DEFAULT_RATE_PER_MINUTE = 60_000  # 1,000/s sustained per key (per serving process), bursts up to a minute
PEPPER_BYTES = 32
_TOKEN = re.compile(r"^nk_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
_CACHE_S = 1.0  # a key row read from the Store is reused this long (revocation elsewhere: live within 1 s)


def load_or_create_pepper(path: Path) -> bytes:
    """The server-side pepper: 32 random bytes in a 0600 file (its folder 0700), created on first use."""
    if path.exists():
        raw = path.read_text(encoding="ascii").strip()
        try:
            pepper = bytes.fromhex(raw)
        except ValueError:
            raise ConfigurationError(f"{path} does not hold a hex pepper") from None
        if len(pepper) < 16:
            raise ConfigurationError(f"{path}: the pepper must be at least 16 bytes")
        return pepper
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    pepper = secrets.token_bytes(PEPPER_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(pepper.hex())
    return pepper


def write_secret_file(path: Path, text: str) -> None:
    """Write a secret (a key) to a new 0600 file in a 0700 folder; an existing file is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text + "\n")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public record (never the secret)."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    rotated_to: str | None = None
    rotated_from: str | None = None
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "rotated_to": self.rotated_to, "rotated_from": self.rotated_from,
                "rate_per_minute": self.rate_per_minute}


def _key_from_item(item: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id=str(item["pk"]), name=str(item.get("name", "")), scopes=tuple(item.get("scopes") or ()),
                  created_at=float(item["created_at"]), expires_at=float(item["expires_at"]),
                  revoked_at=None if item.get("revoked_at") is None else float(item["revoked_at"]),
                  rotated_to=item.get("rotated_to"), rotated_from=item.get("rotated_from"),
                  rate_per_minute=int(item.get("rate_per_minute", DEFAULT_RATE_PER_MINUTE)))


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if not chosen or unknown:
        raise ValidationError(f"scopes must be a non-empty subset of {list(SCOPES)}; unknown: {unknown}")
    return chosen


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Per-key token buckets: ``rate_per_minute`` tokens, refilled continuously; thread-safe."""

    clock: Clock
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: ApiKey) -> None:
        rate = max(1, key.rate_per_minute)
        per_s = rate / 60.0
        now = self.clock.now()
        with self._lock:
            bucket = self._buckets.get(key.key_id)
            if bucket is None:
                bucket = self._buckets[key.key_id] = _Bucket(tokens=float(rate), at=now)
            bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * per_s)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / per_s
        raise RateLimitedError(f"key {key.key_id} is over {rate} requests per minute",
                               retry_after_s=max(1, math.ceil(wait)))


class KeyRing:
    """Create, list, rotate, revoke and check API keys kept in the Store's ``api_keys`` table."""

    def __init__(self, store: Store, *, pepper: bytes, clock: Clock) -> None:
        self.store = store
        self._table = store.table(tables.API_KEYS)
        self._pepper = pepper
        self.clock = clock
        self.limiter = RateLimiter(clock)
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def _digest(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()

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
        return _key_from_item(item)

    def list(self) -> list[ApiKey]:
        return sorted((_key_from_item(i) for i in self._table.scan()), key=lambda k: (k.created_at, k.key_id))

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

    def _row(self, key_id: str) -> dict[str, Any] | None:
        now = self.clock.now()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < _CACHE_S:
            return hit[1]
        item = self._table.get(key_id, tables.API_KEY_SK, consistent=True)
        if item is not None:
            self._cache[key_id] = (now, item)
        return item

    def authenticate(self, token: str | None) -> ApiKey:
        """The key behind ``token``; UnauthorizedError (one message for every failure) if none is valid."""
        match = _TOKEN.match(token or "")
        item = self._row(match.group(1)) if match else None
        if match is None or item is None:
            raise UnauthorizedError("a valid API key is required")
        if not hmac.compare_digest(str(item.get("hash", "")), self._digest(match.group(2))):
            raise UnauthorizedError("a valid API key is required")
        key = _key_from_item(item)
        state = key.state(self.clock.now())
        if state != "active":
            raise UnauthorizedError(f"the API key is {state}")
        return key

    def authorize(self, token: str | None, scope: str, *, rate_limit: bool = True) -> ApiKey:
        """The one check: a valid key (401), holding ``scope`` (403), within its rate (429)."""
        key = self.authenticate(token)
        if not key.allows(scope):
            raise ForbiddenError(f"the API key lacks the {scope!r} scope")
        if rate_limit:
            self.limiter.take(key)
        return key


def bearer_token(headers: Any) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (header names lower-cased)."""
    if not headers:
        return None
    auth = headers.get("authorization") or headers.get("Authorization")
    if isinstance(auth, str) and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    api_key = headers.get("x-api-key") or headers.get("X-API-Key")
    return api_key.strip() if isinstance(api_key, str) else None


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
    write_secret_file(path, token)
    return path
