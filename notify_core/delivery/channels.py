"""Channels: one port (``send(message, *, idempotency_key) -> SendResult``) and three adapters.

* :class:`OutboxChannel` (the default): one JSON line per message appended to a local file and flushed,
  so the demo and the crash test can read exactly what was "sent" (and count duplicates by key).
* :class:`WebhookChannel`: an HTTP POST of the message as JSON, signed with HMAC-SHA256
  (``X-Notify-Signature``, over ``"<timestamp>.<body>"`` so a captured request cannot be replayed later;
  one ``sha256=<hex>;kid=<id>`` entry per signing key, several during a key rotation's overlap; receivers
  run :func:`notify_core.delivery.webhook_verify.verify`), with an ``Idempotency-Key`` header the receiver
  uses to drop the rare duplicate at-least-once implies.
  5xx, 408, 425, 429, timeouts and connection errors are retryable (a ``Retry-After`` on the answer puts
  the retry no sooner, up to an hour: :func:`retry_after_s`); other 4xx are permanent.
* :class:`notify_core.delivery.sns.SnsChannel`: AWS SNS for the aws environment (FIFO topics deduplicate on
  the key), in its own module so that boto3 stays in the adapter.

The webhook adapter talks HTTP/1.1 over one keep-alive connection per sending thread with the small
client in :mod:`notify_core.delivery.http1` (the request head built from a fixed prefix, one write per
request, the response read from one buffer). httpx (pooled, sync) was measured first on this 2-core
machine at about 1,500 requests/s to a loopback sink, ``http.client`` at 3,800-4,100/s; the delivery
target is 5,000/s including the Store writes, and ``http.client``'s per-request cost (header parsing
through the ``email`` package above all) was most of the sender's CPU. Nothing else depends on which.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import itertools
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

import orjson

from notify_core.clock import Clock
from notify_core.delivery.http1 import Disconnected, Http1Connection, ProtocolError
from notify_core.delivery.webhook_verify import parse_signature_header, signature_header
from notify_core.errors import ConfigurationError
from notify_core.line_file import LineFile, rotate_by_day, rotated_files, utc_day
from notify_core.observability import LOG_RETENTION_DAYS
from notify_core.per_thread import PerThread
from notify_core.security.files import FILE_MODE, private_dir

if TYPE_CHECKING:
    from notify_core.security.crypto import FieldSealer
    from notify_core.settings import NotifySettings

SIGNATURE_HEADER = "X-Notify-Signature"
TIMESTAMP_HEADER = "X-Notify-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
LIST_UNSUBSCRIBE_HEADER = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST_HEADER = "List-Unsubscribe-Post"
LIST_UNSUBSCRIBE_POST_VALUE = "List-Unsubscribe=One-Click"


@dataclass(frozen=True, slots=True)
class Message:
    """What a channel sends: the rendered text plus the ids and links the receiver may need."""

    notification_id: str
    user_id: str
    campaign_id: str
    title: str
    body: str
    link: str  # the tracking link; the campaign's own URL is only reached through it
    open_pixel: str
    send_at: str  # scheduled time, ISO UTC
    attempt: int = 1
    unsubscribe: str = ""  # the signed one-click unsubscribe link (List-Unsubscribe on the webhook)

    def payload(self) -> dict[str, Any]:
        # every field is a scalar: a plain dict, not dataclasses.asdict's recursive deep copy (once per send)
        return {name: getattr(self, name) for name in _MESSAGE_FIELDS}

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON (orjson: the same bytes as ``json.dumps(separators=(",", ":"),
        ensure_ascii=False)`` for these str/int fields, in a tenth of the time)."""
        return orjson.dumps(self.payload())


_MESSAGE_FIELDS = tuple(f.name for f in fields(Message))


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRYABLE = "retryable"  # worth another attempt later (5xx, timeout, throttling)
    PERMANENT = "permanent"  # will fail again the same way (4xx, bad address): dead-letter now


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    status: int | None = None  # HTTP status where there is one
    detail: str = ""
    # a retryable answer's Retry-After in seconds: the retry is due no sooner (Outcomes.prepare)
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED


@runtime_checkable
class Channel(Protocol):
    """Sends one message. Must be safe to call from several threads at once and must not raise for
    delivery failures: those are results (retryable or permanent), so the worker decides what happens."""

    name: str

    def send(self, message: Message, *, idempotency_key: str) -> SendResult: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------
# Every outbox line starts so (``send`` writes the key first): where a reader finds a line that does not
# parse, a record starting further in is a whole one glued to a torn line (see :func:`read_outbox`).
_RECORD_START = b'{"idempotency_key":'
# How much of its end a newly opened outbox reads for the sends a killed predecessor wrote but did not record:
# those are its last few lines (at most one a sender), and 1 MiB holds ~1,300 of the kill loop's 790-byte ones.
_RECENT_BYTES = 1 << 20
_KEYS_KEPT = 100_000  # other processes' keys an outbox remembers (~10 MB)
ALREADY_IN_OUTBOX = "already in the outbox (written by a killed predecessor or another worker)"


class OutboxChannel:
    """Append-only JSONL file: one line per send, flushed before ``send`` returns (the embedded default).

    ``fsync=True`` also syncs the file, for a power-loss-proof outbox; a process crash (kill -9) loses
    nothing that was flushed either way, because the data is in the kernel's page cache.
    With a ``sealer`` the message body (it carries the user's name) is sealed at rest (purpose ``outbox``);
    :func:`read_outbox` with the same sealer opens it. The file is 0600 in a 0700 folder.

    The file is a :class:`~notify_core.line_file.LineFile`: an erasure that rewrites it (a user's lines
    removed) never takes a line appended meanwhile with it, and a line a ``kill -9`` tore is ended before
    the next (seen in the 100k kill loop: a 551-byte fragment ending at a 4 KiB page boundary, and the
    restarted worker's next line glued to it). That torn send was never recorded, so it is sent again;
    :func:`read_outbox` also finds a record glued behind a fragment (another process appending while one
    was killed).

    A restarted worker does not write again what its killed predecessor wrote: a send is written, then its
    outcome committed, so a ``kill -9`` between the two leaves lines whose sends the Store still holds as
    claimed, and they are re-claimed and sent again once the worker's heartbeat or the lease runs out (within
    seconds: :meth:`~notify_core.delivery.claims.Claims._recheck_held`). The channel reads the keys of
    the whole records in the file's last :data:`_RECENT_BYTES` when it opens, and answers a send of one of
    them ``DELIVERED`` ("already in the outbox") without writing it: the outbox is the receiver, and it
    dedupes on the idempotency key as a webhook receiver does. The 100k kill loop counted 4-10 duplicate
    lines from five kills before this. Workers sharing one outbox learn each other's keys the same way: each
    append, holding the file's lock, first reads what others appended since its own last line
    (:meth:`LineFile.append`), so a survivor that takes over a killed worker's claims answers the sends the
    victim wrote, even as its next line. The keys kept are the last :data:`_KEYS_KEPT`; a send older than
    that is written again, a duplicate readers drop by its key.

    Kept ``keep_days`` (:data:`~notify_core.observability.LOG_RETENTION_DAYS`, as the deliveries log): the
    first send of a new UTC day (by the channel's clock) moves the earlier days' lines aside as
    ``<stem>.<day><suffix>`` (:func:`~notify_core.line_file.rotate_by_day`, under the file's lock, so another
    worker appends to the new file) and removes those past the retention. Before, the embedded default's
    outbox took a line per send, a sealed copy of every message, for as long as Notify ran.
    :func:`read_outbox` reads the moved files too, and a newly opened channel reads the last one's end when
    the current file is shorter than :data:`_RECENT_BYTES` (a kill just after midnight).
    """

    name = "outbox"

    def __init__(self, path: Path | str, *, clock: Clock, fsync: bool = False,
                 sealer: FieldSealer | None = None, keep_days: int = LOG_RETENTION_DAYS) -> None:
        self.path = Path(path)
        self._clock = clock
        self._keep_days = keep_days
        self._day_ends = float("-inf")  # the end (epoch s) of the UTC day this channel last rotated on
        private_dir(self.path.parent)
        self._file = LineFile(self.path, mode=FILE_MODE, others=True)
        # keys written by other processes (a killed predecessor, another worker), oldest first
        self._written_before = dict.fromkeys(_recent_keys(self.path))  # after LineFile ended a torn line
        self._lock = threading.Lock()
        self._fsync = fsync
        self._sealer = sealer

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        if idempotency_key in self._written_before:
            return SendResult(Outcome.DELIVERED, detail=ALREADY_IN_OUTBOX)
        payload = message.payload()
        if self._sealer is not None:
            payload = self._sealer.seal_row("outbox", payload)
        now = self._clock.now()
        line = json.dumps({"idempotency_key": idempotency_key, "sent_at": now, **payload},
                          separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        try:
            with self._lock:
                if now >= self._day_ends:  # a float compare a send; the file's day looked at once a day
                    self._rotate(now)
                written = self._file.append(line, fsync=self._fsync,
                                            already=lambda others: self._learn(others, idempotency_key))
        except OSError as exc:  # a full disk may clear; report it as retryable
            return SendResult(Outcome.RETRYABLE, detail=f"outbox write failed: {exc}")
        return SendResult(Outcome.DELIVERED, detail="" if written else ALREADY_IN_OUTBOX)

    def _rotate(self, now: float) -> None:
        day, self._day_ends = utc_day(now)
        rotate_by_day(self.path, day=day, keep_days=self._keep_days, day_of_line=_outbox_line_day)

    def _learn(self, others: bytes, key: str) -> bool:
        """Keep the keys of the whole records other processes appended (the first line may be cut); whether
        ``key`` is among the keys kept."""
        known = self._written_before
        for seen in _keys(others.splitlines(keepends=True)):
            known[seen] = None
        for stale in list(itertools.islice(known, max(0, len(known) - _KEYS_KEPT))):
            del known[stale]
        return key in known

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_outbox(path: Path | str, *, sealer: FieldSealer | None = None) -> list[dict[str, Any]]:
    """Every complete record of an outbox; with ``sealer``, sealed bodies opened.

    A torn line from a killed writer is skipped: a torn last line, and a fragment with a whole record
    glued behind it (the record is kept: it starts at its own :data:`_RECORD_START`; :class:`OutboxChannel`).
    """
    rows: list[dict[str, Any]] = []
    p = Path(path)
    for part in [*rotated_files(p), p]:  # the days moved aside (OutboxChannel), oldest first, then today's
        try:
            handle = part.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            for line in handle:
                row = _record(line)
                if row is not None:
                    rows.append(sealer.open_row("outbox", row) if sealer is not None else row)
    return rows


def _outbox_line_day(raw: bytes) -> str | None:
    """The UTC day an outbox line was written on (its ``sent_at``), or None for a torn line."""
    row = _record(raw + b"\n")  # a line as rotate_by_day hands it over: without its newline
    sent_at = row.get("sent_at") if row is not None else None
    return utc_day(sent_at)[0] if isinstance(sent_at, int | float) else None


def _record(line: bytes) -> dict[str, Any] | None:
    """The whole record a line of the outbox holds, or None for a torn one (see :func:`read_outbox`)."""
    if not line.endswith(b"\n"):
        return None
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        start = line.rfind(_RECORD_START)
        if start <= 0:
            return None
        try:
            row = orjson.loads(line[start:])
        except orjson.JSONDecodeError:
            return None
    return row if isinstance(row, dict) else None


def _recent_keys(path: Path) -> frozenset[str]:
    """The idempotency keys of the whole records in the outbox's last :data:`_RECENT_BYTES` (the first,
    maybe partial, line of the window skipped), the end of the last day moved aside included when today's
    file is shorter (a predecessor killed just after the rotation wrote its last sends there)."""
    keys: set[str] = set()
    wanted = _RECENT_BYTES
    for part in [path, *reversed(rotated_files(path))][:2]:
        try:
            with part.open("rb") as handle:
                size = handle.seek(0, 2)
                start = max(0, size - wanted)
                handle.seek(start)
                if start:
                    handle.readline()
                keys.update(_keys(handle))
        except FileNotFoundError:
            continue
        wanted -= size
        if wanted <= 0:
            break
    return frozenset(keys)


def _keys(lines: Iterable[bytes]) -> Iterator[str]:
    """The idempotency keys of the whole records among outbox lines."""
    for row in map(_record, lines):
        key = row.get("idempotency_key") if row is not None else None
        if isinstance(key, str):
            yield key


# ------------------------------------------------------------------------------------------------
def sign(secret: str, body: bytes, timestamp: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, body: bytes, *, timestamp: str, signature: str, now: float, tolerance_s: float = 300.0,
) -> bool:
    """One secret against every ``sha256=`` entry of a header (constant-time compare), timestamps outside
    ``tolerance_s`` rejected. Receivers holding key ids use ``webhook_verify.verify`` instead."""
    try:
        age = abs(now - float(timestamp))
    except ValueError:
        return False
    if not age <= tolerance_s:
        return False
    expected = sign(secret, body, timestamp)[len("sha256="):]
    return any(hmac.compare_digest(expected, digest) for _kid, digest in parse_signature_header(signature))


SigningKeys = Callable[[], Sequence[tuple[str, bytes | str]]]


_RETRYABLE_STATUS = frozenset({408, 425, 429})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status in _RETRYABLE_STATUS:
        return Outcome.RETRYABLE
    return Outcome.PERMANENT


def _webhook_url_parts(url: str) -> SplitResult:
    """The endpoint's parts, or a ConfigurationError that does not repeat the URL: a mistyped one may
    still carry a token in its path or query, and the error goes to the terminal and the logs."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, or out of range
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        found = f"scheme {parts.scheme or 'none'!r}, host {'given' if parts.hostname else 'missing'}"
        raise ConfigurationError(f"webhook URL must be http(s)://host[:port]/path ({found}; the URL itself "
                                 "is not repeated here)")
    if parts.username is not None or parts.password is not None:
        # never sent (the channel authenticates by signing each request): a receiver expecting them would
        # answer every notification 401 and each would be dead-lettered
        raise ConfigurationError("webhook URL must not carry user:password@: the channel signs each request "
                                 "and never sends them")
    return parts


class WebhookChannel:
    """Signed HTTP POSTs over one keep-alive connection per sending thread (see the module docstring)."""

    name = "webhook"

    def __init__(
        self, url: str, *, clock: Clock, secret: str | None = None, keys: SigningKeys | None = None,
        timeout_s: float = 2.0, user_agent: str = "notify-delivery/1",
    ) -> None:
        parts = _webhook_url_parts(url)
        if not secret and keys is None:
            raise ConfigurationError("the webhook channel needs a signing secret")
        single: list[tuple[str, bytes | str]] = [("default", secret)] if secret else []
        # ``keys`` is asked per send (a KeyRingFile re-reads itself after a rotation); ``secret`` alone is
        # one key with id "default".
        self._keys: SigningKeys = keys if keys is not None else (lambda: single)
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""  # never empty: checked by _webhook_url_parts
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._clock = clock
        self._timeout = timeout_s
        self._agent = user_agent
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        if ":" in self._host and parts.port is None:
            host_header = f"[{self._host}]"
        elif ":" in self._host:
            host_header = f"[{self._host}]:{self._port}"
        # The request head's fixed part, built once; send adds the per-message headers.
        self._head_start = (f"POST {self._path} HTTP/1.1\r\nHost: {host_header}\r\n"
                            f"Content-Type: application/json\r\nUser-Agent: {self._agent}")
        self._connections = PerThread(self._connect, close=Http1Connection.close)

    def _connect(self) -> Http1Connection:
        return Http1Connection(self._host, self._port, timeout_s=self._timeout,
                               tls=ssl.create_default_context() if self._https else None)

    def _request(self, message: Message, idempotency_key: str) -> bytes | SendResult:
        """The whole signed request (head and body in one buffer), or the permanent failure of a message
        whose header values would split it; shared by :meth:`send` and :class:`AsyncWebhookSender`."""
        body = message.to_json()
        ts = f"{self._clock.now():.3f}"
        lines = [self._head_start, f"{IDEMPOTENCY_HEADER}: {idempotency_key}", f"{TIMESTAMP_HEADER}: {ts}",
                 f"{SIGNATURE_HEADER}: {signature_header(list(self._keys()), body, ts)}"]
        if message.unsubscribe:  # RFC 8058 one-click unsubscribe, as a mail relay would forward it
            lines.append(f"{LIST_UNSUBSCRIBE_HEADER}: <{message.unsubscribe}>")
            lines.append(f"{LIST_UNSUBSCRIBE_POST_HEADER}: {LIST_UNSUBSCRIBE_POST_VALUE}")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        if _CONTROL.search(idempotency_key) or _CONTROL.search(message.unsubscribe):
            # a header value with CR/LF would split the request: this message is wrong, not the receiver
            return SendResult(Outcome.PERMANENT, detail="a header value holds a control character")
        return "\r\n".join(lines).encode("latin-1", errors="replace") + body

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        request = self._request(message, idempotency_key)
        if isinstance(request, SendResult):
            return request
        reused = self._connections.get().is_open
        for fresh in (False, True):
            conn = self._connections.renew() if fresh else self._connections.get()
            try:
                status = conn.request(request, b"")
                return _result(status, retry_after=conn.retry_after, now=self._clock.now())
            except (OSError, ProtocolError) as exc:
                if conn.answered is not None:  # the head arrived: the answer is its status (see _result)
                    return _result(conn.answered, retry_after=conn.retry_after, now=self._clock.now())
                failed = _failed(exc, retry_on_a_new_connection=reused and not fresh)
                if failed is not None:
                    return failed
        return SendResult(Outcome.RETRYABLE, detail="connection error")  # pragma: no cover - loop returns

    def async_sender(self) -> AsyncWebhookSender:
        """A sender for one coroutine of an event loop (its own keep-alive connection); see
        :class:`AsyncWebhookSender`."""
        return AsyncWebhookSender(self)

    def close(self) -> None:
        self._connections.close_all()


def _result(status: int, *, retry_after: bytes | None, now: float) -> SendResult:
    """The outcome of a receiver's answer, by its status line alone. A body over the client's limit, cut
    short or never ending after the head still leaves the status the receiver sent (the connection is
    dropped): counting it a connection error sent an accepted (2xx) notification again on every attempt and
    retried a refused (4xx) one."""
    outcome = classify_status(status)
    wait = retry_after_s(retry_after, now=now) if outcome is Outcome.RETRYABLE else None
    return SendResult(outcome, status=status, detail="" if outcome is Outcome.DELIVERED else f"HTTP {status}",
                      retry_after_s=wait)


MAX_RETRY_AFTER_S = 3600.0  # a receiver may defer a retry by up to an hour, not park a message for ever


def retry_after_s(value: bytes | None, *, now: float) -> float | None:
    """A ``Retry-After`` header (delta-seconds, or an HTTP-date read against ``now``) in seconds from ``now``,
    at most :data:`MAX_RETRY_AFTER_S`; None when absent, malformed or not ahead. Why: a rate-limited receiver
    (429, 503) says when it will take requests again; the fixed retry schedule (1 s, 5 s, 20 s) spent every
    attempt inside that window and dead-lettered what the receiver had only deferred."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        seconds = float(int(text))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return min(seconds, MAX_RETRY_AFTER_S) if seconds > 0 else None


def _failed(exc: OSError | ProtocolError, *, retry_on_a_new_connection: bool) -> SendResult | None:
    """What a webhook request that raised ``exc`` comes to, for the sync and the async sender alike; None
    when it is worth once more on a new connection: a kept-alive connection the server closed while idle
    (the Idempotency-Key covers the case where the first request did arrive)."""
    if isinstance(exc, TimeoutError):
        return SendResult(Outcome.RETRYABLE, detail=f"timeout: {exc}")
    if isinstance(exc, (Disconnected, BrokenPipeError, ConnectionResetError)) and retry_on_a_new_connection:
        return None
    return SendResult(Outcome.RETRYABLE, detail=f"connection error: {exc}")


class AsyncWebhookSender:
    """The webhook channel's send for an event loop: the same signed request and the same outcomes as
    :meth:`WebhookChannel.send`, over one :class:`~notify_core.delivery.ahttp1.AsyncHttp1Connection`.

    One per coroutine (the delivery worker's async senders keep ``concurrency`` of them in one thread);
    the sync :class:`Channel` port stays what every other channel implements.
    """

    def __init__(self, channel: WebhookChannel) -> None:
        from notify_core.delivery.ahttp1 import AsyncHttp1Connection

        self._channel = channel
        self._conn = AsyncHttp1Connection(channel._host, channel._port, timeout_s=channel._timeout,
                                          tls=ssl.create_default_context() if channel._https else None)

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        request = self._channel._request(message, idempotency_key)
        if isinstance(request, SendResult):
            return request
        reused = self._conn.is_open
        for fresh in (False, True):
            try:
                status = await self._conn.request(request)
                return _result(status, retry_after=self._conn.retry_after, now=self._channel._clock.now())
            except (OSError, ProtocolError) as exc:
                if self._conn.answered is not None:  # the head arrived: the answer is its status (see _result)
                    return _result(self._conn.answered, retry_after=self._conn.retry_after,
                                   now=self._channel._clock.now())
                failed = _failed(exc, retry_on_a_new_connection=reused and not fresh)
                if failed is not None:
                    return failed
        return SendResult(Outcome.RETRYABLE, detail="connection error")  # pragma: no cover - loop returns

    def close(self) -> None:
        self._conn.close()


def build_channel(settings: NotifySettings, *, clock: Clock) -> Channel:
    """The channel the settings name (see ``NotifySettings.channel``), stamping with ``clock``."""
    if settings.channel == "webhook":
        if not (settings.webhook_url and settings.webhook_secret):
            raise ConfigurationError("the webhook channel needs a URL and a secret")
        return WebhookChannel(settings.webhook_url, keys=webhook_keys(settings, clock=clock), clock=clock,
                              timeout_s=settings.webhook_timeout_s)
    if settings.channel == "sns":
        if not settings.sns_topic_arn:
            raise ConfigurationError("the sns channel needs a topic ARN")
        from notify_core.delivery.sns import SnsChannel  # boto3 only where SNS is used

        return SnsChannel(settings.sns_topic_arn, region=settings.aws_region, endpoint_url=settings.sns_endpoint_url)
    sealer = None
    if settings.encrypt_personal_fields:
        from notify_core.security.vault import build_vault

        sealer = build_vault(settings).sealer()
    return OutboxChannel(settings.outbox, clock=clock, sealer=sealer)


WEBHOOK_PURPOSE = "webhook"


def webhook_keys(settings: NotifySettings, *, clock: Clock) -> SigningKeys:
    """The webhook signing keys: the deployment's ``webhook`` ring
    (:func:`~notify_core.security.vault.build_vault`; active key first, then keys in their rotation overlap,
    following rotations made anywhere), plus ``NOTIFY_WEBHOOK_SECRET`` as key id ``default`` for receivers
    configured before rotation existed."""
    from notify_core.clock import utcnow
    from notify_core.security.vault import build_vault

    ring = build_vault(settings).live_ring(WEBHOOK_PURPOSE, clock=clock)
    legacy: list[tuple[str, bytes | str]] = [("default", settings.webhook_secret)] if settings.webhook_secret else []

    def keys() -> list[tuple[str, bytes | str]]:
        current = ring.signing_keys(now=utcnow(clock))
        return [(k.kid, k.secret) for k in current] + legacy

    return keys
