"""Plans in the Store: what is due in a minute is one query per shard; re-planning is idempotent.

Two tables (key shapes in :mod:`notify_core.store.tables`):

* ``schedules`` pk ``"<due minute UTC>#<shard>"``, sk ``"<user_id>#<notification_id>"``: the delivery
  worker queries the N shard partitions of the current minute and claims each item with a conditional
  update ``status: pending -> claimed``. A hot minute spreads over N partitions (N = ``shards``).
* ``plans`` pk ``user_id``, sk ``"<plan_day>#<notification_id>"``: a user's plan, for re-planning,
  cancellation and the history (cap, cooldowns, fatigue) of the next plan.

Both items carry notification_id, user_id, campaign_id, plan_day, slot, send_at (ISO UTC), due_minute,
shard, expected_value, status and a ``ttl`` a few days after send_at.

Re-planning a user's day (:func:`write_plans`) compares the new plan with the stored one, by notification
id, and never touches a claimed or sent notification:

* new id -> written (plans first, then schedules: a crash in between leaves a plan item without its
  schedule item, which the next run re-creates; never a schedule item the plan does not know);
* same id, same minute and values -> nothing written (so a second run of the same inputs writes 0);
* same id, another minute (capacity moved it) -> the old schedule item is cancelled with
  ``Condition.matches(status="pending")`` and the new one written; if the old one was claimed meanwhile,
  the move is abandoned (it is being sent);
* an old pending id the new plan does not have -> cancelled, conditionally, in schedules then plans;
* an old cancelled id the new plan has again -> revived (it was never sent).

When such a conditional write of the old schedule item fails, the item is read again: absent (a crash
lost it) or cancelled (a run killed inside a move or a cancel got that far) is still the planner's, so
the change carries on (plans, then a schedule item put only over an absent, pending or cancelled one);
only a claimed or later item (the delivery worker's) is a conflict and left alone. Likewise an unchanged
plan item whose schedule item is cancelled gets it back, as one whose schedule item is absent does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.errors import ConditionFailedError
from notify_core.lifecycle import (
    CANCELLED,
    CLAIMED,
    DELIVERED_STATES,
    PENDING,
    PLANNER_OWNED,
    RETRY_SCHEDULED,
    SENT,
)
from notify_core.scheduling.ids import DEFAULT_SHARDS, user_hashes
from notify_core.scheduling.models import HISTORY, HISTORY_DAYS, INTERACTIONS
from notify_core.store import tables
from notify_core.store.port import Condition, Item, KeyRange, Store

TTL_DAYS = 3  # pending plan and schedule items; a sent plan item lives models.SENT_PLAN_TTL_DAYS (history)
ISO = "%Y-%m-%dT%H:%M:%SZ"
_COMPARED = ("campaign_id", "slot", "send_at", "expected_value", "shard")


@dataclass(frozen=True, slots=True)
class WriteSummary:
    users: int = 0
    inserted: int = 0
    unchanged: int = 0
    updated: int = 0  # same id and minute, new values (e.g. expected value)
    moved: int = 0  # same id, another minute
    revived: int = 0
    cancelled: int = 0
    kept_delivered: int = 0  # claimed/sent items left alone
    repaired: int = 0  # schedule items re-created for plan items that had lost theirs
    conflicts: int = 0  # conditional writes lost to the delivery worker

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.moved + self.revived + self.cancelled + self.repaired

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "written": self.written}


def round6(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``round(v, 6)`` of every value, exactly as Python rounds (so a stored expected value is the same
    whichever path wrote it): numpy's multiply-and-round, with the values whose scaled fraction is near
    a half (or too large for the product to be exact) rounded by Python instead."""
    scaled = values * 1e6
    out: npt.NDArray[np.float64] = np.round(scaled) / 1e6
    near = np.flatnonzero((np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3) | (np.abs(values) >= 1e9))
    if near.size:
        out[near] = [round(float(v), 6) for v in values[near]]
    return out


def plan_item_frame(plan: pl.DataFrame, *, shards: int = DEFAULT_SHARDS) -> pl.DataFrame:
    """The ``plans`` items of a plan frame (models.PLAN), one row each, columns in item order: the one
    definition of their shape (:func:`plan_items` is its rows; :func:`schedule_frame` derives from it)."""
    users = plan["user_id"].unique()
    shard = pl.DataFrame({"user_id": users, "shard": (user_hashes(users.to_list()) % np.uint64(shards))
                          .astype(np.int64)}, schema={"user_id": pl.String, "shard": pl.Int64})
    ev = round6(plan["expected_value"].cast(pl.Float64).to_numpy())
    return plan.with_columns(pl.Series("_ev", ev, dtype=pl.Float64)).join(
        shard, on="user_id", how="left", maintain_order="left").select(
        pl.col("user_id").alias("pk"),
        pl.format("{}#{}", "plan_day", "notification_id").alias("sk"),
        "notification_id", "user_id", "campaign_id", "plan_day",
        pl.col("slot").cast(pl.Int64),
        pl.col("send_at").dt.strftime(ISO).alias("send_at"),
        pl.col("send_at").dt.strftime("%Y-%m-%dT%H:%M").alias("due_minute"),
        "shard",
        pl.col("_ev").alias("expected_value"),
        pl.lit(PENDING, dtype=pl.String).alias("status"),
        (pl.col("send_at").dt.epoch("s") + TTL_DAYS * 86400).cast(pl.Int64).alias("ttl"),
    )


def schedule_frame(items: pl.DataFrame) -> pl.DataFrame:
    """The ``schedules`` rows of :func:`plan_item_frame` rows (the keys :func:`schedule_item` gives)."""
    return items.with_columns(
        pl.format("{}#{}", "due_minute", pl.col("shard").cast(pl.String).str.zfill(2)).alias("pk"),
        pl.format("{}#{}", "user_id", "notification_id").alias("sk"))


def plan_items(plan: pl.DataFrame, *, shards: int = DEFAULT_SHARDS) -> list[Item]:
    """The ``plans`` items of a plan frame (models.PLAN); schedule items derive from them."""
    if plan.is_empty():
        return []
    return plan_item_frame(plan, shards=shards).to_dicts()


def schedule_item(plan_item: Item) -> Item:
    return {**plan_item, "pk": tables.schedule_pk(plan_item["due_minute"], int(plan_item["shard"])),
            "sk": tables.schedule_sk(plan_item["user_id"], plan_item["notification_id"])}


def _schedule_key(item: Item) -> tuple[str, str]:
    return (tables.schedule_pk(item["due_minute"], int(item["shard"])),
            tables.schedule_sk(item["user_id"], item["notification_id"]))


def day_items(store: Store, user_ids: Sequence[str], plan_day: str) -> dict[str, list[Item]]:
    """Each user's stored plan items for ``plan_day`` (Table.query_many: many partitions per statement)."""
    return store.table(tables.PLANS).query_many(user_ids, key_range=KeyRange(prefix=f"{plan_day}#"), consistent=True)


def write_plans(
    store: Store, plan: pl.DataFrame, *, user_ids: Sequence[str], plan_day: str, shards: int = DEFAULT_SHARDS,
    existing: dict[str, list[Item]] | None = None, items: pl.DataFrame | None = None,
) -> WriteSummary:
    """Make the Store hold ``plan`` for ``user_ids``' ``plan_day`` (see the module docstring).

    ``user_ids`` are every user that was planned, including those whose new plan is empty (their
    pending notifications are cancelled). ``existing`` (from :func:`day_items` / :func:`load_state`)
    saves the per-user queries when the caller already made them. ``items``: ``plan_item_frame(plan,
    shards=shards)`` when the caller made it (the pipelined plan makes it on the planning thread, so the
    writer, the run's critical path, does not); ``plan`` is then only read when ``items`` is None (the
    writer process is sent an empty plan beside the items).
    """
    plans = store.table(tables.PLANS)
    schedules = store.table(tables.SCHEDULES)
    old_by_user = existing if existing is not None else day_items(store, user_ids, plan_day)
    # Users with nothing stored for the day (a fresh day: all of them) only get new items, written as
    # frames in bulk (no dict per item); the others go through the per-item comparison below.
    compared = [u for u in user_ids if old_by_user.get(u)]
    if items is None and not plan.is_empty():
        items = plan_item_frame(plan, shards=shards)
    frame = (items.filter(pl.col("user_id").is_in(pl.Series(user_ids, dtype=pl.String)))
             if items is not None and not items.is_empty() else pl.DataFrame())
    bulk = frame
    new_by_user: dict[str, list[Item]] = {}
    if compared and not frame.is_empty():
        mine = pl.col("user_id").is_in(pl.Series(compared, dtype=pl.String))
        bulk = frame.filter(~mine)
        for item in frame.filter(mine).to_dicts():
            new_by_user.setdefault(item["user_id"], []).append(item)

    counts = dict.fromkeys(("inserted", "unchanged", "updated", "moved", "revived", "cancelled", "kept_delivered",
                            "repaired", "conflicts"), 0)
    fresh: list[Item] = []
    verify: list[Item] = []
    planned: dict[tuple[str, str], int] = {}  # net change of each campaign's planned count (its daily stats)

    def plan_count(item: Item, n: int) -> None:
        key = (str(item.get("campaign_id") or ""), plan_day)
        planned[key] = planned.get(key, 0) + n

    def lost_to_worker(key: tuple[str, str]) -> tuple[bool, Item | None]:
        """After a conditional write of the schedule item at ``key`` failed: whether the delivery worker
        holds it (claimed or later), and what the key holds now. Absent (a crash between the plans and
        schedules writes) or cancelled (a run killed after a move's or a cancel's first write) is the
        planner's still: the caller carries on, so the next run finishes what a killed one began."""
        current = schedules.get(*key, consistent=True)
        return current is not None and current.get("status") != CANCELLED, current

    def put_schedule(item: Item, current: Item | None) -> None:
        """Write ``item``'s schedule item over ``current`` (what its key holds now, just read) only while
        the planner owns it (absent, pending or cancelled): a worker's claim is never overwritten."""
        if current is not None and current.get("status") not in PLANNER_OWNED:
            raise ConditionFailedError("the schedule item was claimed by delivery")
        schedules.put(schedule_item(item), condition=Condition.absent() if current is None
                      else Condition.matches(status=current.get("status")))

    def cancel(old: Item) -> None:
        try:
            schedules.update(*_schedule_key(old), set={"status": CANCELLED},
                             condition=Condition.matches(status=PENDING))
        except ConditionFailedError:  # claimed by delivery meanwhile, or already cancelled / gone
            if lost_to_worker(_schedule_key(old))[0]:
                counts["conflicts"] += 1
                return
        try:
            plans.update(old["pk"], old["sk"], set={"status": CANCELLED}, condition=Condition.matches(status=PENDING))
            counts["cancelled"] += 1
            plan_count(old, -1)
        except ConditionFailedError:
            counts["conflicts"] += 1

    if not bulk.is_empty() and bulk["notification_id"].n_unique() < bulk.height:  # ids are content hashes:
        bulk = bulk.unique(["user_id", "notification_id"], keep="last", maintain_order=True)  # a repeated row
    _count_ahead(store, planned, _increments(bulk, compared, old_by_user, new_by_user, plan_day=plan_day))

    for uid in compared:
        olds = {i["notification_id"]: i for i in old_by_user.get(uid, [])}
        news = {i["notification_id"]: i for i in new_by_user.get(uid, [])}
        for nid, old in olds.items():
            if old.get("status") in DELIVERED_STATES:
                counts["kept_delivered"] += 1
            elif old.get("status") == PENDING and nid not in news:
                cancel(old)
        for nid, new in news.items():
            if nid not in olds:
                fresh.append(new)
                continue
            old = olds[nid]
            status = old.get("status")
            if status in DELIVERED_STATES:
                continue
            same = all(old.get(k) == new.get(k) for k in _COMPARED)
            if status == PENDING and same:
                counts["unchanged"] += 1
                verify.append(new)
                continue
            try:
                if status == CANCELLED:
                    plans.update(old["pk"], old["sk"], set=_attrs(new),
                                 condition=Condition.matches(status=CANCELLED))
                    schedules.put(schedule_item(new))
                    counts["revived"] += 1
                    plan_count(new, 1)
                elif _schedule_key(old) == _schedule_key(new):
                    try:
                        schedules.update(*_schedule_key(new), set=_attrs(new),
                                         condition=Condition.matches(status=PENDING))
                    except ConditionFailedError:
                        claimed, current = lost_to_worker(_schedule_key(new))
                        if claimed:
                            raise
                        plans.update(old["pk"], old["sk"], set=_attrs(new), condition=Condition.matches(status=PENDING))
                        put_schedule(new, current)
                    else:
                        plans.update(old["pk"], old["sk"], set=_attrs(new), condition=Condition.matches(status=PENDING))
                    counts["updated"] += 1
                else:
                    try:
                        schedules.update(*_schedule_key(old), set={"status": CANCELLED},
                                         condition=Condition.matches(status=PENDING))
                    except ConditionFailedError:
                        if lost_to_worker(_schedule_key(old))[0]:
                            raise
                        plans.update(old["pk"], old["sk"], set=_attrs(new), condition=Condition.matches(status=PENDING))
                        put_schedule(new, schedules.get(*_schedule_key(new), consistent=True))
                    else:
                        plans.update(old["pk"], old["sk"], set=_attrs(new), condition=Condition.matches(status=PENDING))
                        schedules.put(schedule_item(new))
                    counts["moved"] += 1
            except ConditionFailedError:
                counts["conflicts"] += 1

    # Absent when we read the users' plans: nothing can have claimed them, a blind batch write is safe.
    # All plans items before any schedules item (see the module docstring).
    if not bulk.is_empty():
        counts["inserted"] += plans.batch_put_frame(bulk)
    if fresh:
        counts["inserted"] += plans.batch_put(fresh)
    if not bulk.is_empty():
        schedules.batch_put_frame(schedule_frame(bulk))
        for cid, n in bulk.group_by("campaign_id", maintain_order=True).len().iter_rows():
            plan_count({"campaign_id": cid}, n)
    if fresh:
        schedules.batch_put(schedule_item(i) for i in fresh)
        for item in fresh:
            plan_count(item, 1)
    if verify:  # plan items whose schedule item a crash may have lost: re-create only the missing ones
        got = schedules.batch_get([_schedule_key(i) for i in verify], consistent=True)
        found = {(i["pk"], i["sk"]) for i in got}
        missing = [schedule_item(i) for i in verify if _schedule_key(i) not in found]
        if missing:
            counts["repaired"] += schedules.batch_put(missing)
        # A pending plan item whose schedule item is cancelled: a run killed inside a cancel or a move (or
        # inside their repair above) left it so; a clean run would have it pending. Only the planner cancels.
        stale = {(i["pk"], i["sk"]) for i in got if i.get("status") == CANCELLED}
        for item in [i for i in verify if _schedule_key(i) in stale] if stale else []:
            try:
                schedules.put(schedule_item(item), condition=Condition.matches(status=CANCELLED))
                counts["repaired"] += 1
            except ConditionFailedError:
                counts["conflicts"] += 1
    _settle_counts(store, planned)
    return WriteSummary(users=len(user_ids), **counts)


# ``planned`` (each campaign's notifications planned for a day and not cancelled: what a Lambda batch reads as
# the budget's use, ``service.ledger_of_planned``) is counted around the rows so that a run killed anywhere
# leaves it over, never short: over, a budget is under-used; short, the next batch passes it. The increments
# a write will make (new and revived notifications) are added before any row is written, and what the write
# really did (less a conflict's increment, and the cancellations) is settled after it. Counted after the rows,
# as before, a run killed between the two lost them for good: a re-run finds the rows written and counts
# nothing for them (a whole-day plan killed after its first chunk: `planned` 8 for 10 live).

def _increments(bulk: pl.DataFrame, compared: Sequence[str], old_by_user: dict[str, list[Item]],
                new_by_user: dict[str, list[Item]], *, plan_day: str) -> dict[tuple[str, str], int]:
    """What :func:`write_plans` will add to ``planned`` if no write conflicts: every bulk row, and for the
    compared users each new id and each cancelled one planned again."""
    ahead: dict[tuple[str, str], int] = {}
    if not bulk.is_empty():
        for cid, n in bulk.group_by("campaign_id", maintain_order=True).len().iter_rows():
            ahead[(str(cid or ""), plan_day)] = int(n)
    for uid in compared:
        olds = {i["notification_id"]: i.get("status") for i in old_by_user.get(uid, [])}
        for new in new_by_user.get(uid, []):
            if new["notification_id"] not in olds or olds[new["notification_id"]] == CANCELLED:
                key = (str(new.get("campaign_id") or ""), plan_day)
                ahead[key] = ahead.get(key, 0) + 1
    return ahead


def _count_ahead(store: Store, planned: dict[tuple[str, str], int], ahead: dict[tuple[str, str], int]) -> None:
    """Add ``ahead`` to the ``planned`` counters before the rows, and take it out of what remains to settle
    (``planned``, which the write then counts as it goes)."""
    if not ahead:
        return
    from notify_core.delivery.feedback import add_campaign_counts

    add_campaign_counts(store, ahead, field="planned")
    for key, n in ahead.items():
        planned[key] = planned.get(key, 0) - n


def _settle_counts(store: Store, planned: dict[tuple[str, str], int]) -> None:
    """After the rows: what the write did beyond what was counted ahead (a cancellation, an increment a
    conflict prevented: never more than counted ahead)."""
    rest = {key: n for key, n in planned.items() if n}
    if rest:
        from notify_core.delivery.feedback import add_campaign_counts

        add_campaign_counts(store, rest, field="planned")


def _attrs(item: Item) -> Item:
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}


def due(store: Store, minute: datetime, *, shards: int = DEFAULT_SHARDS, status: str | None = PENDING) -> list[Item]:
    """Schedule items due in the UTC minute of ``minute``: one query per shard partition."""
    table = store.table(tables.SCHEDULES)
    key = tables.due_minute(minute.astimezone(UTC))
    items = [i for s in range(shards) for i in table.query(tables.schedule_pk(key, s), consistent=True)]
    return items if status is None else [i for i in items if i.get("status") == status]


def parse_utc(ts: str) -> datetime:
    """A stored ISO time ("...Z" or an offset) as an aware datetime."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class UserState:
    """What the Store knows that the planner needs, for a batch of users."""

    history: pl.DataFrame  # models.HISTORY: claimed/sent notifications of the lookback window
    interactions: pl.DataFrame  # models.INTERACTIONS (+ notification_id)
    # The plan day's stored items of the users that have any (a user with none is absent), for
    # write_plans(existing=...).
    day_items: dict[str, list[Item]]
    # models.HISTORY: the neighbouring plan days' pending notifications still ahead (see load_state)
    scheduled: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=HISTORY))


# How far past ``now`` a pending plan item's send time may lie and still be held by a delivery worker:
# workers claim an item once it is due by their own clock, so this only covers clocks that disagree.
HELD_MARGIN = timedelta(minutes=10)


def _held_by_delivery(store: Store, stored: dict[str, list[Item]], *, now: datetime) -> None:
    """Give the pending plan items the delivery worker holds the status the planner must see (in place).

    The worker claims and finishes a notification on its *schedule* item; the ``plans`` item says ``sent``
    only once the worker's derived rows are flushed (a delivered outcome; a retry writes none). So while a
    notification is in flight, waiting for a retry, or held by a worker killed before its flush, its plans
    item still says ``pending``, and a re-plan then did not count it as sent today: it planned the user's
    full cap again and the worker delivered the held one as well (6 in a day). Here such an item reads as
    ``claimed`` (``sent`` if its schedule item says so): counted against the cap, gaps and cooldowns
    (:func:`load_state` puts a claimed one with the scheduled ones: no send for fatigue) and left alone by
    :func:`write_plans`, as a claimed plan item is.

    Only pending items due by ``now`` (plus :data:`HELD_MARGIN`) and at most a day old are looked up, one
    consistent batch read: a later item cannot have been claimed yet, and an older one no longer weighs
    on the day being planned. In steady state these are the day's few undelivered ones (dead letters,
    suppressions) and those in flight."""
    horizon, oldest = now + HELD_MARGIN, now - timedelta(days=1)
    suspects = [item for items in stored.values() for item in items
                if item.get("status") == PENDING and item.get("send_at") and item.get("due_minute")
                and oldest <= parse_utc(str(item["send_at"])) <= horizon]
    if not suspects:
        return
    found = store.table(tables.SCHEDULES).batch_get([_schedule_key(i) for i in suspects], consistent=True)
    held = {(i["pk"], i["sk"]): i.get("status") for i in found
            if i.get("status") in (CLAIMED, RETRY_SCHEDULED, SENT)}
    for item in suspects:
        status = held.get(_schedule_key(item))
        if status is not None:
            item["status"] = SENT if status == SENT else CLAIMED


def load_state(
    store: Store, user_ids: Sequence[str], *, plan_day: date, lookback_days: int = HISTORY_DAYS,
    interaction_days: int = 90,
    with_interactions: bool = True, now: datetime | None = None,
) -> UserState:
    """History and interactions of ``user_ids`` from ``plans`` and ``user_events`` (partition queries only).

    A notification counts as interacted with when the clickstream holds a notification_open/click with
    its id (or the item carries ``interacted: true``, for a delivery path that records it).

    ``scheduled``: the pending notifications of the neighbouring plan days (the day before, whose evening
    may not be sent yet, and the day after, when it was planned first) not yet due by ``now``. They are
    not sends, so fatigue never counts them as ignored, but the gap and the cooldown must hold against
    them: tomorrow is planned before tonight is sent, and a re-plan of today can follow tomorrow's plan.

    ``now`` (a plan made during the day): pending plan items already due are checked against their
    schedule items, and those the delivery worker holds count as claimed (:func:`_held_by_delivery`). A
    claimed one is in ``scheduled``, not ``history``: it holds the day's cap, gaps and cooldowns, but it is
    no send yet (in flight, or waiting for a retry that may end in a dead letter), and fatigue counted it as
    one the user ignored (a channel outage lowered the caps of a re-plan for notifications never received).
    """
    day = plan_day.isoformat()
    first = (plan_day - timedelta(days=lookback_days)).isoformat()
    plans = store.table(tables.PLANS)
    events = store.table(tables.USER_EVENTS)
    since = datetime.combine(plan_day - timedelta(days=interaction_days), datetime.min.time(), tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    inter: list[dict[str, Any]] = []
    today: dict[str, list[Item]] = {}
    after = (plan_day + timedelta(days=1)).isoformat()
    stored = plans.query_many(user_ids, key_range=KeyRange(start=first, end=f"{after}#\uffff"), consistent=True)
    if now is not None:
        _held_by_delivery(store, stored, now=now)
    clicks = events.query_many(user_ids, key_range=KeyRange(start=tables.time_sk(since))) if with_interactions else {}
    # Only the users the Store holds something for are visited (query_many answers every pk, in order):
    # a chunk of new users costs no Python per user here (a fresh day's 500k: ~1.3 s of loop before).
    opened: dict[str, set[str]] = {}
    for uid, evs in clicks.items():
        for ev in evs:
            if ev.get("type") and ev.get("ts"):
                inter.append({"user_id": uid, "ts": parse_utc(str(ev["ts"])), "type": ev["type"],
                              "notification_id": ev.get("notification_id")})
                if ev.get("notification_id"):
                    opened.setdefault(uid, set()).add(str(ev["notification_id"]))
    neighbours = {(plan_day - timedelta(days=1)).isoformat(), after}
    pending_from = now.astimezone(UTC) if now is not None else None
    ahead: list[dict[str, Any]] = []
    for uid, items in stored.items():
        if not items:
            continue
        mine = [i for i in items if i.get("plan_day") == day]
        if mine:
            today[uid] = mine
        seen = opened.get(uid, set())
        for item in items:
            if item.get("status") == CLAIMED:  # held by the worker, not delivered (yet): not a send to fatigue
                ahead.append({"user_id": uid, "campaign_id": item["campaign_id"],
                              "sent_at": parse_utc(str(item["send_at"])), "interacted": False})
            elif item.get("status") in DELIVERED_STATES:
                rows.append({"user_id": uid, "campaign_id": item["campaign_id"],
                             "sent_at": parse_utc(str(item.get("sent_at") or item["send_at"])),
                             "interacted": bool(item.get("interacted")) or item["notification_id"] in seen})
            elif item.get("status") == PENDING and item.get("plan_day") in neighbours:
                at = parse_utc(str(item["send_at"]))
                if pending_from is None or at >= pending_from:
                    ahead.append({"user_id": uid, "campaign_id": item["campaign_id"], "sent_at": at,
                                  "interacted": False})
    history = pl.DataFrame(rows, schema=HISTORY) if rows else pl.DataFrame(schema=HISTORY)
    scheduled = pl.DataFrame(ahead, schema=HISTORY) if ahead else pl.DataFrame(schema=HISTORY)
    schema = {**INTERACTIONS, "notification_id": pl.String}
    interactions = pl.DataFrame(inter, schema=schema) if inter else pl.DataFrame(schema=schema)
    return UserState(history=history, interactions=interactions, day_items=today, scheduled=scheduled)
