"""Lambda ``campaign_insights``: a campaign's daily statistics and a preview of its message for a user.

* ``GET /v1/campaigns/{campaign_id}/stats?since=&until=`` (scope ``campaigns:read``): per UTC day planned,
  sent, delivered, opens, clicks, CTR, opt-outs, failures (and the send-time suppressions), plus totals
  (:mod:`notify_core.campaigns.stats`). Default range: the last 30 days; at most 366 days.
* ``POST /v1/campaigns/{campaign_id}/preview`` ``{"user_id": ...}`` (scope ``campaigns:read``): the message
  the worker would send that user, rendered with the real renderer and the user's profile, and whether
  their preferences would stop it. Nothing is sent or written (hence not in the audit trail), and the
  preview's links lead nowhere (its notification id is not a real one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge
from notify_core.campaigns.stats import DayStats, daily_stats
from notify_core.clock import SYSTEM_CLOCK, Clock, today, utcnow
from notify_core.delivery.render import preview
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks
from notify_core.errors import NotFoundError
from notify_core.security.keyring import KeyRing, ephemeral_keyring
from notify_core.store import tables
from notify_core.store.factory import seal_store
from notify_core.store.port import Store

CampaignId = Annotated[str, Path(min_length=1, max_length=128)]


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    clock: Clock
    public_base_url: str
    keys: KeyRing


def _build() -> _Deps:
    rt = runtime.get()
    # A throwaway key: preview links are never meant to verify (they name no real notification).
    return _Deps(rt.store(seal_store), rt.clock, rt.settings.public_base_url,
                 ephemeral_keyring(TRACKING_PURPOSE, now=utcnow(rt.clock)))


_deps = ColdStart(_build)


def use_store(store: Store | None, *, clock: Clock = SYSTEM_CLOCK,
              public_base_url: str = "http://localhost:8080") -> None:
    """Install the Store and clock these routes use (None: from settings on next use)."""
    _deps.use(None if store is None else _Deps(store, clock, public_base_url,
                                               ephemeral_keyring(TRACKING_PURPOSE, now=utcnow(clock))))


class StatsOut(BaseModel):
    campaign_id: str
    since: str | None
    until: str | None
    days: list[DayStats]  # the domain's dataclass: one list of the columns, in notify_core.campaigns.stats
    total: DayStats


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128)


class PreviewOut(BaseModel):
    campaign_id: str
    user_id: str
    title: str
    body: str
    link: str
    unsubscribe: str
    would_send: bool
    suppressed_reason: str | None


edge = Edge("campaign_insights")


@edge.route("GET", "/v1/campaigns/<campaign_id>/stats", summary="A campaign's statistics per day",
            response_model=StatsOut)
def stats(
    campaign_id: CampaignId,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
) -> StatsOut:
    deps = _deps.get()
    days, total = daily_stats(deps.store, campaign_id, since=since, until=until, today=today(deps.clock))
    return StatsOut(campaign_id=campaign_id, since=since.isoformat() if since else None,
                    until=until.isoformat() if until else None,
                    days=list(days), total=total)


@edge.route("POST", "/v1/campaigns/<campaign_id>/preview", summary="Render a campaign for a user, without sending",
            max_body=4096, response_model=PreviewOut)
def preview_route(campaign_id: CampaignId, request: PreviewIn) -> PreviewOut:
    deps = _deps.get()
    campaign = deps.store.table(tables.CAMPAIGNS).get(campaign_id, tables.CAMPAIGN_SK)
    if campaign is None:
        raise NotFoundError(f"unknown campaign {campaign_id[:128]}")
    user = deps.store.table(tables.USERS).get(request.user_id, tables.PROFILE_SK)
    if user is None:
        raise NotFoundError(f"unknown user {request.user_id[:128]}")
    now = utcnow(deps.clock)
    item = {"notification_id": f"preview-{campaign_id}", "user_id": request.user_id, "campaign_id": campaign_id,
            "send_at": now.isoformat()}
    links = TrackingLinks(deps.public_base_url, deps.keys)
    message, reason = preview(item, campaign=campaign, user=user, links=links, at=now.timestamp())
    return PreviewOut(campaign_id=campaign_id, user_id=request.user_id, title=message.title, body=message.body,
                      link=message.link, unsubscribe=message.unsubscribe, would_send=reason is None,
                      suppressed_reason=reason)


handler = edge.handler
