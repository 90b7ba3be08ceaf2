"""Every rendered message carries a signed one-click unsubscribe link; the webhook channel sends it as the
RFC 8058 headers (``List-Unsubscribe: <https://...>``, ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``)
to a real HTTP receiver; the default copy is readable (no raw "bestseller: red  harmonica" labels)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl

from notify_core.clock import ManualClock
from notify_core.delivery.channels import Message, Outcome, WebhookChannel
from notify_core.delivery.render import render
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks, verify_token
from notify_core.security.keyring import ephemeral_keyring
from notify_core.sources.synthetic import generate_campaigns
from tests.delivery.conftest import NOW, SECRET

ITEM = {"notification_id": "n-1", "user_id": "u1", "campaign_id": "c1", "send_at": "2026-11-24T10:05:00Z"}


def _links() -> TrackingLinks:
    return TrackingLinks("https://n.example", ephemeral_keyring(TRACKING_PURPOSE, now=NOW))


def test_every_message_carries_a_signed_unsubscribe_link() -> None:
    links = _links()
    message = render(ITEM, campaign={"name": "Lanterns", "template": "{first_name}: {url}"}, user={}, links=links)
    token = message.unsubscribe.removeprefix("https://n.example/u/")
    assert verify_token(links.keys, token, kind="unsubscribe", now=NOW) == "n-1"
    assert message.payload()["unsubscribe"] == message.unsubscribe


def test_the_webhook_sends_the_rfc_8058_headers(clock: ManualClock) -> None:
    seen: list[dict[str, str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        channel = WebhookChannel(f"http://127.0.0.1:{server.server_port}/hook", secret=SECRET, clock=clock)
        message = render(ITEM, campaign={"name": "Lanterns"}, user={"first_name": "Anna"}, links=_links())
        assert channel.send(message, idempotency_key="n-1").outcome is Outcome.DELIVERED
        bare = Message(**{**message.payload(), "unsubscribe": ""})
        assert channel.send(bare, idempotency_key="n-2").outcome is Outcome.DELIVERED
        channel.close()
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0]["list-unsubscribe"] == f"<{message.unsubscribe}>"
    assert seen[0]["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
    assert "list-unsubscribe" not in seen[1]


def test_default_copy_is_readable_for_every_synthetic_campaign() -> None:
    purchases = pl.DataFrame({
        "order_id": ["o1", "o1", "o2", "o3"], "product_id": ["P1", "P2", "P1", "P2"], "user_id": ["a", "a", "b", "c"],
        "is_return": [False] * 4, "ts": [datetime(2026, 1, 1, tzinfo=UTC)] * 4,
    })
    products = pl.DataFrame({"product_id": ["P1", "P2"], "description": ["RED  HARMONICA IN BOX ", "PARTY BUNTING"],
                             "category": ["toys", "party & celebrations"], "unit_price": [1.25, 4.95]})
    campaigns = generate_campaigns(products, purchases, seed=7, min_buyers=1)
    assert campaigns.height >= 2
    for row in campaigns.iter_rows(named=True):
        message = render(ITEM, campaign=row, user={"first_name": "Anna"}, links=_links())
        assert message.body.startswith("Hi Anna, ") and "  " not in message.body, message.body
        assert row["name"].lower() + ":" not in message.body  # no "bestseller: red harmonica in box:" labels
        assert message.body.endswith(message.link)
    bestseller = campaigns.filter(pl.col("campaign_id").str.starts_with("bestseller"))["campaign_id"][0]
    body = render(ITEM, campaign=campaigns.filter(pl.col("campaign_id") == bestseller).row(0, named=True),
                  user={}, links=_links()).body
    assert body.startswith("Hi, Bestseller: Red Harmonica In Box. Everyone is buying the red harmonica in box."), body
