"""A user's notification preferences: what the API reads and writes, and what the worker checks at send time.

Preferences live on the user's Store profile (``users``, sk ``profile``), in the attributes the planner
(``scheduling.service.users_from_store``), the recommender (``opted_out_categories``) and the ingestion of
landing files already use: ``channels``, ``opted_out_categories``, ``quiet_start_hour`` /
``quiet_end_hour``, ``daily_cap`` and ``timezone``, plus ``unsubscribed`` (a global opt-out). One owner:
:class:`Preferences` validates them (daily cap 0..5 is the platform's :data:`MAX_PER_DAY`, quiet hours
0..23 given together, a known IANA zone), :func:`put_preferences` writes them, and
:func:`suppression_reason` is the send-time check the delivery worker runs on every claimed
notification, so an opt-out stops pending sends at once (the worker reads the profile per send), not at
the next plan.

An opt-out through a message's unsubscribe link (:func:`opt_out_from_link`) is also an *event*: one
``user_events`` row of type ``opt_out`` per notification (the planner's fatigue reads it) and one
``opted_out`` count in the campaign's daily stats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from notify_core.bounds import MAX_CATEGORIES, Category, Channel
from notify_core.errors import ConditionFailedError, NotFoundError
from notify_core.scheduling.models import MAX_PER_DAY, OPT_OUT_TYPE
from notify_core.scheduling.timezones import is_known_zone, zone_or_utc
from notify_core.store import tables
from notify_core.store.port import Condition, Item, Store

OPT_OUT_EVENT = OPT_OUT_TYPE  # the user_events type an unsubscribe writes (fatigue reads it)
FIELDS = ("channels", "opted_out_categories", "quiet_start_hour", "quiet_end_hour", "daily_cap", "timezone",
          "unsubscribed")

# Why the worker did not send a claimed notification (the ``suppressed_reason`` of its schedule item).
Reason = Literal["erased", "unsubscribed", "no_channels", "category_opted_out", "daily_cap", "quiet_hours"]
ERASING = "erasing"  # set by the worker on the profile it reads for a user whose erasure is under way


class Preferences(BaseModel):
    """A user's preferences (the body of ``PUT /v1/users/{user_id}/preferences``, the reply of GET).

    ``daily_cap`` null: the platform maximum (5). Quiet hours are local hours, start inclusive, end
    exclusive, wrapping midnight when start > end; both null for none. ``channels`` empty: no channel
    wanted, nothing is sent. ``unsubscribed``: opted out of everything.
    """

    model_config = ConfigDict(extra="forbid")

    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["push"]), max_length=5)
    opted_out_categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    quiet_start_hour: int | None = Field(default=None, ge=0, le=23)
    quiet_end_hour: int | None = Field(default=None, ge=0, le=23)
    daily_cap: int | None = Field(default=None, ge=0, le=MAX_PER_DAY)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    unsubscribed: bool = False

    @field_validator("channels", "opted_out_categories")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not is_known_zone(value):
            raise ValueError(f"unknown time zone {value[:64]!r} (an IANA name such as Europe/London)")
        return value

    @model_validator(mode="after")
    def _quiet_pair(self) -> Preferences:
        if (self.quiet_start_hour is None) != (self.quiet_end_hour is None):
            raise ValueError("quiet_start_hour and quiet_end_hour are given together (or both null)")
        return self

    @classmethod
    def of_profile(cls, profile: Item) -> Preferences:
        """The preferences a stored profile holds; values a landing file left invalid fall back to defaults
        (a read must not fail on data the API would refuse)."""
        raw: dict[str, Any] = {k: profile.get(k) for k in FIELDS if profile.get(k) is not None}
        for name in ("channels", "opted_out_categories"):
            value = raw.get(name)
            if isinstance(value, list | tuple):
                raw[name] = list(value)
        try:
            return cls.model_validate(raw)
        except ValueError:
            good: dict[str, Any] = {}
            for name, value in raw.items():
                try:
                    cls.model_validate({**good, name: value})
                    good[name] = value
                except ValueError:
                    continue
            return cls.model_validate(good)


def _profile(store: Store, user_id: str) -> Item:
    profile = store.table(tables.USERS).get(user_id, tables.PROFILE_SK, consistent=True)
    if profile is None:
        raise NotFoundError(f"unknown user {user_id[:128]}")
    return profile


def get_preferences(store: Store, user_id: str) -> Preferences:
    """The user's preferences; :class:`NotFoundError` for a user without a profile."""
    return Preferences.of_profile(_profile(store, user_id))


@dataclass(frozen=True, slots=True)
class Change:
    before: Preferences
    after: Preferences


def put_preferences(store: Store, user_id: str, prefs: Preferences, *, now: datetime) -> Change:
    """Replace the user's preferences (other profile attributes stay); the profile must exist.

    Conditional on the profile still being there, so a PUT racing a user deletion cannot re-create a
    profile (:class:`NotFoundError` then).
    """
    before = get_preferences(store, user_id)
    values = prefs.model_dump(mode="json")
    values["preferences_updated_at"] = now.astimezone(UTC).isoformat(timespec="seconds")
    try:
        store.table(tables.USERS).update(user_id, tables.PROFILE_SK, set=values,
                                         condition=Condition.matches(user_id=user_id))
    except ConditionFailedError:
        raise NotFoundError(f"unknown user {user_id[:128]}") from None
    return Change(before=before, after=prefs)


def _hour_of_day(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23 else None


def in_quiet_hours(user: Mapping[str, Any], at: float) -> bool:
    """Whether the instant ``at`` (epoch seconds) falls in the user's quiet hours, on their own clock.

    The rule :class:`Preferences` documents: local hours, start inclusive, end exclusive, wrapping midnight
    when start > end, equal or missing hours meaning none; an unknown zone is UTC, as the planner takes it.
    The planner applies the same rule per block (``scheduling.planner._quiet_mask``); a test checks the two
    agree on every (hour, start, end).
    """
    start, end = _hour_of_day(user.get("quiet_start_hour")), _hour_of_day(user.get("quiet_end_hour"))
    if start is None or end is None or start == end:
        return False
    zone = user.get("timezone")
    hour = datetime.fromtimestamp(at, zone_or_utc(zone if isinstance(zone, str) else None)).hour
    return start <= hour < end if start < end else (hour >= start or hour < end)


def suppression_reason(user: Mapping[str, Any] | None, campaign: Mapping[str, Any] | None, *,
                       day_token: int | None = None, at: float | None = None) -> Reason | None:
    """Why a notification of ``campaign`` must not go to ``user`` now, or None to send it.

    Runs per send in the worker, on the profile as it is at that moment. A user without a profile, or
    without preference attributes, is sent to (the planner already decided). ``day_token``: the number of
    the day's send token the notification holds (0 for the day's first send, :mod:`notify_core.delivery.day_cap`):
    at or over the user's own ``daily_cap`` it is not sent, however many plans raced or however late the
    user lowered the cap. ``at``: when it would go out (epoch seconds); inside the user's quiet hours as
    they are now it is not sent: the plan kept out of the quiet hours the user had when it was made, but
    quiet hours set (or a time zone moved) since, and a send pushed late by an outage or a retry, would
    otherwise wake them. A user being erased (:class:`notify_core.erasure_queue.ErasingUsers`) is never sent to.
    """
    if not user:
        return None
    if user.get(ERASING) is True:  # the erasure queue holds them: the profile may already be gone
        return "erased"
    cap = user.get("daily_cap")
    if day_token is not None and day_token >= 0 and isinstance(cap, int | float) and day_token >= cap:
        return "daily_cap"
    if user.get("unsubscribed") is True:
        return "unsubscribed"
    channels = user.get("channels")
    if isinstance(channels, list | tuple) and len(channels) == 0:
        return "no_channels"
    category = (campaign or {}).get("category")
    opted = user.get("opted_out_categories")
    if category and isinstance(opted, list | tuple) and str(category) in {str(c) for c in opted}:
        return "category_opted_out"
    if at is not None and in_quiet_hours(user, at):
        return "quiet_hours"
    return None


@dataclass(frozen=True, slots=True)
class OptOut:
    user_id: str
    campaign_id: str
    notification_id: str
    scope: Literal["category", "all"]
    category: str | None
    first: bool  # the first opt-out through this notification (the event and the count happened now)
    before: Preferences
    after: Preferences


def opt_out_from_link(
    store: Store, *, user_id: str, campaign_id: str, notification_id: str, day: str, now: datetime,
    scope: Literal["category", "all"] = "category",
) -> OptOut:
    """The one-click unsubscribe of a message: opt the user out of the campaign's category (or of everything:
    ``scope="all"``, or a campaign without a category), record the ``opt_out`` event and count it once.

    Idempotent: a second POST of the same link changes nothing and counts nothing (a marker in
    ``notification_interactions`` with ``Condition.absent()``, like first opens and clicks).
    """
    from notify_core.delivery.feedback import add_campaign_counts
    from notify_core.delivery.markers import marker_ttl

    before = get_preferences(store, user_id)
    campaign = store.table(tables.CAMPAIGNS).get(campaign_id, tables.CAMPAIGN_SK) or {}
    category = str(campaign.get("category") or "") or None
    if scope == "category" and category is not None:
        after = before.model_copy(update={"opted_out_categories": list(dict.fromkeys(
            [*before.opted_out_categories, category]))})
    else:
        scope, after = "all", before.model_copy(update={"unsubscribed": True})
    if after != before:
        put_preferences(store, user_id, after, now=now)
    ts = now.astimezone(UTC).isoformat(timespec="milliseconds")
    interactions = store.table(tables.NOTIFICATION_INTERACTIONS)
    marker: Item | None = {"pk": notification_id, "sk": OPT_OUT_EVENT, "campaign_id": campaign_id, "ts": ts,
                           "scope": scope, "counted": False, "ttl": marker_ttl(now)}
    try:
        interactions.put(dict(marker or {}), condition=Condition.absent())
        first = True
    except ConditionFailedError:
        first = False
        marker = interactions.get(notification_id, OPT_OUT_EVENT, consistent=True)
    if marker is not None and not marker.get("counted"):
        # The first opt-out, or one a crash interrupted: the event's key comes from the marker's time, so
        # redoing it rewrites the same row; the count is taken under the marker's flag, so it happens once.
        at = str(marker["ts"])
        event_id = "ev_" + hashlib.sha256(f"{OPT_OUT_EVENT}\x1f{notification_id}".encode()).hexdigest()[:32]
        store.table(tables.USER_EVENTS).batch_put([{
            "pk": user_id, "sk": f"{at[:19]}#{event_id}", "event_id": event_id, "type": OPT_OUT_EVENT,
            "user_id": user_id, "ts": at, "notification_id": notification_id, "campaign_id": campaign_id,
            "category": category, "scope": marker.get("scope", scope)}])
        try:
            interactions.update(notification_id, OPT_OUT_EVENT, set={"counted": True},
                                condition=Condition.matches(counted=False))
        except ConditionFailedError:
            pass  # a concurrent click of the same link counted it
        else:
            try:
                add_campaign_counts(store, {(campaign_id, day): 1}, field="opted_out")
            except BaseException:
                # not counted: clear the flag, so the retried POST counts it (it stayed set, and was lost)
                interactions.update(notification_id, OPT_OUT_EVENT, set={"counted": False})
                raise
    return OptOut(user_id=user_id, campaign_id=campaign_id, notification_id=notification_id, scope=scope,
                  category=category, first=first, before=before, after=after)
