"""A campaign's daily statistics, as the analytics route reports them.

Read from the ``campaign_stats`` counters (pk campaign_id, sk UTC day) that each stage adds to as it
happens, so the route reads one partition and never scans deliveries:

| field | counter | added by |
|---|---|---|
| planned | ``planned`` | the planner's Store writes (new and revived notifications, minus cancelled ones) |
| delivered | ``sent`` | the delivery worker, per notification the channel accepted |
| failures | ``failed`` | the delivery worker, per dead letter |
| suppressed | ``suppressed`` | the delivery worker, per notification the user's preferences stopped at send time |
| opens / clicks | ``opened`` / ``clicked`` | the tracking links, first open / click per notification |
| opt_outs | ``opted_out`` | the unsubscribe link, once per notification |

``sent`` is what was handed to the channel for good (delivered + failures); ``ctr`` is clicks /
delivered (unique clicks, so at most 1). A day is the UTC day of the step, except opens and clicks,
which count on the UTC day of the delivery they answer (a notification delivered on Monday and clicked on
Tuesday counts its click on Monday, next to its delivery, so a day's CTR is that day's deliveries' CTR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from notify_core.errors import NotFoundError, ValidationError
from notify_core.store import tables
from notify_core.store.port import Item, KeyRange, Store

MAX_DAYS = 366
DEFAULT_DAYS = 30


@dataclass(frozen=True, slots=True)
class DayStats:
    day: str
    planned: int
    sent: int
    delivered: int
    opens: int
    clicks: int
    ctr: float
    open_rate: float
    opt_outs: int
    failures: int
    suppressed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _n(row: Item, name: str) -> int:
    return max(0, int(row.get(name) or 0))


def of_row(day: str, row: Item) -> DayStats:
    delivered, failed = _n(row, "sent"), _n(row, "failed")
    opens, clicks = _n(row, "opened"), _n(row, "clicked")
    return DayStats(day=day, planned=_n(row, "planned"), sent=delivered + failed, delivered=delivered, opens=opens,
                    clicks=clicks, ctr=round(clicks / delivered, 6) if delivered else 0.0,
                    open_rate=round(opens / delivered, 6) if delivered else 0.0, opt_outs=_n(row, "opted_out"),
                    failures=failed, suppressed=_n(row, "suppressed"))


def daily_stats(store: Store, campaign_id: str, *, since: date | None, until: date | None, today: date,
                ) -> tuple[list[DayStats], DayStats]:
    """Per day in ``[since, until]`` (default: the 30 days to ``today``), oldest first, days without any
    activity left out; and the totals over the range (``day`` = "total"). 404 for an unknown campaign."""
    if store.table(tables.CAMPAIGNS).get(campaign_id, tables.CAMPAIGN_SK) is None:
        raise NotFoundError(f"unknown campaign {campaign_id[:128]}")
    until = until or today
    try:
        since = since or until - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # an until in the first days of year 1: no default window before it
        raise ValidationError(f"until {until.isoformat()} leaves no {DEFAULT_DAYS}-day window; pass since") from None
    if since > until:
        raise ValidationError("since is after until")
    if (until - since).days >= MAX_DAYS:
        raise ValidationError(f"at most {MAX_DAYS} days at once")
    rows = store.table(tables.CAMPAIGN_STATS).query(
        campaign_id, key_range=KeyRange(start=since.isoformat(), end=until.isoformat()))
    days = [of_row(str(r["sk"]), r) for r in rows]
    total: dict[str, Any] = {name: 0 for name in ("planned", "sent", "opened", "clicked", "opted_out", "failed",
                                                  "suppressed")}
    for r in rows:
        for name in total:
            total[name] += _n(r, name)
    return days, of_row("total", total)
