"""Webhook signatures with rotation: several ``sha256=`` entries during an overlap, a replay window, and
the receiver's ``verify`` run against what the real channel sends over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.channels import Message, WebhookChannel, verify_signature
from notify_core.delivery.webhook_verify import (
    ReplayGuard,
    WebhookVerificationError,
    parse_signature_header,
    signature_header,
    verify,
)
from notify_core.security.key_documents import FileKeyDocuments
from notify_core.security.keyring import load_ring, rotate_ring

MSG = Message(notification_id="n1", user_id="u1", campaign_id="c1", title="T", body="hi", link="l", open_pixel="p",
              send_at="2031-01-01T10:00:00Z")


class _Receiver(BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(({k: v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    _Receiver.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.seen
    server.shutdown()
    server.server_close()


def test_rotation_overlap_signs_with_both_keys_and_each_receiver_verifies(
        tmp_path: Path, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, seen = receiver
    clock = ManualClock(datetime(2026, 11, 24, 10, 5, tzinfo=UTC))  # the test's own now, sender and receiver
    old = load_ring(FileKeyDocuments(tmp_path), "webhook", clock=clock)
    new = rotate_ring(FileKeyDocuments(tmp_path), "webhook", clock=clock, overlap=timedelta(days=1))
    now = datetime.fromtimestamp(clock.now(), UTC)
    channel = WebhookChannel(url, keys=lambda: [(k.kid, k.secret) for k in new.signing_keys(now=now)], clock=clock)
    try:
        assert channel.send(MSG, idempotency_key="n1").ok
    finally:
        channel.close()
    [(headers, body)] = seen
    entries = parse_signature_header(headers["X-Notify-Signature"])
    assert [kid for kid, _ in entries] == [new.active_kid, old.active_kid]  # new first, old during the overlap
    ts = headers["X-Notify-Timestamp"]
    # a receiver still on the old key, and one already on the new key, both verify
    assert verify(body, timestamp=ts, signature=headers["X-Notify-Signature"],
                  secrets={old.active_kid: old.active.secret}, now=clock.now()) == old.active_kid
    assert verify(body, timestamp=ts, signature=headers["X-Notify-Signature"],
                  secrets={new.active_kid: new.active.secret}, now=clock.now()) == new.active_kid
    assert json.loads(body)["notification_id"] == "n1" and headers["Idempotency-Key"] == "n1"


def test_after_the_overlap_only_the_new_key_signs(tmp_path: Path) -> None:
    """The old key signs during the overlap and not from its end on: a receiver left on it stops verifying
    (its signature would otherwise keep travelling with every webhook until the next rotation)."""
    clock = ManualClock(datetime(2026, 11, 24, 10, 5, tzinfo=UTC))
    old = load_ring(FileKeyDocuments(tmp_path), "webhook", clock=clock)
    new = rotate_ring(FileKeyDocuments(tmp_path), "webhook", clock=clock, overlap=timedelta(days=1))
    start = datetime.fromtimestamp(clock.now(), UTC)
    assert [k.kid for k in new.signing_keys(now=start + timedelta(days=1, seconds=-1))] == [
        new.active_kid, old.active_kid]
    assert [k.kid for k in new.signing_keys(now=start + timedelta(days=1))] == [new.active_kid]


def test_verify_rejects_tampering_unknown_keys_stale_timestamps_and_replays() -> None:
    secrets = {"k1": b"s" * 32, "k0": b"o" * 32}
    body = b'{"a":1}'
    ts = "1900000000.000"
    header = signature_header([("k1", secrets["k1"]), ("k0", secrets["k0"])], body, ts)
    now = 1900000000.0
    assert verify(body, timestamp=ts, signature=header, secrets=secrets, now=now) == "k1"
    cases = {
        "tampered body": dict(body=b'{"a":2}', timestamp=ts, signature=header, secrets=secrets, now=now),
        "unknown key ids": dict(body=body, timestamp=ts, signature=header, secrets={"k9": b"s" * 32}, now=now),
        "wrong secret for the id": dict(body=body, timestamp=ts, signature=header, secrets={"k1": b"x" * 32}, now=now),
        "too old": dict(body=body, timestamp=ts, signature=header, secrets=secrets, now=now + 301),
        "from the future": dict(body=body, timestamp=ts, signature=header, secrets=secrets, now=now - 301),
        "bad timestamp": dict(body=body, timestamp="nan", signature=header, secrets=secrets, now=now),
        "moved timestamp": dict(body=body, timestamp="1900000001.000", signature=header, secrets=secrets, now=now),
        "no signature": dict(body=body, timestamp=ts, signature="", secrets=secrets, now=now),
    }
    for name, kwargs in cases.items():
        with pytest.raises(WebhookVerificationError):
            verify(**kwargs)  # type: ignore[arg-type]
            pytest.fail(name)
    guard = ReplayGuard()
    assert verify(body, timestamp=ts, signature=header, secrets=secrets, now=now, guard=guard) == "k1"
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verify(body, timestamp=ts, signature=header, secrets=secrets, now=now + 10, guard=guard)
    # the header is not signed: another spelling of it, or the other key id's entry alone, is the same request
    k0_alone = signature_header([("k0", secrets["k0"])], body, ts)
    for variant in (header + ", sha256=00;kid=zz", " " + header, header.replace(";", "; "), k0_alone):
        with pytest.raises(WebhookVerificationError, match="replayed"):
            verify(body, timestamp=ts, signature=variant, secrets=secrets, now=now + 20, guard=guard)
    other = b'{"a":3}'  # another request inside the window is new
    assert verify(other, timestamp=ts, signature=signature_header([("k1", secrets["k1"])], other, ts),
                  secrets=secrets, now=now + 30, guard=guard) == "k1"


def test_a_nan_timestamp_is_outside_every_replay_window() -> None:
    """``"nan"`` parses as a float and no comparison with it is true: even correctly signed over it, it is
    refused as outside the window (a guard could not remember it either: its expiry would be NaN)."""
    secrets = {"k1": b"s" * 32}
    body = b'{"a":1}'
    for ts in ("nan", "NaN", "-nan"):
        with pytest.raises(WebhookVerificationError, match="window"):
            verify(body, timestamp=ts, signature=signature_header([("k1", secrets["k1"])], body, ts),
                   secrets=secrets, now=1_764_478_800.0, guard=ReplayGuard())


def test_a_non_ascii_signature_is_a_verification_error() -> None:
    """compare_digest raises TypeError on non-ASCII str: a receiver would have answered 500."""
    for header in ("sha256=\u00e9;kid=k1", "sha256=\u00e9\u00e9;kid=k1, sha256=00;kid=k1"):
        with pytest.raises(WebhookVerificationError, match="no valid signature"):
            verify(b"{}", timestamp="1900000000", signature=header, secrets={"k1": b"s" * 32}, now=1900000000.0)


def test_the_legacy_single_secret_check_accepts_any_entry() -> None:
    body, ts = b"x", "1900000000"
    header = signature_header([("new", "n"), ("default", "legacy")], body, ts)
    assert verify_signature("legacy", body, timestamp=ts, signature=header, now=1900000000.0)
    assert not verify_signature("other", body, timestamp=ts, signature=header, now=1900000000.0)


def test_the_receiver_module_needs_only_the_standard_library() -> None:
    import ast

    import notify_core.delivery.webhook_verify as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "functools", "hashlib", "hmac", "threading", "time", "collections"}


def test_the_replay_guard_remembers_a_request_as_long_as_its_timestamp_passes_the_window() -> None:
    """The guard forgot a request ``2 * window_s`` after it accepted it (its own ``window_s``, 300 s), whatever
    ``tolerance_s`` the receiver passed to ``verify`` and however far ahead the signed timestamp was: a
    receiver allowing 10 minutes of clock skew (``tolerance_s=600``) accepted, at a 600-s-ahead timestamp, the
    same captured request again once the guard had pruned it (at its next prune, every 1,024 entries), and
    with the defaults a request signed 300 s ahead replayed at exactly 600 s passed too. Now the guard keeps
    each request until its signed timestamp leaves the window ``verify`` checks."""
    secrets = {"k1": b"s" * 32}

    def signed(body: bytes, ts: str) -> dict[str, object]:
        return dict(body=body, timestamp=ts, signature=signature_header([("k1", secrets["k1"])], body, ts),
                    secrets=secrets)

    now = 1900000000.0
    for tolerance, ahead, later in ((600.0, 600.0, 700.0), (300.0, 300.0, 600.0)):
        guard = ReplayGuard()
        captured = signed(b'{"n":"captured"}', f"{now + ahead:.3f}")
        assert verify(**captured, now=now, tolerance_s=tolerance, guard=guard) == "k1"  # type: ignore[arg-type]
        for i in range(1023):  # other traffic, up to the guard's next prune
            verify(**signed(b'{"n":%d}' % i, f"{now:.3f}"), now=now, tolerance_s=tolerance,  # type: ignore[arg-type]
                   guard=guard)
        with pytest.raises(WebhookVerificationError, match="replayed"):
            verify(**captured, now=now + later, tolerance_s=tolerance, guard=guard)  # type: ignore[arg-type]
