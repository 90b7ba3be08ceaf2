"""The API key check: what every handler and the Lambda authorizer run, and nothing else.

Read-only on purpose: this module reads the Store's ``api_keys`` table and never writes it or the audit
trail, so the IAM role derived from a handler's imports (``notify_cli.deploy_access``) grants the key table
read access only. Creating, rotating and revoking keys (audited) is :mod:`notify_core.security.keys`.
See that module for the key format, hashing and expiry rules.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notify_core.clock import Clock, since
from notify_core.errors import ConfigurationError, ForbiddenError, RateLimitedError, UnauthorizedError
from notify_core.security.files import private_dir, require_private, write_private
from notify_core.security.scopes import ADMIN
from notify_core.store import tables
from notify_core.store.port import Store

DEFAULT_TTL_DAYS = 90
DEFAULT_OVERLAP_S = 24 * 3600.0
DEFAULT_RATE_PER_MINUTE = 60_000  # 1,000/s sustained per key (per serving process), bursts up to a minute
PEPPER_BYTES = 32
_TOKEN = re.compile(r"^nk_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
_CACHE_S = 1.0  # a key row read from the Store is reused this long (revocation elsewhere: live within 1 s)


def load_or_create_pepper(path: Path) -> bytes:
    """The server-side pepper: 32 random bytes in a 0600 file (its folder 0700), created on first use.

    A pepper file readable by others is refused, as the master key and the key rings beside it are."""
    if not path.exists():
        _create_pepper(path)
    require_private(path, what="pepper file")
    raw = path.read_text(encoding="ascii").strip()
    try:
        pepper = bytes.fromhex(raw)
    except ValueError:
        raise ConfigurationError(f"{path} does not hold a hex pepper") from None
    if len(pepper) < 16:
        raise ConfigurationError(f"{path}: the pepper must be at least 16 bytes")
    return pepper


def _create_pepper(path: Path) -> None:
    """A new pepper, written whole beside ``path`` and linked into place only if no other process made one
    first: two processes starting at once on a fresh data directory must agree on one, and neither may read
    a file the other has created but not yet written."""
    private_dir(path.parent)
    tmp = write_private(path.with_name(f".{path.name}.{secrets.token_hex(6)}.new"),
                        secrets.token_bytes(PEPPER_BYTES).hex().encode("ascii"))
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process's came first: use it
        pass
    finally:
        tmp.unlink(missing_ok=True)


def resolve_pepper(*, configured: str | None, env: str, secrets_dir: Path, secret: str | None = None,
                   region: str = "eu-west-1") -> bytes:
    """The pepper of this deployment: the configured one (``NOTIFY_API_KEY_PEPPER``), else the Secrets Manager
    secret ``secret`` (``NOTIFY_API_KEY_PEPPER_SECRET``: the template's way, read here, not through the
    function's environment), else locally the 0600 file ``<secrets_dir>/api_key_pepper``; in aws a missing
    pepper is an error (a per-instance file would make every key fail on the next cold start)."""
    if configured:
        return configured.encode()
    if secret:
        from notify_core.security.crypto import secret_string

        return secret_string(secret, region=region).encode()
    if env == "aws":
        raise ConfigurationError("NOTIFY_ENV=aws needs NOTIFY_API_KEY_PEPPER_SECRET (a Secrets Manager secret) "
                                 "or NOTIFY_API_KEY_PEPPER for API keys")
    return load_or_create_pepper(secrets_dir / "api_key_pepper")


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


def key_from_item(item: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id=str(item["pk"]), name=str(item.get("name", "")), scopes=tuple(item.get("scopes") or ()),
                  created_at=float(item["created_at"]), expires_at=float(item["expires_at"]),
                  revoked_at=None if item.get("revoked_at") is None else float(item["revoked_at"]),
                  rotated_to=item.get("rotated_to"), rotated_from=item.get("rotated_from"),
                  rate_per_minute=int(item.get("rate_per_minute", DEFAULT_RATE_PER_MINUTE)))


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
            bucket.tokens = min(float(rate), bucket.tokens + since(now, bucket.at) * per_s)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / per_s
        raise RateLimitedError(f"key {key.key_id} is over {rate} requests per minute",
                               retry_after_s=max(1, math.ceil(wait)))


class KeyCheck:
    """Check API keys kept in the Store's ``api_keys`` table: read-only (what a handler and the Lambda
    authorizer need; :class:`notify_core.security.keys.KeyRing` adds create / rotate / revoke)."""

    def __init__(self, store: Store, *, pepper: bytes, clock: Clock) -> None:
        self.store = store
        self._table = store.table(tables.API_KEYS)
        # The pepper's keyed state, copied for each digest: a new HMAC hashes the key's two pads every time.
        self._peppered = hmac.new(pepper, digestmod=hashlib.sha256)
        self.clock = clock
        self.limiter = RateLimiter(clock)
        self._cache: dict[str, tuple[float, str, ApiKey]] = {}  # key id -> (read at, stored hash, record)

    def _digest(self, secret: str) -> str:
        mac = self._peppered.copy()
        mac.update(secret.encode())
        return mac.hexdigest()

    def _row(self, key_id: str, now: float) -> tuple[str, ApiKey] | None:
        """The key's stored hash and its record, read from the Store at most once a :data:`_CACHE_S` per key."""
        hit = self._cache.get(key_id)
        if hit is not None and since(now, hit[0]) < _CACHE_S:
            return hit[1], hit[2]
        item = self._table.get(key_id, tables.API_KEY_SK, consistent=True)
        if item is None:
            return None
        stored, key = str(item.get("hash", "")), key_from_item(item)
        self._cache[key_id] = (now, stored, key)
        return stored, key

    def authenticate(self, token: str | None) -> ApiKey:
        """The key behind ``token``; UnauthorizedError (one message for every failure) if none is valid."""
        now = self.clock.now()
        match = _TOKEN.match(token or "")
        found = self._row(match.group(1), now) if match else None
        if match is None or found is None:
            raise UnauthorizedError("a valid API key is required")
        stored, key = found
        if not hmac.compare_digest(stored, self._digest(match.group(2))):
            raise UnauthorizedError("a valid API key is required")
        state = key.state(now)
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
