"""Rendering: a campaign's template plus the user's context -> the message a channel sends.

Templates are ``str.format`` style (``"{first_name}, new in: {url}"``). ``{url}`` is always the
*tracking* link ``<public_base_url>/t/<notification_id>``: the campaign's own URL is reached through the
redirect, which is how clicks come back as events. A template that names an unknown field renders that
field empty instead of failing the send (a typo in a campaign must not dead-letter its audience).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from notify_core.delivery.channels import Message


class _Context(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


_FORMATTER = string.Formatter()


def tracking_link(public_base_url: str, notification_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/t/{notification_id}"


def open_pixel(public_base_url: str, notification_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/o/{notification_id}"


def fill(template: str, context: Mapping[str, Any]) -> str:
    """``template`` with ``context``; unknown fields empty, a malformed template returned as text."""
    try:
        return _FORMATTER.vformat(template, (), _Context(context))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


def render(
    item: Mapping[str, Any], *, campaign: Mapping[str, Any] | None, user: Mapping[str, Any] | None,
    public_base_url: str, attempt: int = 1,
) -> Message:
    """The message for a schedule item (needs notification_id, user_id, campaign_id, send_at)."""
    nid = str(item["notification_id"])
    link = tracking_link(public_base_url, nid)
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
    template = camp.get("template") or camp.get("text") or "{campaign_name}: {url}"
    body = fill(str(template), context)
    if link not in body:  # every message carries its tracking link, whatever the template says
        body = f"{body} {link}".strip()
    return Message(
        notification_id=nid, user_id=str(item["user_id"]), campaign_id=str(item["campaign_id"]),
        title=str(camp.get("name") or item["campaign_id"]), body=body, link=link,
        open_pixel=open_pixel(public_base_url, nid), send_at=str(item.get("send_at", "")), attempt=attempt,
    )
