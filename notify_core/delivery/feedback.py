"""The closed loop: what deliveries, opens and clicks change for the next plan and the next embedding.

* **Campaign CTR** (``campaign_stats`` pk campaign_id, sk day): ``sent`` is added by the worker after
  each pass, ``opened``/``clicked`` by the tracking endpoints the *first* time a notification is opened or
  clicked (a marker in ``notification_interactions`` with ``Condition.absent()``, so reloads and replays
  count once: unique CTR). Counters use optimistic concurrency (``version``), since the Store has no
  atomic add.
* **Planner inputs**: the planner reads a user's history (``plans`` items with status sent and
  ``sent_at``, which the worker writes) and interactions (``user_events``, where the consumer writes the
  notification_open / notification_click events the tracking endpoints produce) through
  :func:`notify_core.scheduling.store.load_state`; :func:`planner_inputs` is that call, named for the
  delivery side. Affinity shifts toward the hours users click; fatigue (ignored notifications in a row)
  resets on an open or click.
* **Fatigue state** (``user_fatigue``): :func:`refresh_fatigue` stores each user's current streak of
  ignored notifications and the cap reduction / penalty the planner will apply, for dashboards and the
  recommender.
* **Embeddings hook**: :func:`interaction_inputs` turns clicks and opens into the ``Interactions`` and
  per-user digests :func:`notify_core.embeddings.pipeline.refresh_user_embeddings` accepts (the vector of
  the campaign interacted with, weighted by event type).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from notify_core.errors import (
    CeilingReachedError,
    CountsNotAddedError,
    NotifyError,
    UpdatesPartlyAppliedError,
)
from notify_core.store import tables
from notify_core.store.port import Condition, KeyRange, Store, Update

if TYPE_CHECKING:
    from notify_core.embeddings.combine import Interactions
    from notify_core.scheduling.store import UserState

# sent: delivered (accepted by the channel); failed: dead-lettered; suppressed: not sent, the user's preferences
# said no at send time; opted_out: unsubscribe links used; planned: the net notifications planned for the day;
# budget_spent: those of them delivered, the day of the row being their plan day, not their UTC delivery day
# (what the campaign's daily_budget has used: a re-plan of a day that has begun reads it).
Counter = Literal["sent", "opened", "clicked", "failed", "suppressed", "opted_out", "planned", "budget_spent"]
COUNT_ROUNDS = 30
"""Read-and-conditionally-write rounds :func:`add_campaign_counts` tries before it gives up loudly."""
INTERACTION_WEIGHTS: dict[str, float] = {"notification_click": 1.0, "click": 1.0, "campaign_view": 0.5,
                                         "notification_open": 0.25}


def add_campaign_counts(store: Store, counts: Mapping[tuple[str, str], int], *, field: Counter = "sent",
                        ceilings: Mapping[tuple[str, str], int] | None = None) -> None:
    """Add ``counts[(campaign_id, day)]`` to ``field`` of each ``campaign_stats`` row (optimistic retries).

    ``ceilings``: all or nothing, none of the rows named may go past its ceiling. Each row's check is made
    on the version its conditional write is made on, so of two writers racing for what is left under a
    ceiling one wins and the other gets :class:`CeilingReachedError` with nothing added (rows it had added
    in an earlier round are taken back): a reservation, what keeps concurrent plan batches inside a
    campaign's budget (:func:`notify_core.scheduling.service.plan_for_users`).

    A negative count (``planned``: a re-plan cancelled notifications) subtracts, never below 0.

    All the rows at once: one ``batch_get`` and one ``update_many`` per round, each row's write
    conditional on the ``version`` it was read at (absent for a new row), and the rows whose condition
    lost to a concurrent writer read and retried in the next round. A plan chunk touches ~1,000 campaigns:
    that was 1,000 read-modify-write transactions, now one SQLite transaction (DynamoDB still writes item by
    item). The rows and their bytes are those of the former get + conditional put per row (``update_many``
    sets every attribute of the row read).

    A round that lost waits a random moment (up to 1, 2, 4 ... 64 ms) before it reads again: writers that
    queue fairly for the Store (SQLite's write gate hands the lock straight on) otherwise fall into step,
    each reading before the other's write lands, and one of four threads adding to the same 200 rows needed
    27 rounds. Counts still conflicting after :data:`COUNT_ROUNDS` rounds, or a round the Store refuses,
    raise :class:`CountsNotAddedError` naming the counts not added (they used to be dropped without a word
    after 20), for the caller to keep. Exact on SQLite (a round is one transaction); DynamoDB writes a
    round item by item, and a round it refuses part-way names the rows it added
    (:class:`UpdatesPartlyAppliedError`), which are left out: naming them made the next flush add them
    again (``sent`` over-counted for good). Only a write whose answer never came (a timeout after the
    service applied it) can still be named and added twice."""
    table = store.table(tables.CAMPAIGN_STATS)
    todo = {(campaign_id, day): n for (campaign_id, day), n in counts.items() if n != 0 and campaign_id and day}
    wanted = dict(todo)
    for round_ in range(COUNT_ROUNDS):
        if not todo:
            return
        if round_:
            time.sleep(random.uniform(0, 0.001 * 2 ** min(round_ - 1, 6)))  # jitter, not a secret
        try:
            current = {(i["pk"], i["sk"]): i for i in table.batch_get(list(todo), consistent=True)}
            if ceilings:
                _check_ceilings(store, current, todo, wanted, field=field, ceilings=ceilings)
            updates = [_counted(current.get(key), key, n, field) for key, n in todo.items()]
            written = table.update_many(updates)
        except CeilingReachedError:
            raise
        except UpdatesPartlyAppliedError as exc:  # DynamoDB: the rows before the refused one were added
            added = {key for key, done in zip(todo, exc.done, strict=False) if done is not None}
            remaining = {key: n for key, n in todo.items() if key not in added}
            raise CountsNotAddedError(f"campaign_stats: {len(remaining)} {field} counters not added: {exc}",
                                      remaining=remaining) from exc
        except NotifyError as exc:  # SQLite: the round's one transaction added none of ``todo``
            raise CountsNotAddedError(f"campaign_stats: {len(todo)} {field} counters not added: {exc}",
                                      remaining=todo) from exc
        todo = {key: n for (key, n), done in zip(todo.items(), written, strict=True) if done is None}
    if todo:
        raise CountsNotAddedError(f"campaign_stats: {len(todo)} {field} counters still lost to concurrent writers "
                                  f"after {COUNT_ROUNDS} rounds, not added: {dict(list(todo.items())[:5])}",
                                  remaining=todo)


def _check_ceilings(store: Store, current: Mapping[tuple[str, str], Mapping[str, Any]],
                    todo: Mapping[tuple[str, str], int], wanted: Mapping[tuple[str, str], int], *, field: Counter,
                    ceilings: Mapping[tuple[str, str], int]) -> None:
    """Raise :class:`CeilingReachedError` when a row of ``todo`` would go past its ceiling, after taking back
    the rows of ``wanted`` added in earlier rounds (those not in ``todo`` any more)."""
    over = [key for key, n in todo.items() if n > 0 and key in ceilings
            and int((current.get(key) or {}).get(field) or 0) + n > ceilings[key]]
    if not over:
        return
    added = {key: -n for key, n in wanted.items() if key not in todo}
    if added:
        add_campaign_counts(store, added, field=field)
    raise CeilingReachedError(f"campaign_stats: {len(over)} {field} counters would pass their ceiling: "
                              f"{over[:5]}", over=over)


def _counted(current: Mapping[str, Any] | None, key: tuple[str, str], n: int, field: Counter) -> Update:
    """The conditional write that adds ``n`` to ``field`` of one ``campaign_stats`` row read as ``current``."""
    campaign_id, day = key
    row: dict[str, Any]
    if current is None:
        row = {"campaign_id": campaign_id, "day": day, "sent": 0, "opened": 0, "clicked": 0, "version": 1,
               field: max(0, n)}
        condition = Condition.absent()
    else:
        version = int(current.get("version", 0))
        row = {**current, field: max(0, int(current.get(field) or 0) + n), "version": version + 1}
        condition = Condition.matches(version=current.get("version", 0))
    sent = max(int(row.get("sent") or 0), 1)
    row["open_rate"] = round(int(row.get("opened") or 0) / sent, 6)
    row["ctr"] = round(int(row.get("clicked") or 0) / sent, 6)
    return Update(campaign_id, day, {k: v for k, v in row.items() if k not in ("pk", "sk")}, condition)


def campaign_stats(store: Store, campaign_id: str, *, since_day: str | None = None) -> list[dict[str, Any]]:
    """A campaign's daily rows (sent, opened, clicked, open_rate, ctr), oldest first."""
    key_range = KeyRange(start=since_day) if since_day else None
    return store.table(tables.CAMPAIGN_STATS).query(campaign_id, key_range=key_range)


def planner_inputs(store: Store, user_ids: Sequence[str], *, plan_day: date) -> UserState:
    """History (sent notifications, interacted or not) and interactions for the planner, from the Store."""
    from notify_core.scheduling.store import load_state

    return load_state(store, user_ids, plan_day=plan_day)


def refresh_fatigue(store: Store, user_ids: Sequence[str], *, now: datetime) -> pl.DataFrame:
    """Compute and store each user's fatigue state (``user_fatigue``); returns the frame written."""
    from notify_core.scheduling.fatigue import fatigue_of
    from notify_core.scheduling.models import FatigueOptions

    state = planner_inputs(store, user_ids, plan_day=now.astimezone(UTC).date() + timedelta(days=1))
    users = pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String})
    fat = fatigue_of(users, state.history, state.interactions, as_of=now, options=FatigueOptions())
    frame = users.with_columns(pl.Series("ignored_streak", fat.ignored), pl.Series("cap_reduction", fat.cap_reduction),
                               pl.Series("penalty", fat.penalty))
    stamp = now.astimezone(UTC).isoformat()
    store.table(tables.USER_FATIGUE).batch_put(
        {"pk": r["user_id"], "sk": tables.FATIGUE_SK, "user_id": r["user_id"],
         "ignored_streak": int(r["ignored_streak"]),
         "cap_reduction": int(r["cap_reduction"]), "penalty": round(float(r["penalty"]), 6), "updated_at": stamp}
        for r in frame.iter_rows(named=True))
    return frame


def interaction_inputs(
    store: Store, user_ids: Sequence[str], *, since: datetime | None = None, dim: int | None = None,
) -> tuple[Interactions, pl.DataFrame]:
    """Clicks/opens/views of campaigns as embedding inputs: (Interactions, digests).

    Each interaction with a campaign contributes that campaign's stored vector (``embeddings``
    ``campaign#<id>``) at the event's time with :data:`INTERACTION_WEIGHTS`; events whose campaign has no
    vector are skipped. ``digests`` (``user_id``, ``digest``) hash each user's contributing event ids, so
    ``refresh_user_embeddings`` re-embeds exactly the users whose interactions changed.
    """
    from notify_core.embeddings.combine import Interactions

    events_table = store.table(tables.USER_EVENTS)
    start = KeyRange(start=tables.time_sk(since)) if since is not None else None
    rows: list[dict[str, Any]] = []
    for uid in user_ids:
        for ev in events_table.query(uid, key_range=start):
            kind = str(ev.get("type") or "")
            if kind in INTERACTION_WEIGHTS and ev.get("campaign_id") and ev.get("ts"):
                rows.append({"user_id": uid, "ts": datetime.fromisoformat(str(ev["ts"]).replace("Z", "+00:00")),
                             "weight": INTERACTION_WEIGHTS[kind], "campaign_id": str(ev["campaign_id"]),
                             "event_id": str(ev.get("event_id") or ev["sk"])})
    campaign_ids = sorted({r["campaign_id"] for r in rows})
    vectors: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
    if campaign_ids:
        found = store.table(tables.EMBEDDINGS).batch_get([(f"campaign#{c}", tables.VECTOR_SK) for c in campaign_ids])
        for item in found:
            raw = item.get("vector")
            if isinstance(raw, bytes | bytearray):
                vectors[str(item["pk"]).split("#", 1)[1]] = np.frombuffer(raw, dtype=np.float32)
    kept = [r for r in rows if r["campaign_id"] in vectors]
    width = dim if dim is not None else (len(next(iter(vectors.values()))) if vectors else 0)
    events = pl.DataFrame(
        [{k: r[k] for k in ("user_id", "ts", "weight")} for r in kept],
        schema={"user_id": pl.String, "ts": pl.Datetime("us", "UTC"), "weight": pl.Float64})
    matrix = (np.vstack([vectors[r["campaign_id"]] for r in kept]).astype(np.float32) if kept
              else np.zeros((0, width), dtype=np.float32))
    by_user: dict[str, list[str]] = {}
    for r in kept:
        by_user.setdefault(r["user_id"], []).append(r["event_id"])
    digests = pl.DataFrame(
        [{"user_id": u, "digest": hashlib.blake2b("|".join(sorted(ids)).encode(), digest_size=12).hexdigest()}
         for u, ids in sorted(by_user.items())],
        schema={"user_id": pl.String, "digest": pl.String})
    return Interactions(events, matrix), digests
