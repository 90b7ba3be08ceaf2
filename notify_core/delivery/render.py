"""Rendering: a campaign's template plus the user's context -> the message a channel sends.

Templates are ``str.format`` style (``"{first_name}, new in: {url}"``), rendered by the restricted
formatter in :mod:`notify_core.delivery.templates` (plain names only, bounded format specs, capped size).
``{url}`` is always the *signed tracking* link ``<public_base_url>/t/<token>``: the campaign's own URL is
reached through the redirect, which is how clicks come back as events. A template that names an unknown
field renders that field empty instead of failing the send (a typo in a campaign must not dead-letter
its audience).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from notify_core.delivery.channels import Message
from notify_core.delivery.templates import DEFAULT_TEMPLATE, MAX_RENDERED_CHARS, render_template
from notify_core.delivery.tracking import TrackingLinks


def fill(template: str, context: Mapping[str, Any]) -> str:
    """``template`` with ``context`` (see :func:`notify_core.delivery.templates.render_template`)."""
    return render_template(template, context)


_SPACES = re.compile(r"\s+")
_BLANKS = re.compile(r"[ \t]{2,}")  # in the rendered body: a template's own line breaks stay


def _tidy(value: Any) -> Any:
    """Text as a reader should see it: runs of whitespace (catalogue descriptions have double spaces) as one.

    Text that is already tidy is returned as it is without the regex, ~4x faster (every string field of the
    user's profile, every message): a printable string's only whitespace is the ASCII space (``str.isprintable``
    is false for every other character ``\\s`` matches), so with no double space and none at either end the
    substitution and the strip would change nothing."""
    if not isinstance(value, str):
        return value
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value
    return _SPACES.sub(" ", value).strip()


def campaign_context(campaign: Mapping[str, Any] | None) -> dict[str, Any]:
    """The campaign's ``campaign_<field>`` template fields, whitespace-normalised (see :func:`render`).

    The worker sends thousands of messages of one campaign from one cached item and computes this once
    per cached item (tidying the campaign's fields for every message was a tenth of rendering)."""
    return {f"campaign_{k}": _tidy(v) for k, v in (campaign or {}).items() if isinstance(v, str | int | float)}


def _headline(name: str) -> str:
    return name if not name or name[-1] in ".!?" else f"{name}."


def render(
    item: Mapping[str, Any], *, campaign: Mapping[str, Any] | None, user: Mapping[str, Any] | None,
    links: TrackingLinks, attempt: int = 1, campaign_fields: Mapping[str, Any] | None = None,
) -> Message:
    """The message for a schedule item (needs notification_id, user_id, campaign_id, send_at).

    The campaign's ``template`` (or :data:`DEFAULT_TEMPLATE`, never the campaign's raw text, which is not a
    template) is filled from the user's profile and the campaign's fields, whitespace-normalised, plus
    ``greeting`` ("Hi Anna," or "Hi,") and ``campaign_headline`` (the name as a sentence). Every message
    carries its signed tracking link and its signed one-click unsubscribe link. ``campaign_fields``:
    :func:`campaign_context` of this ``campaign``, when the caller keeps it with its cached campaign.
    """
    nid = str(item["notification_id"])
    link, open_pixel, unsubscribe = links.for_message(nid)
    camp = dict(campaign or {})
    usr = dict(user or {})
    first_name = _tidy(usr.get("first_name") or "")
    name = _tidy(str(camp.get("name") or ""))
    context: dict[str, Any] = {
        **{k: _tidy(v) for k, v in usr.items() if isinstance(v, str | int | float)},
        **(campaign_context(campaign) if campaign_fields is None else campaign_fields),
        "first_name": first_name or "there",
        "greeting": f"Hi {first_name}," if first_name else "Hi,",
        "campaign_headline": _headline(name),
        "user_id": item["user_id"],
        "campaign_id": item["campaign_id"],
        "url": link,
        "link": link,
    }
    template = camp.get("template") or DEFAULT_TEMPLATE
    body = _BLANKS.sub(" ", fill(str(template), context)).strip()
    if link not in body:  # every message carries its tracking link, whatever the template says
        # cut the text to leave room for it: when the cap (MAX_RENDERED_CHARS) took the template's own {url},
        # appending to the capped text made a body over the cap ending in a cut, dead link before the whole one
        body = f"{body[: MAX_RENDERED_CHARS - len(link) - 1].rstrip()} {link}".strip()
    return Message(
        notification_id=nid, user_id=str(item["user_id"]), campaign_id=str(item["campaign_id"]),
        title=(name or str(item["campaign_id"]))[:200], body=body, link=link,
        open_pixel=open_pixel, send_at=str(item.get("send_at", "")), attempt=attempt, unsubscribe=unsubscribe,
    )


def preview(
    item: Mapping[str, Any], *, campaign: Mapping[str, Any], user: Mapping[str, Any], links: TrackingLinks,
    at: float | None = None,
) -> tuple[Message, str | None]:
    """What :func:`render` would send for ``item`` and whether the send-time check would stop it (its reason)
    if it went out at ``at`` (epoch seconds; quiet hours are checked only with it).

    Nothing is written or sent: the preview's notification id is not a real one, so its links lead nowhere.
    """
    from notify_core.preferences import suppression_reason

    return render(item, campaign=campaign, user=user, links=links), suppression_reason(user, campaign, at=at)
