"""The shortcuts a message's rendering takes for speed (each send renders one) give what the long way gives:
text already tidy returned without the regex, a message's three links under one look-up of the active key, and a
webhook's signature from a keyed HMAC copied instead of keyed again."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re

from notify_core.delivery.render import _tidy, render
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks, verify_token
from notify_core.delivery.webhook_verify import compute_signature, signature_header
from notify_core.security.keyring import ephemeral_keyring
from tests.delivery.conftest import NOW

_SPACES = re.compile(r"\s+")
# every character Python's \s matches in text, some that look like space and are not, and plain ones
_WHITESPACE = [chr(c) for c in range(0x3001) if re.fullmatch(r"\s", chr(c))]
_PIECES = [" ", "  ", "a", "é", "\u200b", "\ufeff", "\x00", "-", *_WHITESPACE]


def test_tidy_text_is_what_the_regex_and_strip_make_of_it() -> None:
    assert len(_WHITESPACE) >= 25  # \t \n \x0b \x0c \r \x1c-\x1f space \x85 \xa0 \u1680 \u2000-\u200a ...
    samples = ["", "Anna", "Hi Anna Smith", "London, UK", *("".join(p) for p in itertools.product(_PIECES, repeat=3))]
    for text in samples:
        assert _tidy(text) == _SPACES.sub(" ", text).strip(), repr(text)
    assert _tidy(3) == 3 and _tidy(None) is None


def test_a_messages_links_are_its_click_open_and_unsubscribe_links() -> None:
    ring = ephemeral_keyring(TRACKING_PURPOSE, now=NOW)
    links = TrackingLinks("https://n.example/", ring)
    click, open_pixel, unsubscribe = links.for_message("n-1")
    assert (click, open_pixel, unsubscribe) == (links.click("n-1"), links.open("n-1"), links.unsubscribe("n-1"))
    assert click.startswith("https://n.example/t/") and open_pixel.startswith("https://n.example/o/")
    assert unsubscribe.startswith("https://n.example/u/")
    for link, kind in ((click, "click"), (open_pixel, "open"), (unsubscribe, "unsubscribe")):
        assert verify_token(ring, link.rsplit("/", 1)[1], kind=kind, now=NOW) == "n-1"
    message = render({"notification_id": "n-1", "user_id": "u-1", "campaign_id": "c-1"}, campaign={"name": "Lamps"},
                     user={"first_name": "  Anna\u00a0 "}, links=links)
    assert (message.link, message.open_pixel, message.unsubscribe) == (click, open_pixel, unsubscribe)
    assert message.body.startswith("Hi Anna,")


def test_a_webhook_signature_is_the_hmac_of_its_timestamp_and_body_under_each_key() -> None:
    body, ts = b'{"notification_id":"n-1"}' * 40, "1764478800.123"
    for secret in (b"k" * 32, "a text secret", b"k" * 32, b"\x00" * 64 + b"longer than a block"):
        key = secret.encode() if isinstance(secret, str) else secret
        expected = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        assert compute_signature(secret, body, ts) == expected
    header = signature_header([("new", b"n" * 32), ("old", b"o" * 32)], body, ts)
    assert header == (f"sha256={hmac.new(b'n' * 32, ts.encode() + b'.' + body, hashlib.sha256).hexdigest()};kid=new, "
                      f"sha256={hmac.new(b'o' * 32, ts.encode() + b'.' + body, hashlib.sha256).hexdigest()};kid=old")
