"""The rendered body's size cap and its tracking link."""

from __future__ import annotations

from notify_core.delivery.render import render
from notify_core.delivery.templates import MAX_RENDERED_CHARS
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks
from notify_core.security.keyring import ephemeral_keyring
from tests.delivery.conftest import NOW

ITEM = {"notification_id": "n-1", "user_id": "u-1", "campaign_id": "c-1", "send_at": "2031-01-01T10:00:00Z"}


def test_a_body_filling_the_cap_keeps_one_whole_tracking_link_and_stays_under_the_cap() -> None:
    """The template's text is cut at MAX_RENDERED_CHARS, and the tracking link was then appended when the
    cut had taken it: a long campaign text (or a user's long attribute, multi-byte or not) produced a body
    over the cap ending in a cut link (a click on it lands on an invalid token, lost) followed by the whole
    one. Now the text is cut short enough for the one whole link to fit."""
    links = TrackingLinks("https://n.example", ephemeral_keyring(TRACKING_PURPOSE, now=NOW))
    link = links.click("n-1")
    for filler in ("é" * MAX_RENDERED_CHARS, "x" * (MAX_RENDERED_CHARS - 40), "\U0001f600" * 5000):
        campaign = {"name": "Lanterns", "text": filler, "template": "{campaign_text} {url}"}
        body = render(ITEM, campaign=campaign, user={"first_name": "Anna"}, links=links).body
        assert len(body) <= MAX_RENDERED_CHARS
        assert body.endswith(" " + link) and body.count(link[: len(link) // 2]) == 1
