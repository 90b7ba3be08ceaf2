"""Rendering: a campaign's template plus the user's context -> the message a channel sends.

Templates are ``str.format`` style (``"{first_name}, new in: {url}"``), rendered by the restricted
formatter in :mod:`notify_core.delivery.templates` (plain names only, bounded format specs, capped size).
``{url}`` is always the *signed tracking* link ``<public_base_url>/t/<token>``: the campaign's own URL is
reached through the redirect, which is how clicks come back as events. A template that names an unknown
field renders that field empty instead of failing the send (a typo in a campaign must not dead-letter
its audience).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notify_core.delivery.channels import Message
from notify_core.delivery.templates import DEFAULT_TEMPLATE, render_template
from notify_core.delivery.tracking import TrackingLinks


def fill(template: str, context: Mapping[str, Any]) -> str:
    """``template`` with ``context`` (see :func:`notify_core.delivery.templates.render_template`)."""
    return render_template(template, context)


def render(
    item: Mapping[str, Any], *, campaign: Mapping[str, Any] | None, user: Mapping[str, Any] | None,
    links: TrackingLinks, attempt: int = 1,
) -> Message:
    """The message for a schedule item (needs notification_id, user_id, campaign_id, send_at)."""
    nid = str(item["notification_id"])
    link = links.click(nid)
    camp = dict(campaign or {})
    usr = dict(user or {})
    context: dict[str, Any] = {
        **{k: v for k, v in usr.items() if isinstance(v, str | int | float)},
        **{f"campaign_{k}": v for k, v in camp.items() if isinstance(v, str | int | float)},
        "first_name": usr.get("first_name") or "there",
        "user_id": item["user_id"],
        "campaign_id": item["campaign_id"],
        "url": link,
        "link": link,
    }
    template = camp.get("template") or camp.get("text") or DEFAULT_TEMPLATE
    body = fill(str(template), context)
    if link not in body:  # every message carries its tracking link, whatever the template says
        body = f"{body} {link}".strip()
    return Message(
        notification_id=nid, user_id=str(item["user_id"]), campaign_id=str(item["campaign_id"]),
        title=str(camp.get("name") or item["campaign_id"])[:200], body=body, link=link,
        open_pixel=links.open(nid), send_at=str(item.get("send_at", "")), attempt=attempt,
    )
