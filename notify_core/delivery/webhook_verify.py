"""Verify a Notify webhook: the function a receiver runs (standard library only: copy this file as is).

Every POST from Notify's webhook channel carries

* ``X-Notify-Timestamp``: seconds since the epoch when it was signed (``"1764478800.123"``);
* ``X-Notify-Signature``: one or more ``sha256=<hex>;kid=<key id>`` entries separated by ``", "``, each an
  HMAC-SHA256 under one signing key over ``"<timestamp>.<body>"``. During a key rotation's overlap Notify
  signs with the new key *and* the old ones, so a receiver holding either verifies;
* ``Idempotency-Key``: the notification id (drop a second delivery of the same key: at-least-once).

A receiver keeps the secrets it was given by key id and calls :func:`verify`::

    from webhook_verify import ReplayGuard, WebhookVerificationError, verify

    SECRETS = {"3f9a1c2e": bytes.fromhex("...")}          # kid -> secret, from `notify secrets show webhook`
    guard = ReplayGuard()                                  # one per process

    def handle(headers, body):
        try:
            verify(body, timestamp=headers["X-Notify-Timestamp"], signature=headers["X-Notify-Signature"],
                   secrets=SECRETS, guard=guard)
        except WebhookVerificationError as exc:
            return 401, str(exc)
        ...

What it checks: the timestamp is inside the replay window (``tolerance_s``, 5 minutes by default, both
directions for clock skew), at least one entry for a key id the receiver knows matches (compared in
constant time), and, with a :class:`ReplayGuard`, that the same signed request was not already accepted
inside the window (a captured request replayed within 5 minutes is refused too).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import threading
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Notify-Signature"
TIMESTAMP_HEADER = "X-Notify-Timestamp"
DEFAULT_TOLERANCE_S = 300.0


class WebhookVerificationError(Exception):
    """The request is not a fresh, authentic Notify webhook (the message says why)."""


def _secret_bytes(secret: bytes | str) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode()


def compute_signature(secret: bytes | str, body: bytes, timestamp: str) -> str:
    """The hex HMAC-SHA256 under ``secret`` over ``"<timestamp>.<body>"``."""
    mac = _keyed(_secret_bytes(secret)).copy()
    mac.update(timestamp.encode() + b"." + body)
    return mac.hexdigest()


@functools.lru_cache(maxsize=64)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with ``secret``, copied for each signature: the key's set-up was ~45 % of signing
    a webhook's ~1 KB body (4.4 against 2.4 us), and a sender or receiver holds a few keys at a time."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def signature_header(keys: list[tuple[str, bytes | str]], body: bytes, timestamp: str) -> str:
    """The header value for signing ``body`` with every ``(kid, secret)`` (what Notify sends)."""
    return ", ".join(f"sha256={compute_signature(secret, body, timestamp)};kid={kid}" for kid, secret in keys)


def parse_signature_header(value: str) -> list[tuple[str | None, str]]:
    """``[(kid or None, hex)]`` from a header value; entries that are not ``sha256=`` are skipped."""
    entries: list[tuple[str | None, str]] = []
    for raw in value.split(","):
        fields = [f.strip() for f in raw.strip().split(";") if f.strip()]
        digest = next((f[len("sha256="):] for f in fields if f.startswith("sha256=")), None)
        kid = next((f[len("kid="):] for f in fields if f.startswith("kid=")), None)
        if digest:
            entries.append((kid, digest))
    return entries


class ReplayGuard:
    """Remembers the requests accepted inside the replay window (by their signed content), so a replay
    inside it is refused however its signature header is spelled.

    Each request is kept until its signed timestamp leaves the window :func:`verify` checks (``until``:
    timestamp + ``tolerance_s``), not for a fixed time after it was accepted: a timestamp ahead of the
    receiver's clock stays acceptable longer, and a receiver may pass a ``tolerance_s`` other than
    ``window_s``; either way a guard that forgot earlier let the same captured request in again."""

    def __init__(self, *, window_s: float = DEFAULT_TOLERANCE_S, max_entries: int = 1_000_000) -> None:
        self._window = window_s
        self._max = max_entries
        self._seen: dict[str, float] = {}  # key -> the time after which it can no longer pass verify
        self._lock = threading.Lock()

    def check_and_remember(self, key: str, *, now: float, until: float | None = None) -> bool:
        """True the first time ``key`` is seen while remembered; it is remembered up to ``until`` (epoch
        seconds, inclusive; ``now + 2 * window_s`` without it)."""
        expires = now + 2 * self._window if until is None else until
        with self._lock:
            if len(self._seen) >= self._max or len(self._seen) % 1024 == 0:
                self._seen = {k: t for k, t in self._seen.items() if t >= now}
            if key in self._seen:
                return False
            self._seen[key] = expires
            return True


def verify(
    body: bytes, *, timestamp: str, signature: str, secrets: Mapping[str, bytes | str],
    now: float, tolerance_s: float = DEFAULT_TOLERANCE_S, guard: ReplayGuard | None = None,
) -> str:
    """Check a webhook (see the module docstring); returns the key id that verified it.

    ``now`` is the receiver's clock in epoch seconds (``time.time()`` in a receiver's handler).

    ``secrets`` maps key id -> secret. Raises :class:`WebhookVerificationError` for a timestamp outside
    the window, no matching signature, or (with ``guard``) a replay.
    """
    current = now
    try:
        sent = float(timestamp)
    except (TypeError, ValueError):
        raise WebhookVerificationError("missing or malformed timestamp") from None
    if sent != sent or abs(current - sent) > tolerance_s:
        raise WebhookVerificationError("timestamp outside the replay window")
    matched: str | None = None
    for kid, digest in parse_signature_header(signature or ""):
        if kid is None or kid not in secrets:
            continue
        # bytes, not str: compare_digest refuses non-ASCII str (a TypeError, not a verification error)
        if hmac.compare_digest(compute_signature(secrets[kid], body, timestamp).encode(),
                               digest.encode("utf-8", "replace")):
            matched = kid
            break
    if matched is None:
        raise WebhookVerificationError("no valid signature for a known key id")
    # The replay key is what was signed (timestamp and body), not the header's text: the header itself is
    # not signed, so an extra entry, a space or another key id's signature must not make a replay new.
    signed = hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()
    if guard is not None and not guard.check_and_remember(signed, now=current, until=sent + tolerance_s):
        raise WebhookVerificationError("replayed request")
    return matched
