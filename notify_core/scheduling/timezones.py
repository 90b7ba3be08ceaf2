"""A user's local day as UTC blocks, one table per distinct time zone (so conversion is vectorised).

The planner never converts per user. For each distinct IANA zone it walks that zone's local calendar
day in 15-minute UTC steps with :mod:`zoneinfo` (every real-world offset change falls on a quarter hour)
and cuts it into *blocks*: maximal runs inside one local clock hour. A normal day has 24 blocks; a
spring-forward day 23 (the skipped hour has no block, so nothing can be planned in it); a fall-back day
25 (the repeated hour appears twice, as two blocks with the same local hour). Users then gather their
zone's row. Quiet hours and affinity are per local hour, so they are exact per block.

Times are integer minutes relative to ``base``: 00:00 UTC of the day before the plan day, which keeps
every local day on Earth (UTC-12 .. UTC+14) inside ``[0, 4 * 1440)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np
import numpy.typing as npt

STEP_MINUTES = 15
MAX_BLOCKS = 26  # 25 on a fall-back day, plus room for a half-hour shift (Australia/Lord_Howe)
SPAN_MINUTES = 4 * 1440

I32 = npt.NDArray[np.int32]
MAX_UTC_OFFSET = timedelta(hours=14)  # the furthest east any zone is (Pacific/Kiritimati): its day begins first


NOT_USER_ZONES = frozenset({"Factory", "localtime", "posixrules"})
"""Names :func:`zoneinfo.available_timezones` lists that are no user's zone: tzdata's placeholder
(``Factory``), the host's own zone and the POSIX-rules template (links that mean something different on each
machine). Polars' zone database refuses the first two, so a profile naming one once failed every plan
chunk it was in."""


def _polars_accepts(name: str) -> bool:
    """Whether polars can convert to ``name``: the plan checks and the affinity model convert send and event
    times with polars (its own zone database, not the system's), so a zone it refuses would fail them."""
    import polars as pl

    try:
        pl.Series([datetime(2000, 1, 1, tzinfo=UTC)]).dt.convert_time_zone(name)
    except pl.exceptions.PolarsError:
        return False
    return True


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    """The one set of time zones a user may have: the API's preferences validator, ingestion's
    "unknown timezone" check and the planner (which plans anything else as UTC) all read it, so a zone one
    of them accepts can never fail another. Checked against polars once per process (some 600 zones)."""
    names = (frozenset(available_timezones()) | {"UTC"}) - NOT_USER_ZONES
    return frozenset(name for name in names if _zone_loads(name) and _polars_accepts(name))


def _zone_loads(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def is_known_zone(name: str | None) -> bool:
    return bool(name) and name in known_zones()


def zone_name_or_utc(name: str | None) -> str:
    """The zone name a user's ``timezone`` is planned in: itself when known, else ``"UTC"`` (as
    :func:`zone_or_utc`), for code that converts with polars and needs a name rather than a tzinfo."""
    return name if name is not None and is_known_zone(name) else "UTC"


@lru_cache(maxsize=1024)
def zone_or_utc(name: str | None) -> tzinfo:
    """The zone a user's ``timezone`` names, or UTC for a missing or unknown one: how the planner plans them
    (``planner.plan_day`` maps unknown zones to UTC and counts them), so a send-time check agrees with it."""
    return ZoneInfo(name) if name is not None and is_known_zone(name) else UTC


def base_of(plan_day: date) -> datetime:
    """Minute 0 of a plan: 00:00 UTC on the day before ``plan_day``."""
    return datetime.combine(plan_day - timedelta(days=1), time(0), tzinfo=UTC)


def first_local_midnight(plan_day: date) -> datetime:
    """The instant ``plan_day`` begins somewhere on Earth (00:00 at UTC+14): from then on some user is
    living it, so a plan of it must place nothing before now."""
    return datetime.combine(plan_day, time(0), tzinfo=UTC) - MAX_UTC_OFFSET


def to_minutes(ts: datetime, base: datetime) -> int:
    return int((ts - base).total_seconds() // 60)


@dataclass(frozen=True, slots=True)
class DayBlocks:
    """Per zone (rows, in ``zones`` order) the blocks of its local ``plan_day`` (columns, in time order).

    ``start``: first minute (relative to ``base``); ``length``: minutes in the block (0 = padding);
    ``hour``: the local clock hour (-1 = padding); ``day_start``/``day_end``: the local day's bounds.
    """

    zones: tuple[str, ...]
    base: datetime
    start: I32
    length: I32
    hour: npt.NDArray[np.int8]
    day_start: I32
    day_end: I32


def _zone_blocks(zone: str, plan_day: date, base: datetime) -> list[tuple[int, int, int]]:
    tz = ZoneInfo(zone)
    # A wall-clock midnight that does not exist (zones with DST at 00:00) resolves, with fold=0, to the
    # instant the day really starts; next local midnight likewise.
    first = datetime.combine(plan_day, time(0), tzinfo=tz).astimezone(UTC)
    last = datetime.combine(plan_day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    blocks: list[tuple[int, int, int]] = []  # (start minute, length, local hour)
    t = first
    step = timedelta(minutes=STEP_MINUTES)
    while t < last:
        local = t.astimezone(tz)
        minute = to_minutes(t, base)
        if blocks and local.minute != 0 and blocks[-1][2] == local.hour:
            start, length, hour = blocks[-1]
            blocks[-1] = (start, length + STEP_MINUTES, hour)
        else:
            blocks.append((minute, STEP_MINUTES, local.hour))
        t += step
    return blocks


@lru_cache(maxsize=4096)
def _zone_blocks_cached(zone: str, plan_day: date) -> tuple[tuple[int, int, int], ...]:
    return tuple(_zone_blocks(zone, plan_day, base_of(plan_day)))


def day_blocks(zones: list[str], plan_day: date) -> DayBlocks:
    """Block tables for the given (known) zones; see :class:`DayBlocks`."""
    n = len(zones)
    start = np.zeros((n, MAX_BLOCKS), dtype=np.int32)
    length = np.zeros((n, MAX_BLOCKS), dtype=np.int32)
    hour = np.full((n, MAX_BLOCKS), -1, dtype=np.int8)
    day_start = np.zeros(n, dtype=np.int32)
    day_end = np.zeros(n, dtype=np.int32)
    for row, zone in enumerate(zones):
        blocks = _zone_blocks_cached(zone, plan_day)
        if len(blocks) > MAX_BLOCKS:  # pragma: no cover - no zone has a day this broken
            raise ValueError(f"{zone} has {len(blocks)} hour blocks on {plan_day}")
        for col, (s, ln, h) in enumerate(blocks):
            start[row, col], length[row, col], hour[row, col] = s, ln, h
        day_start[row] = blocks[0][0]
        day_end[row] = blocks[-1][0] + blocks[-1][1]
        # padding blocks start after the day so "start >= x" filters never pick them by accident
        start[row, len(blocks):] = day_end[row] + 10 * 1440
    return DayBlocks(tuple(zones), base_of(plan_day), start, length, hour, day_start, day_end)
