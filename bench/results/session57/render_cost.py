"""``render()`` of the delivery benchmark's message and a webhook's ``signature_header``, CPU us a call (the least of
15 runs of 5,000: the box moved 30 % between runs this session), in the tree of the current directory. Run from
each tree's root in turn: ``python bench/results/session57/render_cost.py``."""

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

sys.path.insert(0, os.getcwd())

from notify_core.delivery.render import campaign_context, render  # noqa: E402
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks  # noqa: E402
from notify_core.delivery.webhook_verify import signature_header  # noqa: E402
from notify_core.security.keyring import ephemeral_keyring  # noqa: E402

N = 5000
LINKS = TrackingLinks("https://n.example", ephemeral_keyring(TRACKING_PURPOSE, now=datetime(2026, 11, 30, tzinfo=UTC)))
CAMPAIGN = {"campaign_id": "c001", "name": "Campaign c001", "template": "{first_name}, something new for you: {url}",
            "status": "active", "priority": 3, "cooldown_hours": 24, "daily_budget": None}
USER = {"pk": "u0001234", "sk": "PROFILE", "user_id": "u0001234", "first_name": "User 1234", "timezone": "UTC",
        "country": "GB"}  # a profile as notify_core.delivery.synthetic.seed_due writes it
ITEM = {"notification_id": "n-abcdef0123456789", "user_id": "u0001234", "campaign_id": "c001",
        "send_at": "2026-11-30T10:00:00Z"}


def least_us(call: Callable[[], object]) -> float:
    runs = []
    for _ in range(15):
        started = time.process_time()
        for _ in range(N):
            call()
        runs.append((time.process_time() - started) / N * 1e6)
    return round(min(runs), 2)


if __name__ == "__main__":
    fields = campaign_context(CAMPAIGN)
    body = b"x" * 900
    print(os.getcwd(), "render", least_us(lambda: render(ITEM, campaign=CAMPAIGN, user=USER, links=LINKS,
                                                         campaign_fields=fields)),
          "signature", least_us(lambda: signature_header([("k1", b"s" * 32)], body, "1764478800.123")))
